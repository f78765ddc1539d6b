"""GroupCollector: K rollouts per context, dynamic sampling, whole trajectories."""
from __future__ import annotations

import time
import warnings
from collections import deque
from dataclasses import dataclass, field

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, ReplayBuffer
from torchrl.envs import EnvBase, Transform
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_ript.collectors.engine import EngineTimes, Rollout, RolloutEngine, as_env_pool
from torchrl_ript.collectors.layout import StepRecorder, trajectory_row
from torchrl_ript.collectors.stats import CollectionStats
from torchrl_ript.config import check_group_sizes, context_draw_limit
from torchrl_ript.data.context import ContextDataset
from torchrl_ript.transforms import ContextOutcomeFeed, RLOOAdvantage, ZeroAdvantageFilter

__all__ = ["GroupBatches", "GroupCollector", "CollectionStats", "make_ript_replay_buffer"]


def make_ript_replay_buffer(
    trajs_per_batch: int,
    group_size: int,
    *,
    dynamic_sampling: bool = True,
    advantage: Transform | None = None,
    outcome_feed: ContextDataset | None = None,
    group_key: NestedKey = "group_id",
    reward_key: NestedKey = "reward",
    context_key: NestedKey = "context_id",
) -> ReplayBuffer:
    """The buffer a RIPT batch is written through: ``trajs_per_batch`` trajectory rows.

    On write each row passes, in this order: the ``outcome_feed`` (a
    :class:`~torchrl_ript.transforms.ContextOutcomeFeed` reporting every
    finished rollout to that dataset's sampler), the ``advantage`` (default
    :class:`~torchrl_ript.transforms.RLOOAdvantage`, which holds partial
    groups), then :class:`~torchrl_ript.transforms.ZeroAdvantageFilter`, which
    judges each complete group once: it drops the uniform ones
    (``dynamic_sampling``) or only counts them. The transforms are appended
    in the reverse order, since a replay buffer runs write-side transforms
    from the last appended to the first. The local and the Ray collectors
    build their buffers here.

    Examples:
        >>> rb = make_ript_replay_buffer(8, 4)
        >>> [type(t).__name__ for t in rb.transform]  # appended; written through in reverse
        ['ZeroAdvantageFilter', 'RLOOAdvantage']
    """
    rb = ReplayBuffer(storage=LazyTensorStorage(trajs_per_batch), batch_size=None)
    rb.append_transform(ZeroAdvantageFilter(group_key=group_key, reward_key=reward_key, drop=dynamic_sampling))
    if advantage is None:
        advantage = RLOOAdvantage(group_size, group_key=group_key, reward_key=reward_key)
    rb.append_transform(advantage)
    if outcome_feed is not None:
        rb.append_transform(ContextOutcomeFeed(outcome_feed, context_key=context_key, reward_key=reward_key))
    return rb


@dataclass
class _Group:
    """A drawn context and the rows of its finished rollouts (released in draw order)."""

    context_id: int
    task_id: int
    starts: torch.Tensor  # [K, D] the members' exact initial states
    rows: dict[int, TensorDict] = field(default_factory=dict)  # member -> trajectory row
    started: int = 0  # members started in the current attempt
    version: int = 0  # policy version when its first member started
    attempt: int = 0  # bumped when the group is rerun: older members are ignored


class GroupBatches:
    """Mixin of the group collectors: ``trajs_per_batch`` is B, served by :meth:`iterator`.

    B has TorchRL's meaning of ``trajs_per_batch`` (whole trajectories per
    batch), but TorchRL's ``__iter__`` hands a collector with that attribute
    set to its own trajectory splitter; these batches come from the groups.
    """

    def __iter__(self):
        self._iteration_started = True
        try:
            yield from self.iterator()
        except Exception:
            self.shutdown()
            raise


class GroupCollector(GroupBatches, Collector):
    """Collects K rollouts from each sampled context until B are informative.

    Each iteration draws contexts from ``context_dataset`` and runs K rollouts
    of each from exactly the same initial state on a TorchRL
    :class:`~torchrl.envs.AsyncEnvPool` (see
    :class:`~torchrl_ript.collectors.engine.RolloutEngine`: slots step without
    a barrier, one policy call per decision step batched over the ready
    slots, a freed slot starts the next pending rollout at once). Groups are
    judged in **draw order** once all their K rollouts are in: each is written
    through a replay buffer holding :class:`RLOOAdvantage` and
    :class:`ZeroAdvantageFilter` (with ``dynamic_sampling`` it drops uniform
    groups: the only rejection mechanism), until this iteration wrote B rows (or ``max_context_draws``
    contexts were drawn: then it warns and returns what it has). The buffer
    comes from :func:`make_ript_replay_buffer` (``advantage`` replaces RLOO;
    a context sampler that learns from outcomes, e.g. ``"adaptive"``, gets a
    :class:`~torchrl_ript.transforms.ContextOutcomeFeed`), and its filter's
    counters are the batch's group statistics. Judging in
    draw order makes a batch independent of the slots' timing: a seeded
    deterministic policy gets identical batches however fast each env runs.

    What was simulated but not used when B is reached (rollouts still running,
    groups after the last one kept): with ``keep_in_flight=False`` (default)
    the rollouts are dropped (``rollouts_discarded``) and those contexts rerun
    first in the next batch, so no drawn context is skipped; with
    ``keep_in_flight=True`` they continue into the next batch with the
    log-probs of the policy that sampled them, each row records the
    ``policy_version`` it started under (the collector's ``weights_version``,
    which counts the batches collected: the trainer updates the weights
    between batches), and groups more than ``max_staleness`` versions old
    are rerun instead.

    An env worker process that dies is replaced (``max_env_restarts`` times at
    most); the groups it was running are rerun from their contexts, so every
    yielded group is complete and exact.

    Each yielded trajectory is one row (``batch_size [B]``), see
    :mod:`torchrl_ript.collectors.layout`: ``group_id``, ``context_id``,
    ``task_id``, ``reward`` ``[1]``, ``success`` ``[1]``, ``advantage`` ``[1]``,
    ``language_instruction``, ``length``, ``env_steps``, ``policy_version``,
    ``action_log_prob`` (sum over decisions) and ``steps`` ``[B, T]``.

    Under TorchRL's multi-process collectors, pass a ``functools.partial`` of
    this class as ``collector_class``; each worker draws its own contexts and
    ``frames_per_batch / num_workers`` becomes its B::

        MultiSyncCollector([make_env] * 2, actor, frames_per_batch=2 * B,
                           max_frames_per_traj=T, collector_class=partial(
                               GroupCollector, context_dataset=contexts, group_size=K))

    Args:
        create_env_fn: an :class:`~torchrl.envs.AsyncEnvPool` of context envs,
            a ``ParallelEnv``/``SerialEnv`` (rebuilt as a pool, see
            :func:`~torchrl_ript.collectors.engine.as_env_pool`), or a callable
            building one.
        policy: the rollout policy (e.g. from
            :func:`~torchrl_ript.modules.make_rollout_policy`).

    Keyword Args:
        context_dataset (ContextDataset): where groups start.
        group_size (int): K, rollouts per context (>= 2).
        trajs_per_batch (int): B, informative rollouts per batch (a multiple of K).
        max_frames_per_traj (int): T, decision steps per rollout at most.
        max_context_draws (int, optional): new contexts drawn per batch at most.
            Defaults to ``10 * B // K``.
        dynamic_sampling (bool): drop all-success/all-failure groups. With
            ``False`` every group counts (the paper's ablation). Defaults to True.
        keep_in_flight (bool): carry unused rollouts over to the next batch
            (see above). Defaults to False.
        max_staleness (int): with ``keep_in_flight``, the oldest policy
            version (batches behind) a kept group may have started under.
            Defaults to 1.
        max_env_restarts (int): dead env workers replaced at most this many
            times before an error. Defaults to 3.
        lockstep (bool): step the env slots with a barrier (see
            :class:`~torchrl_ript.collectors.engine.RolloutEngine`): slower, but
            runs with a stochastic policy become bit-reproducible (e.g. an
            exact resume from a checkpoint). Defaults to False.
        advantage (Transform, optional): the advantage transform of the
            internal buffer. Defaults to :class:`~torchrl_ript.transforms.RLOOAdvantage`.
        replay_buffer (ReplayBuffer, optional): write into this buffer (build
            it with :func:`make_ript_replay_buffer`; the uniform-group
            statistics come from its :class:`~torchrl_ript.transforms.ZeroAdvantageFilter`,
            and stay 0 without one) and yield ``None``, as TorchRL collectors
            do. Default: an internal buffer, and batches are yielded.
        total_frames (int): trajectories to collect in all; ``-1`` = forever.
        exploration_type: defaults to ``ExplorationType.RANDOM`` (sampling).
        observation_keys (list of keys, optional): the policy inputs to store
            (default: the policy's ``in_keys`` minus the instruction).
        seed (int, optional): seed of the context draws.
        stream_index (int, optional): which of several collectors this is
            (default: TorchRL's ``worker_idx``, else 0): its context draws are
            seeded ``seed + stream_index`` and its group/trajectory ids live in
            their own range (``stream_index << 40``), so collectors of one run
            never share ids.
        auto_version (bool): count ``weights_version`` up after every batch
            (the in-process trainer updates the weights between batches).
            ``False``: the owner sets ``weights_version`` itself (e.g. a Ray
            worker, from the learner's update count). Defaults to True.

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

    @dataclass
    class _AcceptedKeys:
        """Keys the collector reads and writes (change with ``set_keys``).

        Attributes:
            action: the env's action entry, written by the policy.
            sampled_action: what the loss scores (e.g. ``"action_tokens"`` for a
                token actor); defaults to ``action``.
            log_prob: the per-decision log-prob written by the actor.
            instruction: the language instruction (stored once per trajectory).
            done, success, env_steps: env outputs (``success`` is also the
                trajectory's success entry).
            reward: the trajectory reward (1.0 on success) the advantage reads.
            group_id, context_id, task_id: the trajectory's ids.
        """

        action: NestedKey = "action"
        sampled_action: NestedKey | None = None
        log_prob: NestedKey = "action_log_prob"
        instruction: NestedKey = "language_instruction"
        done: NestedKey = "done"
        success: NestedKey = "success"
        reward: NestedKey = "reward"
        group_id: NestedKey = "group_id"
        context_id: NestedKey = "context_id"
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
        keep_in_flight: bool = False,
        max_staleness: int = 1,
        max_env_restarts: int = 3,
        lockstep: bool = False,
        advantage: Transform | None = None,
        replay_buffer: ReplayBuffer | None = None,
        total_frames: int = -1,
        exploration_type: ExplorationType = ExplorationType.RANDOM,
        observation_keys: list[NestedKey] | None = None,
        seed: int | None = None,
        stream_index: int | None = None,
        auto_version: bool = True,
        worker_idx: int | None = None,
        frames_per_batch: int | None = None,
        create_env_kwargs: dict | None = None,
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
                      "trajs_per_write", "traj_pool", "reset_at_each_iter", "compact_obs",
                      "trajs_per_batch"):
            kwargs.pop(fixed, None)
        for maybe_none in ("postproc", "init_random_frames", "interruptor"):
            if kwargs.get(maybe_none, 0) is None:
                kwargs.pop(maybe_none)
        check_group_sizes(group_size, trajs_per_batch, max_context_draws=max_context_draws)
        if int(max_frames_per_traj) < 1:
            raise ValueError(f"max_frames_per_traj must be >= 1, got {max_frames_per_traj}.")
        if int(max_staleness) < 0:
            raise ValueError(f"max_staleness must be >= 0 policy versions, got {max_staleness}.")
        if not isinstance(context_dataset, ContextDataset):
            raise TypeError(
                f"context_dataset must be a ContextDataset, got {type(context_dataset).__name__}."
            )
        self.context_dataset = context_dataset
        self.group_size = int(group_size)
        trajs_per_batch = int(trajs_per_batch)
        self.horizon = int(max_frames_per_traj)
        self.max_context_draws = context_draw_limit(max_context_draws, trajs_per_batch, self.group_size)
        self.dynamic_sampling = bool(dynamic_sampling)
        self.keep_in_flight = bool(keep_in_flight)
        self.max_staleness = int(max_staleness)
        self.max_env_restarts = int(max_env_restarts)
        self.lockstep = bool(lockstep)
        self._user_rb = replay_buffer is not None
        self._advantage = advantage
        # the internal buffer is built on first use, with the keys set by then (set_keys)
        self._rb = replay_buffer
        stream = int(stream_index if stream_index is not None else (worker_idx or 0))
        if stream < 0:
            raise ValueError(f"stream_index must be >= 0, got {stream_index}.")
        self.stream_index = stream
        self.auto_version = bool(auto_version)
        self._generator = torch.Generator()
        if seed is not None:
            # collectors of one run (multi-process or Ray workers) draw different contexts
            self._generator.manual_seed(seed + stream)
        self._tensor_keys = self._AcceptedKeys()
        self._observation_keys = observation_keys
        # group and trajectory ids stay unique across the collectors of one run
        self._id_offset = stream << 40
        self._next_group = 0
        self._groups: dict[int, _Group] = {}
        self._order: deque[int] = deque()  # unreleased group ids, in draw order
        self._pending: deque[Rollout] = deque()  # rollouts not started yet
        self.weights_version = 0
        self.trajectories_collected = 0
        self.last_stats = CollectionStats()
        self._engine: RolloutEngine | None = None
        self._recorder: StepRecorder | None = None
        super().__init__(
            _as_pool(create_env_fn, create_env_kwargs),
            policy,
            frames_per_batch=trajs_per_batch,
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
        # set after the base, which resets it (see GroupBatches)
        self.trajs_per_batch = trajs_per_batch

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
        if not self._user_rb:
            self._rb = None  # rebuilt with the new keys (it holds nothing between batches)
        return self

    @property
    def replay_buffer_with_transforms(self) -> ReplayBuffer:
        """The buffer batches are written through (built here on first use)."""
        if self._rb is None:
            keys = self._tensor_keys
            sampler = self.context_dataset.context_sampler
            self._rb = make_ript_replay_buffer(
                self.trajs_per_batch, self.group_size, dynamic_sampling=self.dynamic_sampling,
                advantage=self._advantage,
                outcome_feed=self.context_dataset if sampler.learns_from_outcomes else None,
                group_key=keys.group_id, reward_key=keys.reward, context_key=keys.context_id,
            )
        return self._rb

    def _stored_observation_keys(self) -> list[NestedKey]:
        if self._observation_keys is not None:
            return list(self._observation_keys)
        keys = getattr(self.policy, "in_keys", None)
        if keys is None:
            raise ValueError("cannot tell which observations the policy reads: pass observation_keys=.")
        return [key for key in dict.fromkeys(keys) if key != self._tensor_keys.instruction]

    # -- context stream --------------------------------------------------------------
    def state_dict(self) -> dict:
        """The context stream's state (generator, next group id, groups to rerun, version).

        With ``keep_in_flight=False`` this is all a resumed run needs to draw
        exactly the contexts an uninterrupted run would; rollouts carried over
        with ``keep_in_flight=True`` are rerun from their contexts instead.
        """
        return {
            "generator": self._generator.get_state(),
            "next_group": self._next_group,
            "weights_version": self.weights_version,
            "trajectories_collected": self.trajectories_collected,
            "unreleased": [(gid, self._groups[gid].context_id, self._groups[gid].task_id,
                            self._groups[gid].starts) for gid in self._order],
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (before the next batch is collected)."""
        self._generator.set_state(state["generator"])
        self._next_group = int(state["next_group"])
        self.weights_version = int(state["weights_version"])
        self.trajectories_collected = int(state["trajectories_collected"])
        if self._engine is not None:
            self._engine.abandon()
        self._groups, self._order, self._pending = {}, deque(), deque()
        for gid, context_id, task_id, starts in state["unreleased"]:
            self._groups[gid] = _Group(context_id, task_id, starts=starts)
            self._order.append(gid)
            self._pending.extend(self._members(gid))

    def _add_group(self, gid: int, context_id: int, task_id: int) -> None:
        # the K starts are fixed now, in draw order (with per-draw noise each
        # member gets its own), so they never depend on which slot is free first
        starts = self.context_dataset.initial_states(torch.full((self.group_size,), context_id),
                                                     generator=self._generator)
        self._groups[gid] = _Group(context_id, task_id, starts=starts)
        self._order.append(gid)
        self._pending.extend(self._members(gid))

    def _members(self, gid: int) -> list[Rollout]:
        group = self._groups[gid]
        return [Rollout(group.context_id, group.task_id, gid, m, attempt=group.attempt,
                        initial_state=group.starts[m]) for m in range(self.group_size)]

    def _draw_group(self) -> None:
        context = self.context_dataset.sample(1, generator=self._generator)
        gid = self._id_offset + self._next_group
        self._next_group += 1
        self._add_group(gid, int(context["context_id"][0]), int(context["task_id"][0]))

    def _rerun_groups(self, gids) -> int:
        """Forget what these groups collected and queue them again (in draw order); rows dropped."""
        gids = set(gids)
        dropped = 0
        for gid in gids:
            group = self._groups[gid]
            dropped += len(group.rows)
            group.rows.clear()
            group.started = 0
            group.attempt += 1
        self._pending = deque(r for r in self._pending if r.group_id not in gids)
        fresh = [r for g in self._order if g in gids for r in self._members(g)]
        self._pending.extendleft(reversed(fresh))
        return dropped

    # -- collection -------------------------------------------------------------
    def iterator(self):
        """Yield batches (or ``None`` with a user replay buffer) until ``total_frames`` trajectories."""
        while self.trajectories_collected < self.total_frames:
            yield self.rollout()

    def rollout(self) -> TensorDictBase | None:
        """Collect one batch of B informative trajectories (see class doc)."""
        start = time.perf_counter()
        stats = CollectionStats()
        keys = self._tensor_keys
        rb = self.replay_buffer_with_transforms
        if not self._user_rb:
            rb.empty()
        engine = self._get_engine()
        times_before = EngineTimes(**engine.times.__dict__)
        version = self.weights_version
        written = 0
        # the buffer's filter judges each group: the batch's uniform-group counts are its counters' changes
        judge = _group_filter(rb)
        judged_before = (judge.dropped_all_success, judge.dropped_all_failure) if judge is not None else None

        # groups carried over from the previous batch and now too stale are rerun
        stale = [g for g in self._order if self._groups[g].started
                 and version - self._groups[g].version > self.max_staleness]
        if stale:
            stats.rollouts_discarded += self._rerun_groups(stale)

        def next_rollout() -> Rollout | None:
            if not self._pending:
                if stats.contexts_drawn >= self.max_context_draws:
                    return None
                self._draw_group()
                stats.contexts_drawn += 1
            rollout = self._pending.popleft()
            rollout.policy_version = version
            group = self._groups[rollout.group_id]
            if not group.started:
                group.version = version
            group.started += 1
            return rollout

        def on_decision(slots, rollouts, out) -> None:
            log_prob = out.get(keys.log_prob, None)
            if log_prob is not None and not torch.isfinite(log_prob).all():
                raise ValueError(
                    f"the policy wrote non-finite log-probs under {keys.log_prob!r} for the actions it "
                    "sampled: PPO ratios would be NaN. Check the actor's distribution parameters "
                    "(e.g. a scale of 0, or NaN logits from a diverged update)."
                )
            self._recorder.write(slots, [r.decisions for r in rollouts], out)

        def on_finish(rollout: Rollout) -> bool:
            nonlocal written
            stats.rollouts_finished += 1
            stats.successes += int(rollout.success)
            group = self._groups.get(rollout.group_id)
            if group is None or group.attempt != rollout.attempt:  # its group was rerun meanwhile
                stats.rollouts_discarded += 1
                return False
            group.rows[rollout.member] = self._row(rollout)
            while self._order and len(self._groups[self._order[0]].rows) == self.group_size:
                gid = self._order.popleft()
                written += self._release(gid, self._groups.pop(gid), rb, stats, version)
                if written >= self.trajs_per_batch:
                    return True
            return False

        def on_lost(rollouts: list[Rollout]) -> None:
            stats.rollouts_lost += len(rollouts)
            stats.rollouts_discarded += self._rerun_groups({r.group_id for r in rollouts})

        with torch.no_grad(), set_exploration_type(self.exploration_type):
            engine.on_decision = on_decision
            abandoned = engine.run(next_rollout, on_finish, keep_in_flight=self.keep_in_flight,
                                   on_lost=on_lost)
        self.env = engine.env  # replaced if dead workers were restarted
        if self.keep_in_flight:
            stats.rollouts_carried = len(engine.in_flight) + sum(len(self._groups[g].rows) for g in self._order)
        else:
            stats.rollouts_discarded += len(abandoned) + self._rerun_groups(list(self._order))
        self._fill_times(stats, engine.times, times_before)
        if written < self.trajs_per_batch:
            stats.hit_draw_limit = True
            warnings.warn(
                f"GroupCollector drew max_context_draws={self.max_context_draws} contexts "
                f"but holds only {written} of {self.trajs_per_batch} informative rollouts: the "
                "policy solves or fails (almost) every context it was given. Returning what it has.",
                RuntimeWarning,
                stacklevel=2,
            )
        stats.rollouts_kept = written
        if judge is not None:
            stats.groups_all_success = judge.dropped_all_success - judged_before[0]
            stats.groups_all_failure = judge.dropped_all_failure - judged_before[1]
        stats.wall_s = time.perf_counter() - start
        self.last_stats = stats
        if self.auto_version:
            self.weights_version += 1
        self.trajectories_collected += written
        if self._user_rb:
            return None
        if len(rb) == 0:
            return TensorDict(batch_size=[0])
        # a copy: the buffer's storage is reused (overwritten) by the next batch
        return rb[: len(rb)].clone()

    def _get_engine(self) -> RolloutEngine:
        keys = self._tensor_keys
        if self._engine is None:
            self._engine = RolloutEngine(
                self.env, self.policy, self.context_dataset, horizon=self.horizon,
                action_key=keys.action, done_key=keys.done, success_key=keys.success,
                instruction_key=keys.instruction, env_steps_key=keys.env_steps,
                generator=self._generator, max_restarts=self.max_env_restarts,
                extra_keys=self._stored_observation_keys(), lockstep=self.lockstep,
            )
            self._recorder = StepRecorder(
                self._engine.num_slots, self.horizon, self._stored_observation_keys(),
                keys.sampled_action or keys.action, keys.log_prob,
            )
        self._engine.policy = self.policy
        return self._engine

    def _row(self, rollout: Rollout) -> TensorDict:
        keys = self._tensor_keys
        return trajectory_row(
            self._recorder.take(rollout.slot, rollout.decisions),
            length=rollout.decisions, group_id=rollout.group_id, context_id=rollout.context_id,
            task_id=rollout.task_id, success=rollout.success, env_steps=rollout.env_steps,
            traj_id=rollout.group_id * self.group_size + rollout.member,
            policy_version=rollout.policy_version, instruction=rollout.instruction,
            keys={name: getattr(keys, name) for name in ("group_id", "context_id", "task_id", "reward", "success",
                                                         "log_prob", "instruction")},
        )

    def _release(self, gid: int, group: _Group, rb: ReplayBuffer, stats: CollectionStats, version: int) -> int:
        """Write a complete group through the buffer's transforms; the rows written."""
        rows = torch.cat([group.rows[m] for m in range(self.group_size)])
        stats.groups_completed += 1
        index = rb.extend(rows)  # the indices written: none when the filter dropped the group
        n = 0 if index is None else int(torch.as_tensor(index).shape[0])
        successes = int(rows[self._tensor_keys.success].sum())
        stats.count_group(group.task_id, informative=0 < successes < self.group_size, kept=n,
                          rollouts=self.group_size, successes=successes)
        if n:
            stats.groups_kept += 1
            stats.max_staleness = max(stats.max_staleness, version - int(rows["policy_version"].min()))
        return n

    @staticmethod
    def _fill_times(stats: CollectionStats, now: EngineTimes, before: EngineTimes) -> None:
        stats.decision_steps = now.decision_steps - before.decision_steps
        stats.env_steps = now.env_steps - before.env_steps
        stats.policy_s = now.policy_s - before.policy_s
        stats.env_wait_s = now.env_wait_s - before.env_wait_s
        stats.reset_s = now.reset_s - before.reset_s
        stats.bookkeeping_s = now.bookkeeping_s - before.bookkeeping_s
        stats.env_restarts = now.restarts - before.restarts

    def shutdown(self, *args, **kwargs) -> None:
        if self._engine is not None:
            self._engine.close()
        elif not getattr(self, "_pool_closed", False):  # never collected: close the pool itself
            self.env.close(raise_if_closed=False)
        self._pool_closed = True
        super().shutdown(*args, **kwargs)


def _group_filter(rb: ReplayBuffer) -> ZeroAdvantageFilter | None:
    """The buffer's group judge (its :class:`ZeroAdvantageFilter`), if it has one."""
    transforms = getattr(rb.transform, "transforms", [rb.transform])
    return next((t for t in transforms if isinstance(t, ZeroAdvantageFilter)), None)


def _as_pool(create_env_fn, create_env_kwargs):
    if not isinstance(create_env_fn, EnvBase):
        create_env_fn = create_env_fn(**(create_env_kwargs or {}))
    return as_env_pool(create_env_fn)
