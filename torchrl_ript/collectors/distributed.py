"""Group collection on Ray workers, through TorchRL's :class:`~torchrl.collectors.distributed.RayCollector`.

N remote :class:`RemoteGroupCollector` actors (each a
:class:`~torchrl_ript.collectors.GroupCollector` with its own env slots and
seeded context stream) are started by TorchRL's Ray collector
(``Collector(backend="ray", collector_class=RemoteGroupCollector, ...)``),
which also owns their weight synchronisation (``RayWeightSyncScheme``).
:class:`RayGroupCollector` is the learner side: it asks the workers for
informative groups one report at a time and stops asking once the batch holds
B rollouts (a global dynamic-sampling target, no file locks, no padding).
"""
from __future__ import annotations

import dataclasses
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.collectors import BaseCollector, Collector
from torchrl.envs.utils import ExplorationType
from torchrl.weight_update import RayWeightSyncScheme

from torchrl_ript.collectors.group import GroupBatches, GroupCollector
from torchrl_ript.collectors.stats import CollectionStats
from torchrl_ript.config import check_group_sizes, context_draw_limit
from torchrl_ript.data.context import ContextDataset

__all__ = [
    "RayGroupCollector",
    "RayCollectionStats",
    "RayWorkerError",
    "RemoteGroupCollector",
    "merge_collection_stats",
]

#: env variables a worker needs to render and find its data; passed to Ray
#: workers (remote nodes do not inherit the driver's environment)
FORWARDED_ENV_VARS = ("MUJOCO_GL", "PYOPENGL_PLATFORM", "LIBERO_CONFIG_PATH", "OMP_NUM_THREADS")


class RayWorkerError(RuntimeError):
    """A Ray rollout worker died or stopped answering."""


@dataclass
class RayCollectionStats(CollectionStats):
    """:class:`CollectionStats` summed over the workers, plus what the learner saw.

    ``wall_s`` is the learner's time for the batch; ``policy_s``/``env_wait_s``/...
    are summed over workers (CPU-seconds). ``rollouts_discarded`` also counts
    rollouts of groups the learner did not use (surplus or too old).
    """

    workers: int = 0
    reports: int = 0  # remote calls answered
    groups_stale: int = 0  # dropped: collected more than max_policy_lag versions ago
    groups_surplus: int = 0  # arrived after the batch was full (kept for the next one if lag allows)
    workers_replaced: int = 0
    wait_s: float = 0.0  # learner blocked waiting for workers
    max_lag: int = 0  # largest policy lag among the groups used


def merge_collection_stats(stats: Sequence[CollectionStats | None]) -> CollectionStats | None:
    """Sum the counters of several :class:`CollectionStats` (``wall_s``: the longest).

    Examples:
        >>> a = CollectionStats(contexts_drawn=3, env_steps=10, wall_s=1.0)
        >>> b = CollectionStats(contexts_drawn=2, env_steps=5, wall_s=2.0, hit_draw_limit=True)
        >>> m = merge_collection_stats([a, b])
        >>> m.contexts_drawn, m.env_steps, m.wall_s, m.hit_draw_limit
        (5, 15, 2.0, True)
        >>> a.count_group(0, informative=True, kept=8); b.count_group(0, informative=False, kept=0)
        >>> merge_collection_stats([a, b]).per_task
        {0: {'groups': 2, 'informative': 1, 'kept': 8, 'rollouts': 0, 'successes': 0}}
    """
    stats = [s for s in stats if s is not None]
    if not stats:
        return None
    out = type(stats[0])()
    for field in dataclasses.fields(out):
        values = [getattr(s, field.name) for s in stats if hasattr(s, field.name)]
        if field.name == "per_task":
            for per_task in values:
                for task, counts in per_task.items():
                    out.add_task_counts(task, counts)
        elif field.name in ("wall_s", "max_lag", "max_staleness"):
            setattr(out, field.name, max(values))
        elif field.type in (bool, "bool"):
            setattr(out, field.name, any(values))
        else:
            setattr(out, field.name, sum(values))
    return out


def _stats_from_dict(values: dict) -> CollectionStats:
    names = {f.name for f in dataclasses.fields(CollectionStats)}
    stats = CollectionStats(**{k: v for k, v in values.items() if k in names and k != "per_task"})
    for task, counts in values.get("per_task", {}).items():  # as_dict's task mix: the counts only
        stats.add_task_counts(task, counts)
    return stats


class RemoteGroupCollector(GroupCollector):
    """The worker side: a :class:`GroupCollector` that reports with its stats and policy version.

    Built by TorchRL's Ray collector inside a Ray actor. ``stream_index``
    fixes its context stream (seed ``seed + stream_index``) and its group-id
    range (``stream_index << 40``), so a replacement worker never repeats the
    ids of the one it replaces. Its policy version is the learner's (set after
    each weight update, see :meth:`set_policy_version`), not a count of its
    own reports: every trajectory records the version it started under.
    Rollouts still running when a report is complete continue in the next
    one (``keep_in_flight=True`` by default), unless the weights changed more
    than ``max_staleness`` times meanwhile (then their group is rerun).

    Examples:
        >>> from torchrl.envs import SerialEnv
        >>> from torchrl_ript import ContextDataset, ContextToyVLAEnv
        >>> from torchrl_ript.modules.toy_policies import toy_laplace_actor
        >>> actor, _ = toy_laplace_actor()
        >>> contexts = ContextDataset(torch.rand(8, 2) - 0.5, [0] * 8, ["track"], seed=0)
        >>> worker = RemoteGroupCollector(
        ...     SerialEnv(4, ContextToyVLAEnv), actor, context_dataset=contexts, group_size=4,
        ...     trajs_per_batch=4, max_frames_per_traj=3, seed=0, stream_index=3,
        ...     dynamic_sampling=False)
        >>> _ = worker.set_policy_version(7)
        >>> rows, stats, version = worker.collect()
        >>> rows["policy_version"].tolist(), int(rows["group_id"][0]) >> 40, version
        ([7, 7, 7, 7], 3, 7)
        >>> worker.collect()[0]["policy_version"].tolist()  # still 7: no new weights arrived
        [7, 7, 7, 7]
        >>> worker.shutdown()
    """

    def __init__(
        self,
        create_env_fn,
        policy=None,
        *,
        stream_index: int | None = None,
        keys: dict | None = None,
        seed: int | None = None,
        worker_idx: int | None = None,
        keep_in_flight: bool = True,
        **kwargs,
    ) -> None:
        # the learner's weight updates are the versions (several reports per update)
        super().__init__(create_env_fn, policy, seed=seed, worker_idx=worker_idx, stream_index=stream_index,
                         keep_in_flight=keep_in_flight, auto_version=False, **kwargs)
        self._policy_version = 0
        if keys:
            self.set_keys(**keys)

    def set_policy_version(self, version: int) -> int:
        """The version of the weights the next rollouts run with (the learner calls it)."""
        self._policy_version = self.weights_version = int(version)
        return self._policy_version

    def get_policy_version(self) -> int:
        return self._policy_version

    def policy_state_dict(self) -> dict:
        """The weights this worker acts with (a copy, e.g. to check a weight update)."""
        return {k: v.detach().clone() for k, v in self.policy.state_dict().items()}

    def apply_keys(self, **kwargs) -> None:
        """:meth:`set_keys` for a remote call (returns nothing to send back)."""
        self.set_keys(**kwargs)

    def collect(self) -> tuple[TensorDictBase | None, dict, int]:
        """One report: the next batch of informative groups, its stats and the policy version."""
        with warnings.catch_warnings():
            # a report short of groups is the learner's to warn about (globally)
            warnings.filterwarnings("ignore", message="GroupCollector drew max_context_draws")
            batch = self.next()
        return batch, self.last_stats.as_dict(), self._policy_version

    def context_state(self) -> dict:
        """:meth:`GroupCollector.state_dict` (the context stream), for a remote call."""
        return self.state_dict()

    def load_context_state(self, state: dict) -> None:
        self.load_state_dict(state)
        self.weights_version = self._policy_version

    def __bool__(self) -> bool:
        # Ray tests the actor's truth when it stores a task's exception; a
        # BaseCollector's __len__ raises for endless collectors (or before
        # __init__ finished), which would turn any worker error into an
        # "actor died unexpectedly" without the cause
        return True

    def __repr__(self) -> str:  # Ray prefixes worker log lines with this
        return f"{type(self).__name__}(stream={getattr(self, 'stream_index', '?')})"


class RayGroupCollector(GroupBatches, BaseCollector):
    """B informative rollouts per batch, gathered from N Ray rollout workers.

    Each worker is a :class:`RemoteGroupCollector` (``envs_per_worker`` env
    slots, built by ``create_env_fn`` on the worker) started by TorchRL's
    :class:`~torchrl.collectors.distributed.RayCollector`. A worker answers a
    request with ``groups_per_report`` informative groups of K rollouts
    (uniform groups are rejected on the worker, as in
    :class:`~torchrl_ript.collectors.GroupCollector`). The learner keeps each
    worker busy while the groups received plus the groups requested are fewer
    than B/K, so a batch holds exactly B rollouts (fewer only when
    ``max_context_draws`` contexts were drawn in all) and with
    ``max_policy_lag=0`` every rollout was collected with the current weights:
    no worker is asked for more than the batch needs, and nothing is padded.
    With ``max_policy_lag >= 1`` every worker stays busy (also while the
    learner updates); groups that arrive after the batch is full wait for the
    next one and are dropped once more than ``max_policy_lag`` updates old.

    :meth:`update_policy_weights_` sends the policy's weights to every worker
    through TorchRL's weight-sync API (``RayWeightSyncScheme``) and bumps
    :attr:`policy_version`; rows carry the ``policy_version`` they were
    collected with. Group ids are unique across workers (each worker owns an
    id range), and :attr:`last_stats` sums the workers' statistics.

    A worker that dies (its process is killed, its node is lost) is reported:
    with ``on_worker_failure="replace"`` (default) a warning names it, the
    worker pool is rebuilt with fresh context streams (the groups already
    received are kept; those in flight on the other workers are lost and
    counted) and collection goes on, at most ``max_worker_restarts`` times;
    with ``"raise"`` a :class:`RayWorkerError` stops the run.
    ``worker_timeout_s`` bounds the wait for any one report.

    Ray is started on this machine (``ray.init(num_cpus=...)``) unless it is
    already initialised or ``ray_address`` names a cluster (``"auto"`` or
    ``"host:6379"``); a Ray instance started here is shut down by
    :meth:`shutdown`.

    Args:
        create_env_fn: a picklable callable building a worker's batched env
            (e.g. ``functools.partial(make_batched_env, env_fn, K)``).
        policy: the rollout policy; a copy runs on each worker.

    Keyword Args:
        context_dataset, group_size, trajs_per_batch, max_frames_per_traj,
            dynamic_sampling, exploration_type, observation_keys: as for
            :class:`~torchrl_ript.collectors.GroupCollector` (B is the total
            over workers).
        lockstep (bool): each worker steps its env slots with a barrier (see
            :class:`~torchrl_ript.collectors.GroupCollector`). A worker's
            groups are then repeatable; which worker's groups fill a batch
            still depends on timing. Defaults to False.
        advantage (Transform, optional): the advantage transform of every
            worker's buffer (each worker builds it with
            :func:`~torchrl_ript.collectors.make_ript_replay_buffer`, as the
            local collector does; a sampler that learns from outcomes is fed
            there, so each worker's estimates come from its own rollouts).
            Defaults to :class:`~torchrl_ript.transforms.RLOOAdvantage`.
        max_context_draws (int, optional): contexts drawn per batch over all
            workers (default ``10 * B // K``).
        num_workers (int): Ray rollout workers. Defaults to 2.
        groups_per_report (int): informative groups a worker returns per
            request. Defaults to 1.
        max_policy_lag (int): see above. Defaults to 0 (on-policy).
        seed (int, optional): worker ``i`` draws contexts with seed ``seed + i``.
        ray_address (str, optional): an existing Ray cluster.
        ray_init_config (dict, optional): more ``ray.init`` options.
        num_cpus_per_worker (float): CPUs Ray reserves per worker. Defaults to 1.
        num_gpus_per_worker (float, optional): GPUs per worker.
        remote_config (dict, optional): more ``ray.remote`` options per worker.
        on_worker_failure (str): ``"replace"`` or ``"raise"``.
        max_worker_restarts (int): pool rebuilds allowed. Defaults to 3.
        worker_timeout_s (float, optional): longest wait for one report
            (``None``: no limit).
        total_frames (int): trajectories in all; ``-1`` = forever.
        stream_offset (int): added to the workers' stream indices (e.g. to
            keep several learners' streams apart). Defaults to 0.

    Examples:
        >>> from functools import partial
        >>> import ray
        >>> from torchrl.envs import SerialEnv
        >>> from torchrl_ript import ContextDataset, ContextToyVLAEnv
        >>> from torchrl_ript.modules.toy_policies import toy_laplace_actor
        >>> actor, _ = toy_laplace_actor()
        >>> contexts = ContextDataset(torch.rand(32, 2) - 0.5, [0] * 32, ["track"], seed=0)
        >>> collector = RayGroupCollector(  # doctest: +SKIP
        ...     partial(SerialEnv, 4, ContextToyVLAEnv), actor, context_dataset=contexts,
        ...     group_size=4, trajs_per_batch=8, max_frames_per_traj=3, num_workers=2, seed=0,
        ...     ray_init_config={"num_cpus": 2})
        >>> batch = next(iter(collector))  # doctest: +SKIP
        >>> batch.shape, collector.last_stats.workers  # doctest: +SKIP
        (torch.Size([8]), 2)
        >>> collector.shutdown()  # doctest: +SKIP
    """

    def __init__(
        self,
        create_env_fn: Callable,
        policy=None,
        *,
        context_dataset: ContextDataset,
        group_size: int,
        trajs_per_batch: int,
        max_frames_per_traj: int,
        max_context_draws: int | None = None,
        dynamic_sampling: bool = True,
        lockstep: bool = False,
        advantage=None,
        num_workers: int = 2,
        groups_per_report: int = 1,
        max_policy_lag: int = 0,
        seed: int | None = None,
        ray_address: str | None = None,
        ray_init_config: dict | None = None,
        num_cpus_per_worker: float = 1,
        num_gpus_per_worker: float | None = None,
        remote_config: dict | None = None,
        on_worker_failure: str = "replace",
        max_worker_restarts: int = 3,
        worker_timeout_s: float | None = None,
        exploration_type: ExplorationType = ExplorationType.RANDOM,
        observation_keys: list | None = None,
        total_frames: int = -1,
        stream_offset: int = 0,
    ) -> None:
        ray = _import_ray()
        check_group_sizes(group_size, trajs_per_batch, max_context_draws=max_context_draws)
        if int(max_frames_per_traj) < 1:
            raise ValueError(f"max_frames_per_traj must be >= 1, got {max_frames_per_traj}.")
        if not isinstance(context_dataset, ContextDataset):
            raise TypeError(
                f"context_dataset must be a ContextDataset, got {type(context_dataset).__name__}."
            )
        if int(num_workers) < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}.")
        if int(groups_per_report) < 1:
            raise ValueError(f"groups_per_report must be >= 1, got {groups_per_report}.")
        if int(max_policy_lag) < 0:
            raise ValueError(f"max_policy_lag must be >= 0, got {max_policy_lag}.")
        if on_worker_failure not in ("replace", "raise"):
            raise ValueError(
                f"on_worker_failure must be 'replace' or 'raise', got {on_worker_failure!r}."
            )
        super().__init__()
        self.create_env_fn = create_env_fn
        self.policy = policy
        self.context_dataset = context_dataset
        self.group_size = int(group_size)
        self.trajs_per_batch = int(trajs_per_batch)
        self.horizon = int(max_frames_per_traj)
        self.max_context_draws = context_draw_limit(max_context_draws, self.trajs_per_batch, self.group_size)
        self.dynamic_sampling = bool(dynamic_sampling)
        self.lockstep = bool(lockstep)
        self.advantage = advantage
        self.num_workers = int(num_workers)
        self.groups_per_report = int(groups_per_report)
        self.max_policy_lag = int(max_policy_lag)
        self.seed = seed
        self.on_worker_failure = on_worker_failure
        self.max_worker_restarts = int(max_worker_restarts)
        self.worker_timeout_s = worker_timeout_s
        self.exploration_type = exploration_type
        self.observation_keys = observation_keys
        self.total_frames = int(total_frames)
        self.stream_offset = int(stream_offset)
        self.frames_per_batch = self.trajs_per_batch
        self._keys: dict = {}
        self._remote_config = {"num_cpus": num_cpus_per_worker, **(remote_config or {})}
        if num_gpus_per_worker:
            self._remote_config["num_gpus"] = num_gpus_per_worker
        env_vars = {k: os.environ[k] for k in FORWARDED_ENV_VARS if k in os.environ}
        if env_vars:
            runtime_env = dict(self._remote_config.get("runtime_env") or {})
            runtime_env["env_vars"] = {**env_vars, **runtime_env.get("env_vars", {})}
            self._remote_config["runtime_env"] = runtime_env

        self._owns_ray = False
        if not ray.is_initialized():
            init = {"include_dashboard": False, "log_to_driver": True, **(ray_init_config or {})}
            if ray_address is not None:
                init["address"] = ray_address
            ray.init(**init)
            self._owns_ray = True
        self.policy_version = 0
        self.collected_frames = 0
        self.last_stats = RayCollectionStats(workers=self.num_workers)
        self._generation = 0
        self._restarts = 0
        self._published = False
        self._pending: dict = {}  # object ref -> worker index
        self._waiting: list = []  # surplus groups (lag >= 1): (rows, version)
        self._context_states: list | None = None
        self._ray = None
        self._workers: list = []
        try:
            self._start_pool()
        except BaseException:  # e.g. the env cannot be built on a worker: leave nothing running
            self.shutdown()
            raise

    # -- the pool of workers (a TorchRL RayCollector) --------------------------
    def _start_pool(self) -> None:
        first = self.stream_offset + self._generation * self.num_workers
        kwargs = [
            {
                "context_dataset": self.context_dataset,
                "group_size": self.group_size,
                # per report (GroupCollector's default, within the global limit); the
                # global limit is enforced here, between reports
                "max_context_draws": max(
                    self.groups_per_report, min(10 * self.groups_per_report, self.max_context_draws)
                ),
                "dynamic_sampling": self.dynamic_sampling,
                "lockstep": self.lockstep,
                "advantage": self.advantage,
                "observation_keys": self.observation_keys,
                # a group carried over in a worker may be at most as old as the learner accepts
                "max_staleness": self.max_policy_lag,
                "seed": self.seed,
                "stream_index": first + i,
                "keys": dict(self._keys),
            }
            for i in range(self.num_workers)
        ]
        self._ray = Collector(
            [self.create_env_fn] * self.num_workers,
            self.policy,
            backend="ray",
            num_collectors=self.num_workers,
            collector_class=RemoteGroupCollector,
            collector_kwargs=kwargs,
            remote_configs=dict(self._remote_config),
            frames_per_batch=self.group_size * self.groups_per_report,
            max_frames_per_traj=self.horizon,
            exploration_type=self.exploration_type,
            weight_sync_schemes={"policy": RayWeightSyncScheme()},
        )
        self._workers = list(self._ray.remote_collectors)
        self._pending = {}
        self._published = False
        if self._context_states is not None:  # resume: the streams continue where they were
            ray = _import_ray()
            ray.get([w.load_context_state.remote(s) for w, s in zip(self._workers, self._context_states)])
            self._context_states = None

    def _publish(self) -> None:
        """Send the policy's current weights and version to every worker."""
        ray = _import_ray()
        self._ray.update_policy_weights_(self.policy)
        ray.get([w.set_policy_version.remote(self.policy_version) for w in self._workers])
        self._published = True

    def _restart_pool(self, reason: str, stats: RayCollectionStats) -> None:
        lost = len(self._pending)
        self._restarts += 1
        stats.workers_replaced += 1
        if self.on_worker_failure == "raise" or self._restarts > self.max_worker_restarts:
            self._kill_pool()
            hint = (
                "set on_worker_failure='replace' to rebuild the pool and go on"
                if self.on_worker_failure == "raise"
                else f"the pool was already rebuilt {self.max_worker_restarts} times "
                "(max_worker_restarts): check the workers' logs (memory, env crashes)"
            )
            raise RayWorkerError(f"{reason}; collection stopped: {hint}.")
        warnings.warn(
            f"{reason}; rebuilding the {self.num_workers} Ray workers with fresh context "
            f"streams (replacement {self._restarts}/{self.max_worker_restarts}); "
            f"{lost} request(s) in flight on the other workers are lost.",
            RuntimeWarning,
            stacklevel=3,
        )
        self._kill_pool()
        self._generation += 1
        self._start_pool()

    def _kill_pool(self) -> None:
        if self._ray is None:
            return
        ray_collector, self._ray = self._ray, None
        self._pending = {}
        try:
            ray_collector.shutdown(timeout=5.0)  # kills the actors, closes the weight-sync group
        except Exception as err:  # a dead worker can make the scheme's teardown fail
            warnings.warn(f"Ray worker pool teardown: {err}", RuntimeWarning, stacklevel=2)
        self._workers = []

    # -- keys ---------------------------------------------------------------------
    def set_keys(self, **kwargs) -> RayGroupCollector:
        """As :meth:`GroupCollector.set_keys`, on every worker (and on replacements)."""
        for key in kwargs:
            if key not in GroupCollector._AcceptedKeys.__dataclass_fields__:
                raise KeyError(
                    f"{key!r} is not a key of GroupCollector; valid: "
                    f"{sorted(GroupCollector._AcceptedKeys.__dataclass_fields__)}."
                )
        self._keys.update(kwargs)
        ray = _import_ray()
        ray.get([w.apply_keys.remote(**kwargs) for w in self._workers])
        return self

    # -- weights ------------------------------------------------------------------
    def update_policy_weights_(self, policy_or_weights=None, **kwargs) -> None:
        """Send new weights to the workers and bump :attr:`policy_version`.

        ``policy_or_weights`` defaults to the policy given at construction
        (its current parameters).
        """
        if kwargs.get("worker_ids") is not None:
            raise ValueError("RayGroupCollector updates all workers at once (no worker_ids).")
        self.policy_version += 1
        if policy_or_weights is not None and policy_or_weights is not self.policy:
            ray = _import_ray()
            self._ray.update_policy_weights_(policy_or_weights)
            ray.get([w.set_policy_version.remote(self.policy_version) for w in self._workers])
            self._published = True
            return
        self._publish_guarded()

    def _publish_guarded(self) -> None:
        ray = _import_ray()
        try:
            self._publish()
        except (ray.exceptions.RayActorError, RuntimeError) as err:
            if isinstance(err, RayWorkerError):
                raise
            stats = RayCollectionStats(workers=self.num_workers)
            self._restart_pool(f"a Ray worker failed while receiving weights ({err})", stats)
            self._publish()

    # -- collection ---------------------------------------------------------------
    def iterator(self):
        while self.total_frames < 0 or self.collected_frames < self.total_frames:
            batch = self._collect_batch()
            self.collected_frames += _rows(batch)
            yield batch

    def _collect_batch(self) -> TensorDictBase:
        ray = _import_ray()
        start = time.perf_counter()
        if not self._published:
            self._publish_guarded()
        K = self.group_size
        need = self.trajs_per_batch // K
        stats = RayCollectionStats(workers=self.num_workers)
        groups: list[tuple[TensorDictBase, int]] = []
        worker_stats: list[CollectionStats] = []
        # groups that arrived after the last batch was full (max_policy_lag >= 1)
        for rows, version in self._waiting:
            if self.policy_version - version > self.max_policy_lag:
                stats.groups_stale += 1
                stats.rollouts_discarded += rows.shape[0]
            else:
                groups.append((rows, version))
        self._waiting = []
        drawn = 0

        def busy(index: int) -> bool:
            return index in self._pending.values()

        while len(groups) < need:
            expected = len(groups) + self.groups_per_report * len(self._pending)
            for index, worker in enumerate(self._workers):
                if busy(index) or drawn >= self.max_context_draws:
                    continue
                if self.max_policy_lag == 0 and expected >= need:
                    break
                self._pending[worker.collect.remote()] = index
                expected += self.groups_per_report
            if not self._pending:
                break  # the draw limit is reached and nothing is in flight
            t0 = time.perf_counter()
            ready, _ = ray.wait(list(self._pending), num_returns=1, timeout=self.worker_timeout_s)
            stats.wait_s += time.perf_counter() - t0
            if not ready:
                slow = sorted(set(self._pending.values()))
                raise RayWorkerError(
                    f"no Ray worker answered within worker_timeout_s={self.worker_timeout_s} s "
                    f"(workers {slow} busy, {len(groups)}/{need} groups received): a worker hangs "
                    "or one report takes longer; raise worker_timeout_s or check the workers."
                )
            ref = ready[0]
            index = self._pending.pop(ref)
            try:
                rows, worker_stat, version = ray.get(ref)
            except ray.exceptions.RayActorError as err:
                self._restart_pool(
                    f"Ray worker {index} (stream {self.stream_offset + self._generation * self.num_workers + index}) "
                    f"died during collection with {len(groups)}/{need} groups of this batch "
                    f"received ({type(err).__name__})",
                    stats,
                )
                self._publish()
                continue
            stats.reports += 1
            worker_stats.append(_stats_from_dict(worker_stat))
            drawn += int(worker_stat.get("contexts_drawn", 0))
            for group in _split_groups(rows, K, self._keys.get("group_id", "group_id")):
                if self.policy_version - int(version) > self.max_policy_lag:
                    stats.groups_stale += 1  # collected before more than max_policy_lag updates
                    stats.rollouts_discarded += group.shape[0]
                else:
                    groups.append((group, int(version)))
        # surplus: only possible with several groups per report, or lag >= 1
        if len(groups) > need:
            extra = groups[need:]
            groups = groups[:need]
            stats.groups_surplus += len(extra)
            if self.max_policy_lag > 0:
                self._waiting = extra
            else:
                stats.rollouts_discarded += sum(rows.shape[0] for rows, _ in extra)
        merged = merge_collection_stats(worker_stats)
        if merged is not None:
            for field in dataclasses.fields(CollectionStats):
                if field.name not in ("wall_s", "rollouts_discarded"):
                    setattr(stats, field.name, getattr(merged, field.name))
            stats.rollouts_discarded += merged.rollouts_discarded
        batch = torch.cat([rows for rows, _ in groups]) if groups else TensorDict(batch_size=[0])
        stats.rollouts_kept = batch.shape[0] if groups else 0
        stats.groups_kept = len(groups)
        if groups:
            stats.max_lag = max(self.policy_version - v for _, v in groups)
        if len(groups) < need:
            stats.hit_draw_limit = True
            warnings.warn(
                f"RayGroupCollector: the workers drew {drawn} contexts (max_context_draws="
                f"{self.max_context_draws}) but found only {len(groups)} of {need} informative "
                "groups: the policy solves or fails (almost) every context it was given. "
                "Returning what it has.",
                RuntimeWarning,
                stacklevel=2,
            )
        stats.wall_s = time.perf_counter() - start
        self.last_stats = stats
        return batch

    # -- checkpoints: the workers' context streams ------------------------------------
    def context_state_dict(self) -> dict:
        """The workers' context-stream states and the policy version (for resuming)."""
        ray = _import_ray()
        self._drain()
        return {
            "policy_version": self.policy_version,
            "generation": self._generation,
            "workers": ray.get([w.context_state.remote() for w in self._workers]),
        }

    def load_context_state_dict(self, state: dict) -> None:
        ray = _import_ray()
        self.policy_version = int(state["policy_version"])
        self._drain()
        if len(state["workers"]) == len(self._workers):
            ray.get([w.load_context_state.remote(s) for w, s in zip(self._workers, state["workers"])])
        else:
            warnings.warn(
                f"checkpoint holds {len(state['workers'])} worker streams, this run has "
                f"{len(self._workers)} workers: they start fresh streams.",
                RuntimeWarning,
                stacklevel=2,
            )
        self._published = False  # resend weights and version before the next batch

    def _drain(self) -> None:
        """Wait for the requests in flight (their groups wait for the next batch)."""
        if not self._pending:
            return
        ray = _import_ray()
        refs = list(self._pending)
        self._pending = {}
        for ref in refs:
            try:
                rows, _, version = ray.get(ref)
            except ray.exceptions.RayActorError:
                continue  # reported at the next collection, when the worker is used
            if self.max_policy_lag > 0 and _rows(rows):
                self._waiting.extend((g, int(version)) for g in _split_groups(rows, self.group_size))

    # -- BaseCollector interface ------------------------------------------------------
    def shutdown(self, timeout: float | None = None, **kwargs) -> None:
        """Stop the workers (and Ray, if this collector started it)."""
        self._kill_pool()
        if self._owns_ray:
            ray = _import_ray()
            if ray.is_initialized():
                ray.shutdown()
            self._owns_ray = False

    def set_seed(self, seed: int, static_seed: bool = False) -> int:
        raise NotImplementedError("pass seed= to RayGroupCollector (each worker draws seed + i).")

    def state_dict(self) -> dict:
        return self.context_state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.load_context_state_dict(state_dict)

    def __del__(self) -> None:
        try:
            self._kill_pool()
        except Exception:
            pass


def _split_groups(rows: TensorDictBase | None, group_size: int, group_key="group_id") -> list[TensorDictBase]:
    """Complete groups of a worker report (rows of a group are contiguous)."""
    if not _rows(rows):
        return []
    ids = rows[group_key]
    out = []
    for gid in torch.unique_consecutive(ids):
        group = rows[ids == gid]
        if group.shape[0] != group_size:
            raise RuntimeError(
                f"a worker returned group {int(gid)} with {group.shape[0]} rollouts, not K={group_size}."
            )
        out.append(group)
    return out


def _rows(batch: TensorDictBase | None) -> int:
    # (TensorDict.numel() is 1, not 0, for batch_size [0])
    return 0 if batch is None or not batch.batch_dims else batch.shape[0]


def _import_ray():
    try:
        import ray
    except ImportError as err:
        raise ImportError(
            "the Ray collector needs Ray: pip install 'torchrl-ript[distributed]' "
            "(or pip install 'ray[default]')."
        ) from err
    return ray
