"""Success rate on held-out contexts, with the policy's mode or its sampling distribution."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType, set_exploration_type
from tqdm.auto import tqdm

from torchrl_ript.collectors.engine import Rollout, RolloutEngine
from torchrl_ript.data.context import ContextDataset
from torchrl_ript.trainers.stats import per_start_success

__all__ = ["EXPLORATION_MODES", "evaluate_modes", "exploration_modes", "evaluate_success", "repeat_starts",
           "save_video"]

# "deterministic": the policy's mode (the paper's OpenVLA-OFT evaluation); "random": the
# sampling policy RIPT optimises (QueST's own evaluation samples among the top-k tokens)
EXPLORATION_MODES = {"deterministic": ExplorationType.DETERMINISTIC, "random": ExplorationType.RANDOM}


def evaluate_success(
    env: EnvBase,
    policy: Callable[[TensorDictBase], TensorDictBase],
    contexts: ContextDataset,
    *,
    horizon: int,
    exploration_type: ExplorationType = ExplorationType.DETERMINISTIC,
    record_videos: int = 0,
    frame_key: NestedKey = ("observation", "image"),
    lockstep: bool = False,
    seed: int | None = None,
    progress: bool = True,
) -> dict:
    """Roll out each context of ``contexts`` once and report success rates.

    Deterministic actions by default (the mode/mean of the policy, as the
    paper evaluates). Returns ``{"success_rate", "per_task", "outcomes",
    "rollout_env_steps", "num_rollouts", "env_steps", "videos"}`` where
    ``per_task`` maps task names to success rates, ``outcomes`` lists each
    context's success in context order (for paired tests, see
    :func:`~torchrl_ript.trainers.stats.paired_success_test`),
    ``rollout_env_steps`` each rollout's simulator steps in the same order (a
    success's steps say how fast it was, a failure's the time limit) and ``videos``
    holds up to ``record_videos`` ``[T, H, W, 3]`` uint8 frame arrays (the
    frame each decision was taken on, from ``frame_key``).

    ``env`` is an :class:`~torchrl.envs.AsyncEnvPool` (reused across calls), or
    a ``ParallelEnv``/``SerialEnv`` rebuilt as a pool for this call.
    ``lockstep`` steps the slots with a barrier (see
    :class:`~torchrl_ript.collectors.engine.RolloutEngine`): a sampling
    policy then draws the same random numbers whatever the envs' timing.
    ``seed``: the policy's random draws come from torch's RNG seeded with it,
    and the caller's RNG state is restored afterwards. A policy's score on the
    same contexts then does not depend on what ran before (pretraining, SFT,
    RIPT) and evaluating does not shift the caller's random stream. (Two
    different policies do not get start-by-start common random numbers: once
    a rollout ends at another step, the slots take the next contexts in
    another order.) ``None`` draws from the current state.

    Examples:
        >>> import torch
        >>> from torchrl.envs import SerialEnv
        >>> from tensordict.nn import TensorDictModule
        >>> from torchrl_ript import ContextDataset, ContextToyVLAEnv
        >>> oracle = TensorDictModule(lambda s: s[..., 2:4], in_keys=[("observation", "state")], out_keys=["action"])
        >>> contexts = ContextDataset(torch.rand(6, 2) - 0.5, [0] * 6, ["track"])
        >>> env = SerialEnv(2, lambda: ContextToyVLAEnv(action_dim=2))
        >>> evaluate_success(env, oracle, contexts, horizon=4, progress=False)["success_rate"]
        1.0
    """
    if len(contexts) == 0:
        raise ValueError("no evaluation contexts.")
    pending = list(range(len(contexts)))
    finished: list[Rollout] = []
    videos: dict[int, list[np.ndarray]] = {}
    bar = tqdm(total=len(contexts), desc="evaluate", disable=not progress, leave=False)

    def next_rollout() -> Rollout | None:
        if not pending:
            return None
        index = pending.pop(0)
        return Rollout(index, int(contexts.task_ids[index]), group_id=index)

    def on_decision(slots, rollouts, out: TensorDictBase) -> None:
        # the frame the policy acted on, one per decision
        frames = out.get(frame_key, None) if record_videos else None
        if frames is None:
            return
        for j, rollout in enumerate(rollouts):
            if rollout.context_id < record_videos:
                videos.setdefault(rollout.context_id, []).append(_to_hwc(frames[j]))

    def on_finish(rollout: Rollout) -> bool:
        finished.append(rollout)
        bar.update(1)
        return False

    engine = RolloutEngine(env, policy, contexts, horizon=horizon, on_decision=on_decision,
                           extra_keys=[frame_key] if record_videos else None, lockstep=lockstep)
    try:
        with torch.no_grad(), set_exploration_type(exploration_type), _seeded(seed):
            engine.run(next_rollout, on_finish)
    finally:
        bar.close()
        if engine.env is not env:  # a pool this call built (from a ParallelEnv/SerialEnv)
            engine.close()
    finished.sort(key=lambda rollout: rollout.context_id)
    per_task: dict[str, list[bool]] = {}
    for rollout in finished:
        per_task.setdefault(contexts.task_names[rollout.task_id], []).append(rollout.success)
    return {
        "success_rate": float(np.mean([r.success for r in finished])),
        "per_task": {name: float(np.mean(s)) for name, s in per_task.items()},
        "outcomes": [bool(r.success) for r in finished],
        "rollout_env_steps": [int(r.env_steps) for r in finished],
        "num_rollouts": len(finished),
        "env_steps": engine.times.env_steps,
        "videos": [np.stack(videos[i]) for i in sorted(videos)],
    }


def repeat_starts(contexts: ContextDataset, rollouts: int) -> ContextDataset:
    """``contexts`` with each start ``rollouts`` times in a row (start-major order).

    Rolling these out gives ``rollouts`` outcomes per start, in the order
    :func:`~torchrl_ript.trainers.stats.per_start_success` reads them.

    Examples:
        >>> import torch
        >>> contexts = ContextDataset(torch.tensor([[0.0], [1.0]]), [0, 1], ["a", "b"])
        >>> repeat_starts(contexts, 3).task_ids.tolist()
        [0, 0, 0, 1, 1, 1]
    """
    if rollouts < 1:
        raise ValueError(f"rollouts per start must be >= 1, got {rollouts}.")
    return contexts.subset(torch.arange(len(contexts)).repeat_interleave(rollouts))


def exploration_modes(modes: str | Sequence[str]) -> list[str]:
    """``modes`` (one name or a list of :data:`EXPLORATION_MODES` names) as a checked list."""
    modes = [modes] if isinstance(modes, str) else list(modes)
    unknown = [m for m in modes if m not in EXPLORATION_MODES]
    if not modes or unknown:
        raise ValueError(
            f"evaluation modes must be among {list(EXPLORATION_MODES)} (a name or a list), got {modes!r}."
        )
    return modes


def evaluate_modes(
    env: EnvBase,
    policy: Callable[[TensorDictBase], TensorDictBase],
    contexts: ContextDataset,
    *,
    horizon: int,
    modes: str | Sequence[str] = "deterministic",
    record_videos: int = 0,
    frame_key: NestedKey = ("observation", "image"),
    lockstep: bool = False,
    seed: int | None = None,
    rollouts_per_start: int = 1,
    progress: bool = True,
) -> dict:
    """:func:`evaluate_success` once per exploration mode (names of :data:`EXPLORATION_MODES`).

    The first mode is the headline: its ``success_rate``, ``per_task`` and
    ``videos`` are returned at the top level; ``by_mode`` maps every mode to
    ``{"sr", "per_task", "outcomes", "rollout_env_steps", "n", "starts",
    "rollouts_per_start", "counts"}``: ``outcomes`` the ``n`` rollouts'
    successes start by start (``rollout_env_steps`` their simulator steps),
    ``counts`` the successes per start (for paired tests:
    :func:`~torchrl_ript.trainers.pipeline.paired_results`). Every mode is
    evaluated with the same ``seed`` (see :func:`evaluate_success`).

    ``rollouts_per_start``: the sampling modes (``"random"``) roll each start
    out this many times (:func:`repeat_starts`). One sampled rollout per
    start leaves the policy's own sampling noise in every paired outcome;
    several show a gain of a few points that one cannot (README, "Eight
    rollouts per held-out start"). The ``"deterministic"`` mode is rolled out
    once per start whatever this says: from one start its rollouts repeat.

    Examples:
        >>> import torch
        >>> from torchrl.envs import SerialEnv
        >>> from torchrl_ript import ContextDataset, ContextToyVLAEnv
        >>> from torchrl_ript.modules.toy_policies import toy_laplace_actor
        >>> actor, _ = toy_laplace_actor()  # Laplace: "random" samples, "deterministic" takes the mean
        >>> contexts = ContextDataset(torch.zeros(4, 2), [0] * 4, ["track"])
        >>> out = evaluate_modes(SerialEnv(2, lambda: ContextToyVLAEnv(action_dim=2)), actor, contexts,
        ...                      horizon=4, modes=["random", "deterministic"], progress=False)
        >>> sorted(out["by_mode"]), out["success_rate"] == out["by_mode"]["random"]["sr"]
        (['deterministic', 'random'], True)
    """
    modes = exploration_modes(modes)
    if not isinstance(rollouts_per_start, int) or isinstance(rollouts_per_start, bool) or rollouts_per_start < 1:
        raise ValueError(f"rollouts_per_start must be an integer >= 1 (eval.rollouts_per_start), got "
                         f"{rollouts_per_start!r}.")
    headline, by_mode = None, {}
    for mode in modes:
        rollouts = rollouts_per_start if EXPLORATION_MODES[mode] is ExplorationType.RANDOM else 1
        result = evaluate_success(
            env, policy, repeat_starts(contexts, rollouts), horizon=horizon, exploration_type=EXPLORATION_MODES[mode],
            record_videos=record_videos if headline is None else 0, frame_key=frame_key, lockstep=lockstep,
            seed=seed, progress=progress,
        )
        by_mode[mode] = {"sr": result["success_rate"], "per_task": result["per_task"],
                         "outcomes": result["outcomes"], "rollout_env_steps": result["rollout_env_steps"],
                         "n": result["num_rollouts"], "starts": len(contexts),
                         "rollouts_per_start": rollouts,
                         "counts": per_start_success(result["outcomes"], rollouts)["counts"]}
        headline = headline or result
    return {**headline, "by_mode": by_mode}


@contextlib.contextmanager
def _seeded(seed: int | None):
    if seed is None:
        yield
        return
    # the CUDA generators too when a policy samples there
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def save_video(frames: np.ndarray, path: str | Path, *, fps: int = 10) -> Path:
    """Write ``[T, H, W, 3]`` uint8 frames as GIF (or MP4 when imageio-ffmpeg is installed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gif":
        imageio.mimsave(path, list(frames), duration=1.0 / fps, loop=0)
    else:
        imageio.mimsave(path, list(frames), fps=fps)
    return path


def _to_hwc(frame: torch.Tensor) -> np.ndarray:
    array = frame.detach().cpu()
    if array.ndim == 3 and array.shape[0] in (1, 3):
        array = array.permute(1, 2, 0)
    return array.to(torch.uint8).numpy()
