"""GroupCollector: K rollouts per context, dynamic sampling, whole trajectories."""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import torch
from tensordict import NonTensorStack, TensorDict, TensorDictBase
from tensordict.utils import NestedKey
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, ReplayBuffer
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_ript.data.context import ContextDataset
from torchrl_ript.collectors.engine import Rollout, RolloutEngine
from torchrl_ript.transforms import RLOOAdvantage, ZeroAdvantageFilter

__all__ = ["GroupCollector", "CollectionStats", "make_ript_replay_buffer"]


@dataclass
class CollectionStats:
    """What one collection iteration did (``GroupCollector.last_stats``)."""

    contexts_drawn: int = 0
    groups_completed: int = 0
    groups_kept: int = 0
    # uniform groups: rejected with dynamic sampling on; kept (and in groups_kept) when it is off
    groups_all_success: int = 0
    groups_all_failure: int = 0
    rollouts_finished: int = 0
    rollouts_kept: int = 0
    rollouts_discarded: int = 0  # in flight or past B when the batch filled up
    successes: int = 0
    decision_steps: int = 0
    env_steps: int = 0
    wall_s: float = 0.0
    policy_s: float = 0.0
    env_s: float = 0.0  # env.step: workers' sim + render, transfers, waiting
    bookkeeping_s: float = 0.0  # recording decisions, finished rollouts, buffer writes
    reset_s: float = 0.0  # context resets of freed env slots
    hit_draw_limit: bool = False

    @property
    def success_rate(self) -> float:
        return self.successes / max(self.rollouts_finished, 1)

    def as_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items()}
        out["success_rate"] = self.success_rate
        out["env_steps_per_s"] = self.env_steps / max(self.wall_s, 1e-9)
        return out


def make_ript_replay_buffer(
    batch_size: int,
    group_size: int,
    *,
    dynamic_sampling: bool = True,
    group_key: NestedKey = "group_id",
    reward_key: NestedKey = "reward",
) -> ReplayBuffer:
    """A buffer of ``batch_size`` trajectories with RLOO (+ zero-advantage filter).

    Examples:
        >>> rb = make_ript_replay_buffer(8, 4)
        >>> [type(t).__name__ for t in rb._transform]
        ['RLOOAdvantage', 'ZeroAdvantageFilter']
    """
    rb = ReplayBuffer(storage=LazyTensorStorage(batch_size), batch_size=None)
    rb.append_transform(RLOOAdvantage(group_size, group_key=group_key, reward_key=reward_key))
    if dynamic_sampling:
        rb.append_transform(ZeroAdvantageFilter(group_key=group_key, reward_key=reward_key))
    return rb


class GroupCollector(Collector):
    """Collects K rollouts from each sampled context until B are informative.

    Each iteration draws contexts from ``context_dataset``, resets K env slots
    to exactly the same context (the context-reset contract of
    :mod:`torchrl_ript.envs.common`), rolls them out with one batched policy
    call per decision step for all busy envs, and writes each finished
    trajectory through a replay buffer holding :class:`RLOOAdvantage` and
    (with ``dynamic_sampling``) :class:`ZeroAdvantageFilter`. That filter is
    the only rejection mechanism: the collector just keeps drawing contexts
    until the buffer holds ``trajs_per_batch`` (B) rows, or
    ``max_context_draws`` contexts were drawn (then it warns and returns what
    it has). A freed env starts the next pending rollout at once, so short
    rollouts do not wait for long ones.

    Each yielded trajectory is one row (``batch_size [B]``):

    - ``group_id``, ``context_id``, ``task_id``: int64;
    - ``reward`` ``[1]`` (1.0 on success), ``success`` ``[1]``, ``advantage`` ``[1]``;
    - ``language_instruction``; ``length`` (decisions) and ``env_steps``;
    - ``action_log_prob``: the trajectory log-prob (sum over decisions, Eq. 8);
    - ``steps``: a ``[B, T]`` TensorDict (T = ``max_frames_per_traj``, zero
      padded, ``("steps", "mask")`` marks real decisions) holding only what
      the loss needs: the policy's observation inputs (images stay uint8),
      the sampled action and its per-decision log-prob.

    Under TorchRL's multi-process collectors, pass a ``functools.partial`` of
    this class as ``collector_class``; each worker draws its own contexts and
    ``frames_per_batch / num_workers`` becomes its B::

        MultiSyncCollector([make_env] * 2, actor, frames_per_batch=2 * B,
                           max_frames_per_traj=T, collector_class=partial(
                               GroupCollector, context_dataset=contexts, group_size=K))

    It yields ``[num_workers, B]`` batches (``batch.reshape(-1)`` for rows).

    Args:
        create_env_fn: a batched env (e.g. :class:`~torchrl.envs.ParallelEnv`
            of single envs speaking the context contract), or a callable
            building one.
        policy: the rollout policy (e.g. from
            :func:`~torchrl_ript.modules.make_rollout_policy`).

    Keyword Args:
        context_dataset (ContextDataset): where groups start.
        group_size (int): K, rollouts per context (>= 2).
        trajs_per_batch (int): B, informative rollouts per batch (a multiple of K).
        max_frames_per_traj (int): T, decision steps per rollout at most.
        max_context_draws (int, optional): contexts drawn per batch at most.
            Defaults to ``10 * B // K``.
        dynamic_sampling (bool): drop all-success/all-failure groups. With
            ``False`` every group counts (the paper's ablation). Defaults to True.
        replay_buffer (ReplayBuffer, optional): write into this buffer (it
            should carry the RLOO/filter transforms, see
            :func:`make_ript_replay_buffer`) and yield ``None``, as TorchRL
            collectors do. Default: an internal buffer, and batches are yielded.
        total_frames (int): trajectories to collect in all; ``-1`` = forever.
        exploration_type: defaults to ``ExplorationType.RANDOM`` (sampling).
        seed (int, optional): seed of the context draws.

    Examples:
        >>> import torch
        >>> from torchrl.envs import SerialEnv
        >>> from torchrl_ript import ContextDataset, ContextToyVLAEnv, make_continuous_actor, ScaleHead
        >>> class Net(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.mean = torch.nn.Linear(4, 2)
        ...         self.scale = ScaleHead(4, (2,), init_scale=0.3)
        ...     def forward(self, state):
        ...         return self.mean(state), self.scale(state)
        >>> actor = make_continuous_actor(Net(), in_keys=[("observation", "state")], event_dims=1)
        >>> contexts = ContextDataset(torch.rand(8, 2) - 0.5, [0] * 8, ["track"], seed=0)
        >>> env = SerialEnv(4, lambda: ContextToyVLAEnv(action_dim=2, max_steps=3))
        >>> collector = GroupCollector(env, actor, context_dataset=contexts, group_size=4,
        ...                            trajs_per_batch=4, max_frames_per_traj=3, seed=0,
        ...                            dynamic_sampling=False)
        >>> batch = next(iter(collector))
        >>> batch.batch_size, batch["steps", "observation", "state"].shape
        (torch.Size([4]), torch.Size([4, 3, 4]))
        >>> collector.shutdown()
    """

    #: record decisions into a preallocated [n_slots, T] buffer (one write per
    #: step for all slots) instead of per-slot records stacked at the end;
    #: both give identical batches (set False to compare)
    batched_record: bool = True

    @dataclass
    class _AcceptedKeys:
        """Keys the collector reads and writes (change with ``set_keys``).

        Attributes:
            action: the env's action entry, written by the policy.
            sampled_action: what the loss scores (e.g. ``"action_tokens"`` for a
                token actor); defaults to ``action``.
            log_prob: the per-decision log-prob written by the actor.
            instruction: the language instruction (stored once per trajectory).
            done, success, reward, task_id: env outputs.
        """

        action: NestedKey = "action"
        sampled_action: NestedKey | None = None
        log_prob: NestedKey = "action_log_prob"
        instruction: NestedKey = "language_instruction"
        done: NestedKey = "done"
        success: NestedKey = "success"
        reward: NestedKey = "reward"
        task_id: NestedKey = "task_id"
        env_steps: NestedKey = "env_steps"

    def __init__(
        self,
        create_env_fn,
        policy=None,
        *,
        context_dataset: ContextDataset,
        group_size: int,
        trajs_per_batch: int | None = None,
        max_frames_per_traj: int,
        max_context_draws: int | None = None,
        dynamic_sampling: bool = True,
        replay_buffer: ReplayBuffer | None = None,
        total_frames: int = -1,
        exploration_type: ExplorationType = ExplorationType.RANDOM,
        observation_keys: list[NestedKey] | None = None,
        seed: int | None = None,
        worker_idx: int | None = None,
        frames_per_batch: int | None = None,
        **kwargs,
    ) -> None:
        # Under TorchRL's multi-process collectors the worker is built with the
        # runner's generic arguments: frames_per_batch is then this worker's B,
        # and the layout options below are fixed by the trajectory format.
        if trajs_per_batch is None:
            trajs_per_batch = frames_per_batch
        if trajs_per_batch is None:
            raise TypeError("GroupCollector needs trajs_per_batch= (B, rollouts per batch).")
        for fixed in ("use_buffers", "trust_policy", "track_traj_ids", "split_trajs",
                      "trajs_per_write", "traj_pool", "reset_at_each_iter", "compact_obs"):
            kwargs.pop(fixed, None)
        for maybe_none in ("postproc", "init_random_frames", "interruptor"):
            if kwargs.get(maybe_none, 0) is None:
                kwargs.pop(maybe_none)
        _check_sizes(group_size, trajs_per_batch, max_frames_per_traj, max_context_draws)
        if not isinstance(context_dataset, ContextDataset):
            raise TypeError(
                f"context_dataset must be a ContextDataset, got {type(context_dataset).__name__}."
            )
        self.context_dataset = context_dataset
        self.group_size = int(group_size)
        self.batch_trajs = int(trajs_per_batch)
        self.horizon = int(max_frames_per_traj)
        self.max_context_draws = (
            int(max_context_draws)
            if max_context_draws is not None
            else 10 * self.batch_trajs // self.group_size
        )
        self.dynamic_sampling = bool(dynamic_sampling)
        self._user_rb = replay_buffer is not None
        self._rb = (
            replay_buffer
            if replay_buffer is not None  # an empty buffer is falsy
            else make_ript_replay_buffer(
                self.batch_trajs, self.group_size, dynamic_sampling=self.dynamic_sampling
            )
        )
        self._generator = torch.Generator()
        if seed is not None:
            # workers of a multi-process collector draw different contexts
            self._generator.manual_seed(seed + (worker_idx or 0))
        self._tensor_keys = self._AcceptedKeys()
        self._observation_keys = observation_keys
        self._next_group = 0
        self._next_traj = 0
        # group and trajectory ids stay unique across workers of a multi-process collector
        self._group_offset = 0 if worker_idx is None else int(worker_idx) << 40
        self.last_stats = CollectionStats()
        super().__init__(
            create_env_fn,
            policy,
            frames_per_batch=self.batch_trajs,
            total_frames=total_frames,
            exploration_type=exploration_type,
            replay_buffer=replay_buffer,
            use_buffers=False,
            trust_policy=True,
            track_traj_ids=False,
            worker_idx=worker_idx,
            auto_register_policy_transforms=kwargs.pop("auto_register_policy_transforms", False),
            **kwargs,
        )
        if len(self.env.batch_size) != 1:
            raise ValueError(
                "GroupCollector needs a batched env with one batch dim (e.g. ParallelEnv), "
                f"got batch_size {tuple(self.env.batch_size)}."
            )

    # -- keys -----------------------------------------------------------------
    @property
    def tensor_keys(self) -> _AcceptedKeys:
        return self._tensor_keys

    def set_keys(self, **kwargs) -> GroupCollector:
        """Change the keys read and written, e.g. ``set_keys(sampled_action="action_tokens")``."""
        for key, value in kwargs.items():
            if key not in self._AcceptedKeys.__dataclass_fields__:
                raise KeyError(
                    f"{key!r} is not a key of {type(self).__name__}; valid: "
                    f"{sorted(self._AcceptedKeys.__dataclass_fields__)}."
                )
            setattr(self._tensor_keys, key, value)
        return self

    @property
    def replay_buffer_with_transforms(self) -> ReplayBuffer:
        return self._rb

    def _stored_observation_keys(self) -> list[NestedKey]:
        if self._observation_keys is not None:
            return list(self._observation_keys)
        keys = getattr(self.policy, "in_keys", None)
        if keys is None:
            raise ValueError(
                "cannot tell which observations the policy reads: pass observation_keys=."
            )
        return [key for key in keys if key != self._tensor_keys.instruction]

    # -- collection -------------------------------------------------------------
    def rollout(self) -> TensorDictBase | None:
        """Collect one batch of B informative trajectories (see class doc)."""
        stats = CollectionStats()
        start = time.perf_counter()
        rb = self._rb
        target = len(rb) + self.batch_trajs if self._user_rb else self.batch_trajs
        if not self._user_rb:
            rb.empty()
        self._clear_pending()
        filt = _find(rb, ZeroAdvantageFilter)
        if filt is not None:
            filt.reset_counters()
        keys = self._tensor_keys
        sampled_key = keys.sampled_action or keys.action
        obs_keys = self._stored_observation_keys()
        queue: list[Rollout] = []

        def next_rollout() -> Rollout | None:
            if not queue and stats.contexts_drawn < self.max_context_draws:
                queue.extend(self._draw_group(stats))
            return queue.pop(0) if queue else None

        def record(rollout: Rollout, out: TensorDictBase, _next: TensorDictBase) -> None:
            rollout.steps.append(_decision_record(out, obs_keys, sampled_key, keys.log_prob))

        # fast path: every decision goes straight into a preallocated
        # [n_slots, T] buffer (one indexed write per key and step); a finished
        # rollout's row is copied out once
        buffer = _StepBuffer(self.env.batch_size[0], self.horizon, (*obs_keys, sampled_key, keys.log_prob))

        def record_batch(slot_ids, rollouts, out, _next) -> None:
            for slot, rollout in zip(slot_ids, rollouts):
                rollout.slot = slot
            buffer.write(slot_ids, [r.decisions for r in rollouts], out)

        def on_finish(rollout: Rollout) -> bool:
            stats.rollouts_finished += 1
            stats.successes += int(rollout.success)
            before = len(rb)
            if self.batched_record:
                rollout.steps = buffer.take(rollout.slot, rollout.decisions)
            rb.extend(self._trajectory(rollout))
            if len(rb) > before or _group_completed(rb, rollout.group_id):
                stats.groups_completed += 1
            stats.rollouts_kept += len(rb) - before
            return len(rb) >= target

        engine = RolloutEngine(
            self.env,
            self.policy,
            self.context_dataset,
            horizon=self.horizon,
            record=None if self.batched_record else record,
            record_batch=record_batch if self.batched_record else None,
            action_key=keys.action,
            done_key=keys.done,
            success_key=keys.success,
            instruction_key=keys.instruction,
            env_steps_key=keys.env_steps,
            generator=self._generator,
        )
        with torch.no_grad(), set_exploration_type(self.exploration_type):
            abandoned = engine.run(next_rollout, on_finish)
        stats.rollouts_discarded = len(abandoned)
        stats.decision_steps = engine.times.decision_steps
        stats.env_steps = engine.times.env_steps
        stats.policy_s = engine.times.policy_s
        stats.env_s = engine.times.env_s
        stats.bookkeeping_s = engine.times.bookkeeping_s
        stats.reset_s = engine.times.reset_s
        if len(rb) < target:
            stats.hit_draw_limit = True
            warnings.warn(
                f"GroupCollector drew max_context_draws={self.max_context_draws} contexts "
                f"but holds only {len(rb) - (target - self.batch_trajs)} of "
                f"{self.batch_trajs} informative rollouts: the policy solves or fails "
                "(almost) every context it was given. Returning what it has.",
                RuntimeWarning,
                stacklevel=2,
            )
        if filt is not None:
            stats.groups_all_success = filt.dropped_all_success
            stats.groups_all_failure = filt.dropped_all_failure
            stats.groups_kept = filt.kept_groups
        else:  # nothing is rejected: count the complete uniform (zero-advantage) groups kept
            stats.groups_kept = stats.groups_completed
            if len(rb):
                rows = rb[: len(rb)]
                stats.groups_all_success, stats.groups_all_failure = _uniform_groups(
                    rows["group_id"], rows["reward"], self.group_size
                )
        self._clear_pending()
        stats.wall_s = time.perf_counter() - start
        self.last_stats = stats
        if self._user_rb:
            self._increment_frames(stats.rollouts_kept)
            return None
        if len(rb) == 0:
            return TensorDict(batch_size=[0])
        return rb[: len(rb)]

    def _draw_group(self, stats: CollectionStats) -> list[Rollout]:
        context = self.context_dataset.sample(1, generator=self._generator)
        stats.contexts_drawn += 1
        group = self._group_offset + self._next_group
        self._next_group += 1
        return [
            Rollout(int(context["context_id"][0]), int(context["task_id"][0]), group)
            for _ in range(self.group_size)
        ]

    def _trajectory(self, slot: Rollout) -> TensorDict:
        self._next_traj += 1
        success = slot.success
        if isinstance(slot.steps, TensorDictBase):  # batched record: already [T], zero padded
            steps = slot.steps
            length = slot.decisions
        else:
            steps = torch.stack(slot.steps)
            length = steps.shape[0]
            if length < self.horizon:
                pad = steps[:1].expand(self.horizon - length).clone().zero_()
                steps = torch.cat([steps, pad])
        mask = torch.zeros(self.horizon, dtype=torch.bool)
        mask[:length] = True
        steps.set("mask", mask)
        log_prob = steps.get(self._tensor_keys.log_prob)
        traj_log_prob = (log_prob * mask.to(log_prob.dtype)).sum()
        traj = TensorDict(
            {
                "group_id": torch.tensor(slot.group_id),
                "context_id": torch.tensor(slot.context_id),
                "task_id": torch.tensor(slot.task_id),
                "reward": torch.tensor([float(success)]),
                "success": torch.tensor([success]),
                "length": torch.tensor(length),
                "env_steps": torch.tensor(slot.env_steps),
                # TorchRL's trajectory id (multi-process collectors count these)
                ("collector", "traj_ids"): torch.tensor(self._group_offset + self._next_traj),
                self._tensor_keys.log_prob: traj_log_prob,
                "steps": steps,
            },
            batch_size=[],
        )
        traj = traj.unsqueeze(0)
        traj.set(self._tensor_keys.instruction, NonTensorStack(slot.instruction))
        return traj

    def _clear_pending(self) -> None:
        for transform in self._rb._transform or []:
            if hasattr(transform, "clear_pending"):
                transform.clear_pending()

    def shutdown(self, *args, **kwargs) -> None:
        if not self.env.is_closed:
            self.env.close()
        super().shutdown(*args, **kwargs)


def _check_sizes(group_size, batch, horizon, max_draws) -> None:
    if int(group_size) < 2:
        raise ValueError(f"group_size (K) must be >= 2 for leave-one-out advantages, got {group_size}.")
    if int(batch) < 1 or int(batch) % int(group_size):
        raise ValueError(
            f"trajs_per_batch (B={batch}) must be a positive multiple of group_size "
            f"(K={group_size}): e.g. B={int(group_size) * max(1, int(batch) // int(group_size))}."
        )
    if int(horizon) < 1:
        raise ValueError(f"max_frames_per_traj must be >= 1, got {horizon}.")
    if max_draws is not None and int(max_draws) < int(batch) // int(group_size):
        raise ValueError(
            f"max_context_draws={max_draws} cannot fill B={batch} with groups of "
            f"K={group_size}: it must be >= B/K = {int(batch) // int(group_size)}."
        )


def _decision_record(out: TensorDictBase, obs_keys, sampled_key, log_prob_key) -> TensorDict:
    record = out.select(*obs_keys, sampled_key, log_prob_key, strict=False)
    missing = [k for k in (*obs_keys, sampled_key, log_prob_key) if k not in record.keys(True)]
    if missing:
        raise KeyError(
            f"the policy output lacks {missing}: the collector stores the observations "
            "the policy reads, the sampled action and its log-prob. Check the actor's "
            "keys or GroupCollector.set_keys(...)."
        )
    return record.clone()


class _StepBuffer:
    """Decision records of the busy slots, ``[n_slots, T]``, allocated on first write."""

    def __init__(self, n_slots: int, horizon: int, keys) -> None:
        self.n_slots, self.horizon, self.keys = n_slots, horizon, list(keys)
        self.td: TensorDict | None = None
        self.leaves: list | None = None

    def write(self, slot_ids: list[int], times: list[int], out: TensorDictBase) -> None:
        if self.td is None:
            record = _decision_record(out[:1], self.keys[:-2], self.keys[-2], self.keys[-1])[0]
            self.td = record.expand(self.n_slots, self.horizon).clone().zero_()
            self.leaves = [key for key in self.td.keys(True, True)]
        ids = torch.tensor(slot_ids)
        ts = torch.tensor(times)
        for key in self.leaves:
            self.td.get(key)[ids, ts] = out.get(key)

    def take(self, slot: int, length: int) -> TensorDict:
        steps = self.td[slot].clone()
        if length < self.horizon:
            steps[length:].zero_()
        return steps


def _find(rb: ReplayBuffer, cls):
    for transform in rb._transform or []:
        if isinstance(transform, cls):
            return transform
    return None


def _uniform_groups(group_ids: torch.Tensor, rewards: torch.Tensor, group_size: int) -> tuple[int, int]:
    """(all-success, all-failure) counts among the complete groups of a batch."""
    ids, inverse, counts = group_ids.reshape(-1).unique(return_inverse=True, return_counts=True)
    rewards = rewards.reshape(len(inverse), -1)[:, 0]
    wins = torch.zeros(len(ids), dtype=rewards.dtype).index_add_(0, inverse, rewards)
    complete = counts == group_size
    return int((complete & (wins == group_size)).sum()), int((complete & (wins == 0)).sum())


def _group_completed(rb: ReplayBuffer, group_id: int) -> bool:
    # a group that was just scored and dropped is no longer pending anywhere
    for transform in rb._transform or []:
        queue = getattr(transform, "_queue", None)
        if queue is not None and group_id in queue.pending:
            return False
    return True
