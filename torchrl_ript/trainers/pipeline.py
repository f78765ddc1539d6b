"""Stages shared by the benchmark pipelines: [pretrain ->] SFT -> evaluate -> RIPT -> evaluate -> report.

The MetaWorld and LIBERO examples differ in their env, demos and contexts;
what they do with a policy is the same and lives here, one function per stage:

* :func:`files_from_main_rank`: demo files made on rank 0 only, copied to the
  other ranks under ``torchrun``;
* :func:`load_or_pretrain`: the pretrain stage, multitask SFT on source tasks
  (:func:`train_sft`), saved as the checkpoint the target SFT starts from;
* :func:`load_or_train_policy`: SFT from scratch (or load a checkpoint);
  with ``start_from=`` a pretrained checkpoint it fine-tunes instead
  (:func:`finetune_sft`); under ``torchrun`` rank 0 trains and the other
  ranks receive its checkpoint;
* :func:`evaluate_stage`: held-out success rates in each exploration mode, GIFs;
* :func:`ript_stage`: collector + trainer, RIPT, the RIPT policy file;
* :func:`plot_stage`: the success-rate plot;
* :func:`result_line` / :func:`print_result_line`: the run's JSON line.

What depends on the kind of policy (build, actor, SFT recipe, sampling
options, checkpoint) is its :class:`~torchrl_ript.models.registry.PolicyKind`;
:func:`build_policy`, :func:`wrap_policy` and :func:`set_sampling` are
re-exported from :mod:`torchrl_ript.models.registry`.
"""
from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from torchrl_ript.collectors.stats import CollectionStats
from torchrl_ript.config import RIPTConfig
from torchrl_ript.data.demos import DemoFile
from torchrl_ript.data.samplers import AdaptiveSampler, make_sampler
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
from torchrl_ript.trainers.ddp import DistributedContext
from torchrl_ript.trainers.evaluate import EXPLORATION_MODES, evaluate_modes, save_video
from torchrl_ript.trainers.factory import make_logger, make_policy_trainer
from torchrl_ript.trainers.plots import plot_success_rate
from torchrl_ript.trainers.ript import RIPTTrainer
from torchrl_ript.trainers.stats import paired_count_test, paired_success_test

__all__ = [
    "PolicyBundle",
    "build_policy",
    "wrap_policy",
    "set_sampling",
    "policy_sampling",
    "train_sft",
    "finetune_sft",
    "files_from_main_rank",
    "load_or_train_policy",
    "load_or_pretrain",
    "collection_summary",
    "task_mix",
    "policy_share",
    "collection_totals",
    "context_sampler",
    "paired_results",
    "paired_mode_test",
    "sft_options",
    "ript_config",
    "rank_output_dir",
    "evaluate_stage",
    "ript_stage",
    "plot_stage",
    "result_line",
    "print_result_line",
    "set_num_threads",
]


def policy_sampling(kind: str, options: Mapping | None) -> dict | None:
    """A config's ``policy.sampling`` for policies of ``kind``: ``options`` when the
    kind has sampling options (QueST: ``temperature``, ``top_k``), else ``None``
    (the other kinds sample their distribution as it is).

    Examples:
        >>> policy_sampling("quest", {"top_k": 5}), policy_sampling("regression", {"top_k": 5})
        ({'top_k': 5}, {})
        >>> policy_sampling("regression", {"top_k": 5, "scale_multiplier": 2.0})
        {'scale_multiplier': 2.0}
    """
    fields = policy_kind(kind).sampling_fields
    return {k: v for k, v in (options or {}).items() if k in fields} if fields else None


def train_sft(
    bundle: PolicyBundle,
    files: list[DemoFile],
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 3e-4,
    autoencoder_steps: int | None = None,
    scale_steps: int = 500,
    scale_fit: str = "heldout",
    scale_holdout: float = 0.2,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, list[float]]:
    """Behaviour cloning from scratch with the kind's SFT recipe
    (:attr:`~torchrl_ript.models.registry.PolicyKind.sft`: QueST autoencoder
    then prior; regression mean then scale). Returns the per-step losses by stage."""
    batches = _demo_batches(bundle.network, files, batch_size, seed)
    options = SFTOptions(steps=steps, lr=lr, autoencoder_steps=autoencoder_steps, scale_steps=scale_steps,
                         scale_fit=scale_fit, scale_holdout=scale_holdout, progress=progress)
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
    scale_fit: str = "heldout",
    scale_holdout: float = 0.2,
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
    options = SFTOptions(steps=steps, lr=lr, scale_steps=scale_steps, scale_fit=scale_fit,
                         scale_holdout=scale_holdout, progress=progress)
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


def _on_main_rank(distributed: DistributedContext, make: Callable):
    """``make()`` on rank 0; every rank gets ``(result, None)`` there and
    ``(None, error text)`` elsewhere if it failed, so no rank waits for a
    broadcast that never comes. Call on every rank (a collective)."""
    result, error = None, None
    if distributed.is_main:
        try:
            result = make()
        except Exception as err:
            error = f"{type(err).__name__}: {err}"
            distributed.broadcast_object((None, error))
            raise
    return distributed.broadcast_object((result, error))


def files_from_main_rank(
    make: Callable[[], Sequence[str | Path] | None],
    *,
    distributed: DistributedContext | None,
    folder: str | Path,
) -> list[Path] | None:
    """Files made once, on rank 0, and copied to every rank.

    Without ``distributed`` (one process) this is ``make()``. Under
    ``torchrun`` only rank 0 calls ``make`` (e.g. records the demos); the
    files' bytes are broadcast (no shared disk needed) and the other ranks
    write them into ``folder``. Every rank gets the paths of its copy
    (``None`` when ``make`` returned ``None``). Call it on every rank.

    Examples:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> def record():
        ...     (folder / "a.txt").write_text("demo")
        ...     return [folder / "a.txt"]
        >>> [p.name for p in files_from_main_rank(record, distributed=None, folder=folder)]
        ['a.txt']
    """
    if distributed is None or distributed.world_size == 1:
        paths = make()
        return None if paths is None else [Path(p) for p in paths]

    def read():
        paths = make()
        return None if paths is None else [(Path(p), Path(p).read_bytes()) for p in paths]

    files, error = _on_main_rank(distributed, read)
    if error is not None:
        raise RuntimeError(f"rank 0 failed to make the files this rank needs: {error}")
    if files is None:
        return None
    if distributed.is_main:
        return [path for path, _ in files]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    copies = []
    for path, data in files:
        (folder / path.name).write_bytes(data)
        copies.append(folder / path.name)
    return copies


def load_or_train_policy(
    checkpoint: str | Path | None,
    *,
    build: dict,
    files_fn,
    sft_options: dict,
    save_to: Path,
    sampling: Mapping | None = None,
    start_from: str | Path | None = None,
    distributed: DistributedContext | None = None,
    progress: bool = True,
) -> tuple[PolicyBundle, dict]:
    """Load ``checkpoint`` when given (skips SFT), else SFT and save.

    Without ``start_from`` SFT builds a fresh policy from ``build`` and
    trains it from scratch (:func:`train_sft`); with ``start_from`` (a
    pretrained :func:`save_policy` file, e.g. from :func:`load_or_pretrain`)
    it fine-tunes that policy (:func:`finetune_sft`). ``sampling`` (see
    :func:`set_sampling`) applies to the loaded or trained network. Returns
    the bundle and ``{"sft_s": seconds, "history": {...}}``.

    Under ``torchrun`` (``distributed`` with more than one rank) only rank 0
    runs SFT (and calls ``files_fn``); the other ranks receive its policy
    file (broadcast, no shared disk needed), save their copy at ``save_to``
    and load it: every rank starts RIPT from the same weights. Their info
    says ``"received"`` instead of ``"saved"``.
    """
    sampling = dict(sampling or {})
    if checkpoint:
        network = _load_checkpoint(checkpoint, "policy", "leave policy.checkpoint empty to train one by SFT")
        network = set_sampling(network, **sampling)
        return wrap_policy(network), {"sft_s": 0.0, "history": {}, "loaded": str(checkpoint)}
    save_to = Path(save_to)
    if distributed is None or distributed.world_size == 1:
        return _train_policy(build=build, files_fn=files_fn, sft_options=sft_options, save_to=save_to,
                             sampling=sampling, start_from=start_from, progress=progress)
    trained = {}

    def train_and_read():
        trained["out"] = _train_policy(build=build, files_fn=files_fn, sft_options=sft_options, save_to=save_to,
                                       sampling=sampling, start_from=start_from, progress=progress)
        return save_to.read_bytes()

    data, error = _on_main_rank(distributed, train_and_read)
    if error is not None:
        raise RuntimeError(f"rank 0's SFT failed, so this rank has no policy: {error}")
    if distributed.is_main:
        return trained["out"]
    save_to.parent.mkdir(parents=True, exist_ok=True)
    save_to.write_bytes(data)
    network = set_sampling(load_policy(save_to), **sampling)
    return wrap_policy(network), {"sft_s": 0.0, "history": {}, "received": str(save_to), "from_rank": 0}


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


def context_sampler(contexts: Mapping, *, group_size: int):
    """The context sampler of an example's ``contexts`` config section:
    ``sampler`` names it (``"uniform"``, ``"per_task"`` or ``"adaptive"``);
    the adaptive one is built for groups of ``group_size`` with the section's
    ``explore`` (share of uniform draws) and ``task_pooling`` (weight of each
    task's pooled estimate in its starts' prior; see
    :class:`~torchrl_ript.data.AdaptiveSampler`).

    Examples:
        >>> context_sampler({"sampler": "adaptive", "explore": 0.2, "task_pooling": 4.0}, group_size=8)
        AdaptiveSampler(group_size=8, explore=0.2, prior=0.5, memory=32.0, power=1.0, task_pooling=4.0)
        >>> context_sampler({"sampler": "uniform"}, group_size=8).name
        'uniform'
    """
    if contexts["sampler"] == "adaptive":
        return AdaptiveSampler(group_size=group_size, explore=contexts["explore"],
                               task_pooling=contexts["task_pooling"])
    return make_sampler(contexts["sampler"])


def paired_results(before: Mapping | None, after: Mapping, modes: list[str]) -> dict:
    """``p_value`` (headline mode) and ``p_value_by_mode`` of RIPT vs SFT.

    ``before`` / ``after`` are :func:`~torchrl_ript.trainers.evaluate_modes`
    ``by_mode`` results on the same contexts. A mode scored with one rollout
    per start gets the one-sided exact McNemar test of
    :func:`~torchrl_ript.trainers.stats.paired_success_test` (``gained``,
    ``lost``, ``p_value``); with several (``rollouts_per_start``), the
    sign-flip test of the per-start success counts,
    :func:`~torchrl_ript.trainers.stats.paired_count_test` (``starts_up``,
    ``starts_down``, ``p_value``). ``before=None`` (SFT not evaluated) gives
    ``p_value=None``.

    Examples:
        >>> sft = {"random": {"outcomes": [0, 0, 0, 0, 0, 1]}}
        >>> ript = {"random": {"outcomes": [1, 1, 1, 1, 0, 1]}}
        >>> paired_results(sft, ript, ["random"])["p_value"]
        0.0625
        >>> sft = {"random": {"counts": [0, 1, 2], "rollouts_per_start": 2}}
        >>> ript = {"random": {"counts": [2, 2, 2], "rollouts_per_start": 2}}
        >>> paired_results(sft, ript, ["random"])["p_value_by_mode"]["random"]["starts_up"]
        2
    """
    if not before:
        return {"p_value": None, "p_value_by_mode": None}
    tests = {m: paired_mode_test(before[m], after[m]) for m in modes}
    return {"p_value": tests[modes[0]]["p_value"], "p_value_by_mode": tests}


def paired_mode_test(before: Mapping, after: Mapping) -> dict:
    """The paired test of one mode's scores (see :func:`paired_results`).

    Scores without ``rollouts_per_start`` (results saved before the option
    existed) count as one rollout per start.
    """
    rollouts = {int(scores.get("rollouts_per_start", 1)) for scores in (before, after)}
    if len(rollouts) > 1:
        raise ValueError(
            f"the two evaluations rolled each start out {sorted(rollouts)} times: score both with the "
            "same eval.rollouts_per_start to compare them start by start."
        )
    (rollouts,) = rollouts
    if rollouts == 1:
        return paired_success_test(before["outcomes"], after["outcomes"])
    return paired_count_test(before["counts"], after["counts"], rollouts=rollouts)


_COLLECTION_KEYS = ("groups_completed", "groups_kept", "groups_all_success", "groups_all_failure",
                    "contexts_drawn", "rollouts_kept", "env_steps")


def collection_totals(history: list[dict]) -> dict:
    """Sums of a RIPT run's ``collect/*`` counters over its history (0 when absent).

    Examples:
        >>> collection_totals([{"collect/groups_kept": 2, "collect/env_steps": 10},
        ...                    {"collect/groups_kept": 1, "train/loss": 0.3}])["groups_kept"]
        3
    """
    return {key: int(sum(r.get(f"collect/{key}", 0) for r in history)) for key in _COLLECTION_KEYS}


def policy_share(history: list[dict]) -> float | None:
    """Share of a RIPT run's collection wall time spent in policy calls
    (``collect/policy_s`` over ``collect/wall_s``, summed over iterations);
    ``None`` without collection statistics.

    Examples:
        >>> policy_share([{"collect/policy_s": 3.0, "collect/wall_s": 10.0},
        ...               {"collect/policy_s": 1.0, "collect/wall_s": 10.0}])
        0.2
    """
    wall = sum(r.get("collect/wall_s", 0.0) for r in history)
    return sum(r.get("collect/policy_s", 0.0) for r in history) / wall if wall > 0 else None


def task_mix(history: list[dict]) -> dict:
    """Per task id, over a RIPT run's iterations: completed groups, informative
    (mixed-outcome) groups, kept rollouts, the informative rate, the task's
    share of the kept rollouts and the success rate of its completed groups'
    rollouts (``None`` in histories written before it was counted), in total
    and per iteration (the collector's ``collect/per_task``; empty without it).

    Examples:
        >>> mix = task_mix([{"collect/per_task": {0: {"groups": 3, "informative": 1, "kept": 8}}},
        ...                 {"collect/per_task": {0: {"groups": 1, "informative": 1, "kept": 8},
        ...                                       1: {"groups": 2, "informative": 1, "kept": 8}}}])
        >>> mix["total"][0]["informative_rate"], mix["total"][1]["batch_share"]
        (0.5, 0.3333333333333333)
        >>> [sorted(it) for it in mix["per_iteration"]]
        [[0], [0, 1]]
    """
    totals = CollectionStats()  # the collector's own per-task sums and rates
    per_iteration = []
    for record in history:
        per_task = record.get("collect/per_task") or {}
        per_iteration.append({int(t): {k: c[k] for k in ("informative_rate", "batch_share", "success_rate") if k in c}
                              for t, c in per_task.items()})
        for task, counts in per_task.items():
            totals.add_task_counts(task, counts)
    return {"total": totals.task_mix(), "per_iteration": per_iteration}


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
    totals = collection_totals(history)
    completed, kept = totals["groups_completed"], totals["groups_kept"]
    uniform = totals["groups_all_success"] + totals["groups_all_failure"]
    informative = kept if dynamic_sampling else kept - uniform
    env_steps = totals["env_steps"]
    return {
        "groups_completed": completed,
        "groups_informative": informative,
        "groups_all_success": totals["groups_all_success"],
        "groups_all_failure": totals["groups_all_failure"],
        "contexts_drawn": totals["contexts_drawn"],
        "rollouts_kept": totals["rollouts_kept"],
        "env_steps": env_steps,
        "informative_group_rate": informative / completed if completed else 0.0,
        # None (JSON null) when no group was informative
        "env_steps_per_informative_group": env_steps / informative if informative else None,
        "task_mix": task_mix(history),
    }


def sft_options(sft: Mapping, *, seed: int) -> dict:
    """The :func:`train_sft` keywords of an example's ``sft`` config section.

    Examples:
        >>> sft_options({"steps": 5, "autoencoder_steps": 3, "batch_size": 8, "lr": 1e-3, "scale_steps": 2},
        ...             seed=0)["autoencoder_steps"]
        3
    """
    return dict(steps=sft["steps"], autoencoder_steps=sft["autoencoder_steps"],
                batch_size=sft["batch_size"], lr=sft["lr"], scale_steps=sft["scale_steps"],
                scale_fit=sft.get("scale_fit", "heldout"), scale_holdout=sft.get("scale_holdout", 0.2), seed=seed)


def ript_config(values: Mapping, bundle: PolicyBundle, *, max_env_steps: int) -> RIPTConfig:
    """A validated :class:`RIPTConfig`; ``max_decisions: null`` covers the env's time limit."""
    values = dict(values)
    if values.get("max_decisions") is None:
        values["max_decisions"] = bundle.decisions(max_env_steps)
    return RIPTConfig.from_mapping(values)


def rank_output_dir(out: str | Path, distributed: DistributedContext | None) -> Path:
    """Where this process writes: ``out`` on rank 0 (and in one process),
    ``out/rank<r>`` on the other ranks of a ``torchrun`` job.

    Examples:
        >>> rank_output_dir("run", None), rank_output_dir("run", DistributedContext(rank=1, world_size=2))
        (PosixPath('run'), PosixPath('run/rank1'))
    """
    out = Path(out)
    return out if distributed is None or distributed.is_main else out / f"rank{distributed.rank}"


def evaluate_stage(
    env,
    bundle: PolicyBundle,
    contexts,
    *,
    tag: str,
    horizon: int,
    modes: list[str],
    videos: int,
    out: Path,
    baseline: Mapping | None = None,
    lockstep: bool = False,
    seed: int | None = None,
    rollouts_per_start: int = 1,
    progress: bool = True,
) -> dict:
    """Held-out success rates of ``bundle``'s rollout policy in each exploration mode.

    One rollout per context of ``contexts`` and mode, ``rollouts_per_start``
    for the sampling mode (``eval.rollouts_per_start``;
    :func:`~torchrl_ript.trainers.evaluate_modes`, the first mode is the
    headline); the first ``videos`` rollouts are saved as
    ``out/videos/<tag>_<i>.gif`` and each mode's rates are printed, with the
    paired test against ``baseline`` (an earlier result of this function on
    the same contexts, e.g. before RIPT) when given. ``lockstep``: the env
    slots step with a barrier (``ript.lockstep``: bit-reproducible). ``seed``
    seeds the sampling policy's draws (``eval.seed``): a policy scores the
    same as in any other run of it, whatever ran before. Returns
    :func:`~torchrl_ript.trainers.evaluate_modes`'s result without the frames.
    """
    result = evaluate_modes(env, bundle.policy, contexts, horizon=horizon, modes=modes, record_videos=videos,
                            lockstep=lockstep, seed=seed, rollouts_per_start=rollouts_per_start, progress=progress)
    for i, frames in enumerate(result.pop("videos")):
        save_video(frames, Path(out) / "videos" / f"{tag}_{i}.gif")
    for mode, scores in result["by_mode"].items():
        print(f"[{tag}] held-out SR ({mode}) {scores['sr']:.3f} over {scores['starts']} contexts x "
              f"{scores['rollouts_per_start']} rollouts, per task {scores['per_task']}", flush=True)
    tests = paired_results(baseline and baseline["by_mode"], result["by_mode"], list(result["by_mode"]))
    for mode, test in (tests["p_value_by_mode"] or {}).items():
        if "gained" in test:
            change = (f"{test['gained']} newly solved, {test['lost']} lost; one-sided paired (McNemar) "
                      f"p = {test['p_value']:.4g}")
        else:
            change = (f"{test['starts_up']} solved more often, {test['starts_down']} less often (of "
                      f"{test['rollouts']} rollouts each); one-sided paired sign-flip p = {test['p_value']:.4g}")
        print(f"[{tag}] {mode}: SR {test['sr_before']:.3f} -> {test['sr_after']:.3f} on {test['n']} "
              f"held-out contexts; {change}", flush=True)
    return result


def ript_stage(
    config: RIPTConfig,
    *,
    bundle: PolicyBundle,
    env_fn: Callable,
    make_env: Callable,
    train_contexts,
    collector_options: Mapping | None,
    out: Path,
    eval_env=None,
    eval_contexts=None,
    eval_mode: str = "deterministic",
    eval_seed: int | None = None,
    initial_eval: Mapping | None = None,
    distributed: DistributedContext | None = None,
    logger_kind: str = "csv",
    log_name: str = "ript",
    progress: bool = True,
) -> tuple[RIPTTrainer, dict]:
    """RIPT on ``bundle``: build the collector and trainer, resume, train, save the policy.

    The collector and trainer are
    :func:`~torchrl_ript.trainers.factory.make_policy_trainer`'s: the
    collector ``collector_options`` (an example's ``collector:`` section)
    asks for, or the default :class:`~torchrl_ript.collectors.GroupCollector`
    over ``make_env()`` (an adaptive context sampler hears of every finished
    rollout through the collector's buffer). The trainer resumes from
    ``out/checkpoints/latest.pt`` when it exists; otherwise ``initial_eval``
    (an evaluation record ``{"step": 0, "success_rate", ...}`` of the same
    contexts as ``eval_contexts``) starts its evaluation history; the
    periodic evaluation on ``eval_contexts`` acts in ``eval_mode`` with its
    draws seeded by ``eval_seed`` (see :func:`evaluate_stage`). The trained
    network is saved as ``out/ript_policy.pt``. Returns the trainer (its
    collector still running: shut it down after the final evaluation) and
    ``{"ript_s", "iterations_without_update"}``.
    """
    out = Path(out)
    trainer = make_policy_trainer(
        config, bundle=bundle, env_fn=env_fn, make_env=make_env, train_contexts=train_contexts,
        collector_options=collector_options, distributed=distributed,
        eval_env=eval_env, eval_contexts=eval_contexts, logger=make_logger(logger_kind, out / "logs", log_name),
        checkpoint_dir=out / "checkpoints", eval_exploration_type=EXPLORATION_MODES[eval_mode], eval_seed=eval_seed,
        progress=progress,
    )
    resumed = trainer.resume(out / "checkpoints" / "latest.pt")
    if initial_eval is not None and not resumed:
        trainer.eval_history.append(dict(initial_eval))
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("always", RuntimeWarning)  # the draw-limit warning, every step
        trainer.train()
    ript_s = time.perf_counter() - start
    save_policy(bundle.network, out / "ript_policy.pt", extra={"ript_steps": trainer.step})
    skipped = sum(int(r.get("train/skipped", 0)) for r in trainer.history)
    if skipped:
        print(f"[ript] {skipped} of {len(trainer.history)} RIPT iterations made no update: every "
              f"group of K={config.group_size} rollouts had the same reward (all failed or all "
              "succeeded), so there was no learning signal. RIPT needs a policy that sometimes "
              "succeeds (SR_before > 0) and sometimes fails.", flush=True)
    return trainer, {"ript_s": ript_s, "iterations_without_update": skipped}


def plot_stage(
    trainer: RIPTTrainer,
    path: str | Path,
    *,
    baseline: Mapping | None,
    final: Mapping,
    per_task: int,
    title: str,
    eval_label: str,
) -> Path:
    """The success-rate plot of a RIPT run
    (:func:`~torchrl_ript.trainers.plots.plot_success_rate`).

    ``baseline`` / ``final`` are the :func:`evaluate_stage` results before
    and after RIPT (``baseline=None``, or ``by_mode=None``: SFT not
    evaluated); ``per_task`` is their contexts per task. Without evaluations
    during training the held-out curve joins the two.
    """
    before = baseline["by_mode"] if baseline else None
    history = trainer.eval_history
    if not history and before:
        history = [{"step": 0, "success_rate": baseline["success_rate"]},
                   {"step": trainer.step, "success_rate": final["success_rate"]}]
    return plot_success_rate(
        history, trainer.history, path, title=title, eval_label=eval_label,
        baseline={m: r["sr"] for m, r in before.items()} if before else None,
        final={f"{m}, {per_task}/task" + (f" x {r['rollouts_per_start']}" if r.get("rollouts_per_start", 1) > 1
                                          else ""): r["sr"] for m, r in final["by_mode"].items()},
    )


def result_line(
    *,
    fields: Mapping,
    policy: str,
    modes: list[str],
    n_eval: int,
    baseline: Mapping | None,
    final: Mapping | None = None,
    trainer: RIPTTrainer | None = None,
    dynamic_sampling: bool = True,
    baseline_name: str = "sft",
    paired_key: str = "p_value_by_mode",
    collection: str = "summary",
    stage_fields: Mapping | None = None,
    ript_fields: Mapping | None = None,
    wall_s: float,
    output_dir: str | Path,
    config: Mapping | None = None,
) -> dict:
    """The run's one-line JSON summary (both benchmark examples build theirs here).

    Keys: ``fields`` (the benchmark's: tasks, suite...), ``policy``,
    ``eval_modes``, ``n_eval``; the evaluation before RIPT as
    ``sr_<baseline_name>``, ``..._per_task``, ``..._by_mode`` (``None`` values
    when ``baseline`` is ``None``); ``stage_fields`` (e.g. stage timings);
    after RIPT (``trainer`` and ``final`` given) ``sr_ript``,
    ``sr_ript_per_task``, ``sr_ript_by_mode``, ``iterations``, ``env_steps``,
    ``p_value`` (one-sided paired test of the headline mode: McNemar, or the
    per-start count test with ``eval.rollouts_per_start`` > 1;
    :func:`paired_results`) and the per-mode tests under ``paired_key``,
    ``policy_share`` (:func:`policy_share` of the RIPT collection), the
    collection statistics (``collection="summary"``: :func:`collection_summary`
    under ``"collection"``; ``"groups"``: the group totals as top-level keys)
    and ``ript_fields``; without RIPT ``sr_ript=None``, ``iterations=0``,
    ``env_steps=0``, ``p_value=None``. Last: ``wall_s``, ``output_dir``,
    ``config``. (MetaWorld's line uses the defaults; LIBERO's keeps its
    names: ``baseline_name="before"``, ``paired_key="paired_by_mode"``,
    ``collection="groups"``.)

    Examples:
        >>> from types import SimpleNamespace
        >>> sft = {"success_rate": 0.0, "per_task": {"a": 0.0}, "by_mode": {"random": {"sr": 0.0, "outcomes": [0, 0]}}}
        >>> ript = {"success_rate": 1.0, "per_task": {"a": 1.0}, "by_mode": {"random": {"sr": 1.0, "outcomes": [1, 1]}}}
        >>> trainer = SimpleNamespace(step=1, env_steps=40, history=[{"collect/groups_completed": 2,
        ...     "collect/groups_kept": 1, "collect/groups_all_failure": 1, "collect/env_steps": 40}])
        >>> line = result_line(fields={"tasks": ["a"]}, policy="quest", modes=["random"], n_eval=2, baseline=sft,
        ...                    final=ript, trainer=trainer, wall_s=1.0, output_dir="out")
        >>> line["sr_sft"], line["sr_ript"], line["p_value"], line["collection"]["groups_informative"]
        (0.0, 1.0, 0.25, 1)
    """
    if collection not in ("summary", "groups"):
        raise ValueError(f"collection must be 'summary' or 'groups', got {collection!r}.")
    before = baseline or {"success_rate": None, "per_task": None, "by_mode": None}
    result = {**fields, "policy": policy, "eval_modes": list(modes), "n_eval": n_eval,
              f"sr_{baseline_name}": before["success_rate"], f"sr_{baseline_name}_per_task": before["per_task"],
              f"sr_{baseline_name}_by_mode": before["by_mode"], **(stage_fields or {})}
    if trainer is None:
        result.update(sr_ript=None, iterations=0, env_steps=0, p_value=None, policy_share=None)
    else:
        if final is None:
            raise ValueError("result_line needs final= (the evaluation after RIPT) with trainer=.")
        paired = paired_results(before["by_mode"], final["by_mode"], list(modes))
        result.update(sr_ript=final["success_rate"], sr_ript_per_task=final["per_task"],
                      sr_ript_by_mode=final["by_mode"], iterations=trainer.step, env_steps=trainer.env_steps,
                      p_value=paired["p_value"])
        result[paired_key] = paired["p_value_by_mode"]
        result["policy_share"] = policy_share(trainer.history)
        if collection == "summary":
            result["collection"] = collection_summary(trainer.history, dynamic_sampling=dynamic_sampling)
        else:
            totals = collection_totals(trainer.history)
            result.update({k: totals[k] for k in ("groups_completed", "groups_kept", "groups_all_success",
                                                   "groups_all_failure")})
            result["task_mix"] = task_mix(trainer.history)
        result.update(ript_fields or {})
    result.update(wall_s=wall_s, output_dir=str(output_dir), config=dict(config or {}))
    return result


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
