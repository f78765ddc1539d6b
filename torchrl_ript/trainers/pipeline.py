"""Stages shared by the benchmark pipelines: [pretrain ->] SFT -> evaluate -> RIPT.

The MetaWorld and LIBERO examples differ in their env, demos and contexts;
what they do with a policy is the same and lives here:

* :func:`load_or_train_policy`: SFT from scratch (or load a checkpoint);
  with ``start_from=`` a pretrained checkpoint it fine-tunes instead
  (:func:`finetune_sft`: QueST keeps its pretrained tokenizer and trains the
  prior; the regression policy trains its mean head and refits its scale
  head);
* :func:`load_or_pretrain`: the pretrain stage, multitask SFT on source tasks
  (:func:`train_sft`), saved as the checkpoint the target SFT starts from;
* :func:`attach_outcome_feed`: let an adaptive context sampler see every
  finished rollout of a collector;
* :func:`collection_summary`: informative-group rate and env steps per
  informative group of a RIPT run.

What depends on the kind of policy (build, actor, SFT recipe, sampling
options, checkpoint) is its :class:`~torchrl_ript.models.registry.PolicyKind`;
:func:`build_policy`, :func:`wrap_policy` and :func:`set_sampling` are
re-exported from :mod:`torchrl_ript.models.registry`.
"""
from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from torchrl_ript.config import RIPTConfig
from torchrl_ript.data.demos import DemoFile
from torchrl_ript.data.samplers import AdaptiveSampler, ContextOutcomeFeed, make_sampler
from torchrl_ript.models.checkpoint import load_policy, save_policy
from torchrl_ript.models.registry import (
    PolicyBundle,
    SFTOptions,
    build_policy,
    policy_kind,
    set_sampling,
    wrap_policy,
)
from torchrl_ript.trainers import sft
from torchrl_ript.trainers.stats import paired_success_test

__all__ = [
    "PolicyBundle",
    "build_policy",
    "wrap_policy",
    "set_sampling",
    "train_sft",
    "finetune_sft",
    "load_or_train_policy",
    "load_or_pretrain",
    "attach_outcome_feed",
    "collection_summary",
    "context_sampler",
    "paired_results",
    "sft_options",
    "ript_config",
    "print_result_line",
    "set_num_threads",
]


def train_sft(
    bundle: PolicyBundle,
    files: list[DemoFile],
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 3e-4,
    autoencoder_steps: int | None = None,
    scale_steps: int = 500,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, list[float]]:
    """Behaviour cloning from scratch with the kind's SFT recipe
    (:attr:`~torchrl_ript.models.registry.PolicyKind.sft`: QueST autoencoder
    then prior; regression mean then scale). Returns the per-step losses by stage."""
    batches = _demo_batches(bundle.network, files, batch_size, seed)
    options = SFTOptions(steps=steps, lr=lr, autoencoder_steps=autoencoder_steps, scale_steps=scale_steps,
                         progress=progress)
    history = policy_kind(bundle.kind).sft(bundle, batches, options)
    bundle.network.eval()
    return history


def finetune_sft(
    bundle: PolicyBundle,
    files: list[DemoFile],
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 3e-4,
    scale_steps: int = 500,
    seed: int = 0,
    progress: bool = True,
    **_unused,
) -> dict[str, list[float]]:
    """SFT of a *pretrained* policy on a target's few demos (the kind's
    :attr:`~torchrl_ript.models.registry.PolicyKind.finetune` recipe).

    QueST keeps its pretrained skill tokenizer (the autoencoder is frozen: the
    target's actions are written in the tokens it learned on the source tasks)
    and fine-tunes the prior and observation encoders. The regression policy
    fine-tunes its mean head and encoders, then refits its scale head by NLL
    on the target demos (the pretrained scale describes the source tasks).
    ``autoencoder_steps`` (and other :func:`train_sft` keywords) are ignored.
    """
    batches = _demo_batches(bundle.network, files, batch_size, seed)
    options = SFTOptions(steps=steps, lr=lr, scale_steps=scale_steps, progress=progress)
    history = policy_kind(bundle.kind).finetune_recipe()(bundle, batches, options)
    bundle.network.eval()
    return history


def _demo_batches(network: nn.Module, files: list[DemoFile], batch_size: int, seed: int):
    """Minibatches of the demos cut into the network's action chunks, after checking they fit it."""
    data = sft.chunk_demo_files(files, network.config.chunk_size)
    demo_dim, net_dim = data["action"].shape[-1], network.config.action_dim
    if demo_dim != net_dim:
        raise ValueError(
            f"the demos hold {demo_dim}-dim actions but the policy outputs {net_dim}: record demos "
            f"in this env's action space, or build the policy with action_dim={demo_dim}."
        )
    return sft.batch_iterator(data, batch_size, seed=seed)


def _load_checkpoint(path: str | Path, what: str, hint: str) -> nn.Module:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} checkpoint {path} does not exist: give an existing file, or {hint}.")
    return load_policy(path)


def load_or_train_policy(
    checkpoint: str | Path | None,
    *,
    build: dict,
    files_fn,
    sft_options: dict,
    save_to: Path,
    sampling: Mapping | None = None,
    start_from: str | Path | None = None,
    progress: bool = True,
) -> tuple[PolicyBundle, dict]:
    """Load ``checkpoint`` when given (skips SFT), else SFT and save.

    Without ``start_from`` SFT builds a fresh policy from ``build`` and
    trains it from scratch (:func:`train_sft`); with ``start_from`` (a
    pretrained :func:`save_policy` file, e.g. from :func:`load_or_pretrain`)
    it fine-tunes that policy (:func:`finetune_sft`). ``sampling`` (see
    :func:`set_sampling`) applies to the loaded or trained network. Returns
    the bundle and ``{"sft_s": seconds, "history": {...}}``.
    """
    sampling = dict(sampling or {})
    if checkpoint:
        network = _load_checkpoint(checkpoint, "policy", "leave policy.checkpoint empty to train one by SFT")
        network = set_sampling(network, **sampling)
        return wrap_policy(network), {"sft_s": 0.0, "history": {}, "loaded": str(checkpoint)}
    return _train_policy(build=build, files_fn=files_fn, sft_options=sft_options, save_to=Path(save_to),
                         sampling=sampling, start_from=start_from, progress=progress)


def _train_policy(*, build, files_fn, sft_options, save_to: Path, sampling: dict, start_from, progress):
    if start_from:
        network = _load_checkpoint(start_from, "pretrained", "leave it empty to run the pretrain stage")
    else:
        network = build_policy(**build).network
    set_sampling(network, **sampling)  # checked before SFT so a typo fails fast
    bundle = wrap_policy(network)
    start = time.perf_counter()
    train = finetune_sft if start_from else train_sft
    history = train(bundle, files_fn(), progress=progress, **sft_options)
    save_to.parent.mkdir(parents=True, exist_ok=True)
    extra = {"sft": {k: v[-1:] for k, v in history.items()}, "start_from": str(start_from) if start_from else None}
    save_policy(bundle.network, save_to, extra=extra)
    info = {"sft_s": time.perf_counter() - start, "history": history, "saved": str(save_to)}
    if start_from:
        info["start_from"] = str(start_from)
    return bundle, info


def load_or_pretrain(
    checkpoint: str | Path | None,
    *,
    build: dict,
    files_fn,
    sft_options: dict,
    save_to: Path,
    progress: bool = True,
) -> tuple[Path, dict]:
    """The pretrain stage: multitask SFT on source tasks' demos, saved as a checkpoint.

    Returns the checkpoint path (``checkpoint`` itself when given: the stage
    is skipped) and ``{"pretrain_s": seconds, "history": {...}}``. The target
    SFT then starts from it: ``load_or_train_policy(..., start_from=path)``.

    Examples:
        >>> import tempfile, numpy as np
        >>> from torchrl_ript.data.demos import DemoWriter, read_demos
        >>> folder = Path(tempfile.mkdtemp())
        >>> with DemoWriter(folder / "a.hdf5", task_name="a", language_instruction="do a") as w:
        ...     _ = w.add_demo({"rgb": np.zeros((12, 32, 32, 3), np.uint8), "s": np.zeros((12, 4))},
        ...                    actions=np.random.rand(12, 4) - 0.5)
        >>> files = lambda: [read_demos(folder / "a.hdf5", key_map={"rgb": ("observation", "image"),
        ...                                                           "s": ("observation", "state")})]
        >>> build = dict(kind="quest", preset="tiny", action_dim=4, state_dim=4,
        ...              image_keys=[("observation", "image")], image_size=32)
        >>> path, info = load_or_pretrain(None, build=build, files_fn=files, progress=False,
        ...                               sft_options=dict(steps=2, autoencoder_steps=2), save_to=folder / "pre.pt")
        >>> bundle, sft_info = load_or_train_policy(None, build=build, files_fn=files, start_from=path,
        ...                                         sft_options=dict(steps=2), save_to=folder / "sft.pt", progress=False)
        >>> sorted(info["history"]), sorted(sft_info["history"])  # the fine-tune keeps the tokenizer
        (['autoencoder', 'prior'], ['prior'])
    """
    if checkpoint:
        _load_checkpoint(checkpoint, "pretrained", "leave pretrain.checkpoint empty to pretrain")
        return Path(checkpoint), {"pretrain_s": 0.0, "history": {}, "loaded": str(checkpoint)}
    bundle = build_policy(**build)
    start = time.perf_counter()
    history = train_sft(bundle, files_fn(), progress=progress, **sft_options)
    save_to.parent.mkdir(parents=True, exist_ok=True)
    save_policy(bundle.network, save_to, extra={"pretrain": {k: v[-1:] for k, v in history.items()}})
    return save_to, {"pretrain_s": time.perf_counter() - start, "history": history, "saved": str(save_to)}


def attach_outcome_feed(collector, contexts=None):
    """Report every rollout a collector finishes to its context dataset's sampler.

    Appends a :class:`~torchrl_ript.data.samplers.ContextOutcomeFeed` to the
    collector's replay buffer (last, so it sees each trajectory before dynamic
    sampling drops uniform groups). Needed by ``sampler="adaptive"``;
    harmless otherwise. Returns the collector.
    """
    if not hasattr(collector, "replay_buffer_with_transforms"):
        raise TypeError(
            f"{type(collector).__name__} has no local replay buffer to watch: the adaptive context "
            "sampler needs the in-process GroupCollector (collector.backend=local), or use "
            "contexts.sampler=uniform / per_task."
        )
    contexts = collector.context_dataset if contexts is None else contexts
    collector.replay_buffer_with_transforms.append_transform(ContextOutcomeFeed(contexts))
    return collector


def context_sampler(name: str, *, group_size: int, explore: float = 0.2):
    """The context sampler a config names: ``"uniform"``, ``"per_task"`` or
    ``"adaptive"`` (for groups of ``group_size``, with ``explore`` uniform draws).

    Examples:
        >>> context_sampler("adaptive", group_size=8).name, context_sampler("uniform", group_size=8).name
        ('adaptive', 'uniform')
    """
    if name == "adaptive":
        return AdaptiveSampler(group_size=group_size, explore=explore)
    return make_sampler(name)


def paired_results(before: Mapping | None, after: Mapping, modes: list[str]) -> dict:
    """``p_value`` (headline mode) and ``p_value_by_mode`` of RIPT vs SFT.

    ``before`` / ``after`` are :func:`~torchrl_ript.trainers.evaluate_modes`
    ``by_mode`` results on the same contexts; each mode gets the one-sided
    exact McNemar test of :func:`~torchrl_ript.trainers.stats.paired_success_test`
    (``gained``, ``lost``, ``p_value``). ``before=None`` (SFT not evaluated)
    gives ``p_value=None``.

    Examples:
        >>> sft = {"random": {"outcomes": [0, 0, 0, 0, 0, 1]}}
        >>> ript = {"random": {"outcomes": [1, 1, 1, 1, 0, 1]}}
        >>> paired_results(sft, ript, ["random"])["p_value"]
        0.0625
    """
    if not before:
        return {"p_value": None, "p_value_by_mode": None}
    tests = {m: paired_success_test(before[m]["outcomes"], after[m]["outcomes"]) for m in modes}
    return {"p_value": tests[modes[0]]["p_value"], "p_value_by_mode": tests}


def collection_summary(history: list[dict], *, dynamic_sampling: bool = True) -> dict:
    """Totals of a RIPT run's collection statistics (``RIPTTrainer.history``).

    ``informative_group_rate`` = groups with mixed outcomes / completed groups;
    ``env_steps_per_informative_group`` = all env steps spent / informative
    groups. With ``dynamic_sampling=False`` the collector keeps the uniform
    groups too (they count in ``groups_kept``): pass it so they are not
    counted as informative.

    Examples:
        >>> collection_summary([{"collect/groups_completed": 4, "collect/groups_kept": 1,
        ...     "collect/groups_all_success": 1, "collect/groups_all_failure": 2, "collect/env_steps": 800,
        ...     "collect/rollouts_kept": 8, "collect/contexts_drawn": 5}])["env_steps_per_informative_group"]
        800.0
    """
    def total(key):
        return int(sum(r.get(f"collect/{key}", 0) for r in history))

    completed, kept = total("groups_completed"), total("groups_kept")
    uniform = total("groups_all_success") + total("groups_all_failure")
    informative = kept if dynamic_sampling else kept - uniform
    env_steps = total("env_steps")
    return {
        "groups_completed": completed,
        "groups_informative": informative,
        "groups_all_success": total("groups_all_success"),
        "groups_all_failure": total("groups_all_failure"),
        "contexts_drawn": total("contexts_drawn"),
        "rollouts_kept": total("rollouts_kept"),
        "env_steps": env_steps,
        "informative_group_rate": informative / completed if completed else 0.0,
        # None (JSON null) when no group was informative
        "env_steps_per_informative_group": env_steps / informative if informative else None,
    }


def sft_options(sft: Mapping, *, seed: int) -> dict:
    """The :func:`train_sft` keywords of an example's ``sft`` config section.

    Examples:
        >>> sft_options({"steps": 5, "autoencoder_steps": 3, "batch_size": 8, "lr": 1e-3, "scale_steps": 2},
        ...             seed=0)["autoencoder_steps"]
        3
    """
    return dict(steps=sft["steps"], autoencoder_steps=sft["autoencoder_steps"],
                batch_size=sft["batch_size"], lr=sft["lr"], scale_steps=sft["scale_steps"], seed=seed)


def ript_config(values: Mapping, bundle: PolicyBundle, *, max_env_steps: int) -> RIPTConfig:
    """A validated :class:`RIPTConfig`; ``max_decisions: null`` covers the env's time limit."""
    values = dict(values)
    if values.get("max_decisions") is None:
        values["max_decisions"] = bundle.decisions(max_env_steps)
    return RIPTConfig.from_mapping(values)


def print_result_line(result: dict, path: Path | None = None) -> None:
    """Print the run's one-line JSON summary (last line of stdout), and save it."""
    line = json.dumps(result, default=float)
    if path is not None:
        path.write_text(line + "\n")
    print(line, flush=True)


def set_num_threads(threads: int | None) -> None:
    """Limit torch's intra-op threads (env workers need the other cores)."""
    if threads:
        torch.set_num_threads(int(threads))
