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
* :func:`collection_summary`: informative-group rate and env steps per
  informative group of a RIPT run.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from tensordict.nn import TensorDictModuleBase
from torch import nn
from torchrl.modules import ProbabilisticActor

from torchrl_ript.config import RIPTConfig
from torchrl_ript.data.demos import DemoFile
from torchrl_ript.data.samplers import AdaptiveSampler, make_sampler
from torchrl_ript.models.checkpoint import load_policy, save_policy
from torchrl_ript.models.common import EncoderConfig
from torchrl_ript.models.regression_policy import RegressionPolicy, make_regression_actor, regression_config
from torchrl_ript.models.quest import QuestDecoder, QuestPolicy, make_quest_actor, quest_config
from torchrl_ript.modules.actors import make_rollout_policy
from torchrl_ript.trainers import sft
from torchrl_ript.trainers.stats import paired_success_test

__all__ = [
    "PolicyBundle",
    "build_policy",
    "wrap_policy",
    "train_sft",
    "finetune_sft",
    "load_or_train_policy",
    "load_or_pretrain",
    "collection_summary",
    "context_sampler",
    "paired_results",
    "set_sampling",
    "sft_options",
    "ript_config",
    "print_result_line",
]

POLICY_KINDS = ("quest", "regression", "hf")
# sampling options: not architecture, so they may change on a trained checkpoint
SAMPLING_FIELDS = {QuestPolicy: ("temperature", "top_k"), RegressionPolicy: ()}


@dataclass
class PolicyBundle:
    """A network with the two modules RIPT needs from it.

    Attributes:
        kind: ``"quest"`` (token actor), ``"regression"`` (Laplace/Gaussian) or
            ``"hf"`` (a Hugging Face VLA with LoRA, Laplace head).
        network: the :class:`QuestPolicy` / :class:`RegressionPolicy` /
            :class:`~torchrl_ript.models.hf_vla.HFVLAPolicy`.
        actor: the ``ProbabilisticActor`` the PPO loss scores.
        policy: what rollouts run (QueST: actor then token decoder).
        sampled_key: the entry the loss scores (``"action_tokens"`` / ``"action"``).
        n_exec: actions executed per decision (the env's ``action_chunk``).
    """

    kind: str
    network: nn.Module
    actor: ProbabilisticActor
    policy: TensorDictModuleBase
    sampled_key: str
    n_exec: int

    def decisions(self, max_env_steps: int) -> int:
        """Decision steps that cover ``max_env_steps`` env steps."""
        return math.ceil(max_env_steps / self.n_exec)


def build_policy(
    kind: str,
    *,
    preset: str,
    action_dim: int,
    state_dim: int,
    image_keys: tuple,
    image_size: int,
    overrides: dict | None = None,
    encoder_overrides: dict | None = None,
    pretrained: str | None = None,
) -> PolicyBundle:
    """A fresh (untrained) policy of ``kind`` at ``preset`` size.

    ``kind="hf"`` loads a Hugging Face VLA from the *local* folder
    ``pretrained`` and adds LoRA and fresh action/scale heads
    (:class:`~torchrl_ript.models.hf_vla.HFVLAConfig` fields in ``overrides``;
    ``preset`` and the encoder settings do not apply: the backbone has its own).
    """
    if kind not in POLICY_KINDS:
        raise ValueError(f"policy kind must be one of {POLICY_KINDS}, got {kind!r}.")
    if kind == "hf":
        return _build_hf(pretrained, action_dim=action_dim, image_key=tuple(image_keys)[0], overrides=overrides)
    encoder = dict(encoder_overrides or {})
    encoder.update(image_keys=tuple(image_keys), image_size=image_size, state_dim=state_dim)
    make_config = quest_config if kind == "quest" else regression_config
    config = make_config(preset, action_dim=action_dim, encoder=encoder, **dict(overrides or {}))
    network = QuestPolicy(config) if kind == "quest" else RegressionPolicy(config)
    return wrap_policy(network)


def wrap_policy(network: nn.Module) -> PolicyBundle:
    """Wrap a trained (or loaded) network as actor + rollout policy."""
    network.eval()  # no dropout/BN noise: sampling-time and loss log-probs must agree
    if isinstance(network, QuestPolicy):
        actor = make_quest_actor(network)
        policy = make_rollout_policy(actor, QuestDecoder(network))
        return PolicyBundle("quest", network, actor, policy, "action_tokens", network.config.n_exec)
    if isinstance(network, RegressionPolicy):
        actor = make_regression_actor(network)
        return PolicyBundle("regression", network, actor, actor, "action", network.config.chunk_size)
    if _is_hf(network):
        actor = make_regression_actor(network)
        return PolicyBundle("hf", network, actor, actor, "action", network.config.chunk_size)
    raise TypeError(f"cannot wrap {type(network).__name__}: use a QuestPolicy, RegressionPolicy or HFVLAPolicy.")


def _is_hf(network: nn.Module) -> bool:
    # transformers/peft are optional: do not import hf_vla unless it is in use
    cls = type(network)
    return cls.__name__ == "HFVLAPolicy" and cls.__module__ == "torchrl_ript.models.hf_vla"


def _build_hf(pretrained, *, action_dim: int, image_key, overrides: dict | None) -> PolicyBundle:
    if not pretrained:
        raise ValueError(
            "policy.kind=hf needs policy.pretrained=/local/folder of a transformers VLA checkpoint "
            "(LLaVA-style: config.json, weights, tokenizer; e.g. an OpenVLA-OFT-style model). "
            "No model hub is used. For a smoke run, save a tiny random one with "
            "torchrl_ript.models.hf_vla.save_tiny_llava(folder)."
        )
    from torchrl_ript.models.hf_vla import HFVLAConfig, HFVLAPolicy

    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(HFVLAConfig.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown HFVLAConfig field(s) in policy.overrides: {unknown}.")
    config = HFVLAConfig(action_dim=action_dim, **overrides)
    return wrap_policy(HFVLAPolicy.from_pretrained(pretrained, config, image_key=image_key))


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
    """Behaviour cloning: QueST autoencoder then prior; regression mean then scale."""
    network = bundle.network
    batches = _demo_batches(network, files, batch_size, seed)
    if bundle.kind == "quest":
        history = sft.train_quest(
            network, batches, ae_steps=autoencoder_steps or steps, prior_steps=steps, lr=lr,
            progress=progress,
        )
    else:
        history = _fit_regression(bundle, batches, steps, lr, scale_steps, progress)
    network.eval()
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


def _fit_regression(bundle: PolicyBundle, batches, steps: int, lr: float, scale_steps: int, progress: bool) -> dict:
    """Regression policy: the mean head by L1, then the scale head by NLL."""
    history = {"regression": sft.train_regression(bundle.network, batches, steps=steps, lr=lr, progress=progress)}
    history["scale"] = sft.fit_regression_scale(
        bundle.network, batches, steps=scale_steps, actor=bundle.actor, progress=progress
    )
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
    """SFT of a *pretrained* policy on a target's few demos.

    QueST keeps its pretrained skill tokenizer (the autoencoder is frozen: the
    target's actions are written in the tokens it learned on the source tasks)
    and fine-tunes the prior and observation encoders. The regression policy
    fine-tunes its mean head and encoders, then refits its scale head by NLL
    on the target demos (the pretrained scale describes the source tasks).
    ``autoencoder_steps`` (and other :func:`train_sft` keywords) are ignored.
    """
    network = bundle.network
    batches = _demo_batches(network, files, batch_size, seed)
    if bundle.kind == "quest":
        history = {"prior": sft.train_quest_prior(network, batches, steps=steps, lr=lr, progress=progress)}
    else:
        history = _fit_regression(bundle, batches, steps, lr, scale_steps, progress)
    network.eval()
    return history


def set_sampling(network: nn.Module, **options) -> nn.Module:
    """Change how a built or loaded network samples (QueST: ``temperature``, ``top_k``).

    These options are part of the distribution that rollouts sample from and
    that the loss scores, so they are safe to change on a trained checkpoint;
    :func:`save_policy` stores them with the weights. ``None`` values are
    ignored. It may be called before or after :func:`wrap_policy`: the actor
    reads the live config on every call, so sampling and scoring agree.

    Examples:
        >>> from torchrl_ript.models.quest import QuestPolicy, quest_config
        >>> net = set_sampling(QuestPolicy(quest_config("tiny")), top_k=5)
        >>> net.config.top_k
        5
    """
    allowed = () if _is_hf(network) else SAMPLING_FIELDS.get(type(network))
    if allowed is None:
        raise TypeError(f"no sampling options for {type(network).__name__}.")
    options = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"{type(network).__name__} has no sampling option(s) {unknown}; "
            f"valid: {list(allowed) or 'none'}."
        )
    top_k = options.get("top_k")
    if top_k is not None and not 1 <= int(top_k) <= network.config.vocab_size:
        raise ValueError(f"top_k must be in [1, {network.config.vocab_size}] (the token vocabulary), got {top_k}.")
    if options.get("temperature", 1.0) <= 0:
        raise ValueError(f"temperature must be > 0, got {options['temperature']}.")
    for key, value in options.items():
        setattr(network.config, key, value)
    return network


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
        >>> from pathlib import Path
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


def context_sampler(name: str, *, group_size: int, explore: float = 0.2):
    """The context sampler a config names: ``"uniform"``, ``"per_task"`` or
    ``"adaptive"`` (for groups of ``group_size``, with ``explore`` uniform draws)."""
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
    """The :func:`train_sft` keywords of an example's ``sft`` config section."""
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


def encoder_config_of(bundle: PolicyBundle) -> EncoderConfig:
    return bundle.network.config.encoder


def set_num_threads(threads: int | None) -> None:
    """Limit torch's intra-op threads (env workers need the other cores)."""
    if threads:
        torch.set_num_threads(int(threads))
