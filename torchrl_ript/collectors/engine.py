"""The rollout engine: rollouts from exact contexts on TorchRL's ``AsyncEnvPool``.

Each env of an :class:`~torchrl.envs.AsyncEnvPool` is a *slot* that runs one
rollout at a time from a given context. Slots do not step in lockstep: the
engine sends a step (``async_step_send``) to a slot as soon as its action is
ready and receives results (``async_step_recv``) from whichever slots have
finished, so a slot never waits for the others. Every slot whose step or
context reset has come back gets its next action from one policy call batched
over all the ready slots, while the remaining slots keep simulating. A slot
whose rollout ends is reset at once to the next pending rollout's exact
context (the context-reset contract of :mod:`torchrl_ript.envs.common`).

An env worker process that dies (killed, out of memory, a simulator crash)
makes TorchRL's pool unusable: the engine then rebuilds the pool from the
same env makers, reports the rollouts that were in flight as lost (the
caller discards or reruns them) and goes on, up to ``max_restarts`` times;
then it raises :class:`EnvWorkerError` naming the worker. An exception
*raised by an env* (a bug or bad input) is not retried: it propagates with
the env's own message.

Batched envs (``ParallelEnv`` / ``SerialEnv``) are accepted and rebuilt as a
pool from their env makers (:func:`as_env_pool`: processes for a
``ParallelEnv``, threads for a ``SerialEnv``).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tensordict import NonTensorData, NonTensorStack, TensorDictBase
from tensordict.utils import NestedKey
from torchrl.envs import AsyncEnvPool, EnvBase, ParallelEnv, SerialEnv

from torchrl_ript.data.context import ContextDataset
from torchrl_ript.data.instructions import instruction_strings
from torchrl_ript.envs.common import CONTEXT_STATE_KEY, SET_STATE_KEY, context_reset_td

__all__ = ["Rollout", "RolloutEngine", "EngineTimes", "EnvWorkerError", "as_env_pool"]


class EnvWorkerError(RuntimeError):
    """Env worker processes kept dying: the engine gave up after ``max_restarts``."""


class _PoolFailure(Exception):
    """An error raised by the pool (a dead worker, or an env that raised); wraps it."""


@dataclass
class Rollout:
    """One rollout: where it starts, and what it has done so far.

    ``decisions`` counts the policy decisions taken (the index of the next
    one); ``env_steps`` the raw simulator steps; ``policy_version`` is set by
    the caller (e.g. the collector's version when the rollout started).
    ``initial_state`` fixes the exact start (e.g. a noisy draw made when its
    group was drawn); without it the engine draws the context's start (with
    the dataset's noise) when the rollout begins.
    """

    context_id: int
    task_id: int
    group_id: int = -1
    member: int = 0
    env_steps: int = 0
    decisions: int = 0
    slot: int = -1
    instruction: str = ""
    success: bool = False
    policy_version: int = 0
    attempt: int = 0
    initial_state: torch.Tensor | None = None  # the start to reset to; None: the context's own


@dataclass
class EngineTimes:
    """Where the engine's wall time went (main process), cumulated over runs."""

    policy_s: float = 0.0  # policy calls
    env_wait_s: float = 0.0  # blocked waiting for step/reset results
    reset_s: float = 0.0  # building and sending context resets
    bookkeeping_s: float = 0.0  # sending steps, recording, finished rollouts
    decision_steps: int = 0
    env_steps: int = 0
    restarts: int = 0


def as_env_pool(env: EnvBase) -> AsyncEnvPool:
    """The :class:`~torchrl.envs.AsyncEnvPool` the engine drives for ``env``.

    A pool is returned as it is. A ``ParallelEnv`` becomes a multiprocessing
    pool, a ``SerialEnv`` a threading pool, over the same env makers and
    keyword arguments (the batched env itself is never started). Threads
    suit envs without thread-bound resources; rendering envs (a MuJoCo EGL
    context belongs to the thread that made it) need worker processes: use a
    ``ParallelEnv`` or ``AsyncEnvPool(..., backend="multiprocessing")``.

    Examples:
        >>> from torchrl.envs import SerialEnv
        >>> from torchrl_ript import ContextToyVLAEnv
        >>> pool = as_env_pool(SerialEnv(2, lambda: ContextToyVLAEnv(action_dim=2)))
        >>> type(pool).__name__, tuple(pool.batch_size)
        ('ThreadingAsyncEnvPool', (2,))
        >>> pool.close()
    """
    if isinstance(env, AsyncEnvPool):
        return env
    if isinstance(env, (ParallelEnv, SerialEnv)):
        n = env.num_workers
        makers = env.create_env_fn if isinstance(env.create_env_fn, (list, tuple)) else [env.create_env_fn] * n
        kwargs = env.create_env_kwargs
        if isinstance(kwargs, dict):
            kwargs = [kwargs] * n
        if isinstance(env, ParallelEnv):
            return AsyncEnvPool(list(makers), backend="multiprocessing", exchange="auto",
                                create_env_kwargs=list(kwargs))
        return AsyncEnvPool(list(makers), backend="threading", create_env_kwargs=list(kwargs))
    raise TypeError(
        f"the rollout engine drives a torchrl.envs.AsyncEnvPool (or a ParallelEnv/SerialEnv it "
        f"rebuilds as one), got {type(env).__name__}: build "
        "AsyncEnvPool([make_env] * n, backend='multiprocessing') around your env maker."
    )


def _rebuild_pool(pool: AsyncEnvPool) -> AsyncEnvPool:
    """A fresh pool with the same makers and options as ``pool`` (whose workers died)."""
    kwargs = dict(backend=pool.backend, stack=pool.stack, create_env_kwargs=pool.create_env_kwargs)
    if pool.backend == "multiprocessing":
        kwargs.update(exchange=pool.exchange, envs_per_worker=pool.envs_per_worker,
                      worker_affinity=pool.worker_affinity)
    return AsyncEnvPool(list(pool.env_makers), **kwargs)


def _dead_workers(pool: AsyncEnvPool) -> list[str]:
    """``"env worker i (pid p, exit code c)"`` for each dead worker process of a pool."""
    dead = []
    for i, process in enumerate(getattr(pool, "threads", ()) or ()):
        code = getattr(process, "exitcode", None)
        if code is not None:
            dead.append(f"env worker {i} (pid {process.pid}, exit code {code})")
    return dead


_IDLE, _RESETTING, _STEPPING, _READY = range(4)


class RolloutEngine:
    """Drive an :class:`~torchrl.envs.AsyncEnvPool` of context envs with a policy, slot by slot.

    Args:
        env: an ``AsyncEnvPool`` (or a ``ParallelEnv``/``SerialEnv``, see
            :func:`as_env_pool`) of envs speaking the context contract.
        policy: a TensorDict module; called on the ready slots' observations
            (its ``in_keys``), writes ``action_key``.
        contexts: resolves context ids to initial states (with the dataset's
            per-draw noise, if any).

    Keyword Args:
        horizon (int): decisions per rollout at most.
        on_decision (callable, optional): ``on_decision(slots, rollouts, out)``
            after each policy call, before the step is sent. ``out`` is the
            policy output (one row per slot, in ``slots`` order); each
            rollout's ``decisions`` is still the index of this decision.
        action_key, done_key, success_key, instruction_key, env_steps_key:
            tensordict keys.
        generator (torch.Generator, optional): RNG of the initial-state noise.
        max_restarts (int): how many times dead env workers are replaced
            before :class:`EnvWorkerError`. Defaults to 3.
        extra_keys (list of keys, optional): env outputs passed along with the
            policy's ``in_keys`` (so they are in ``on_decision``'s ``out``),
            e.g. a camera to record.
        lockstep (bool): wait for every outstanding step and reset before the
            next policy call (a barrier, as ``ParallelEnv`` does). Slower, but
            the policy then always sees the same batches in the same order, so
            a *stochastic* policy draws the same random numbers whatever the
            envs' timing: runs are bit-reproducible. Defaults to False.

    Examples:
        >>> import torch
        >>> from tensordict.nn import TensorDictModule
        >>> from torchrl.envs import SerialEnv
        >>> from torchrl_ript import ContextDataset, ContextToyVLAEnv
        >>> contexts = ContextDataset(torch.rand(5, 2) - 0.5, [0] * 5, ["track"])
        >>> oracle = TensorDictModule(lambda s: s[..., 2:4], in_keys=[("observation", "state")],
        ...                           out_keys=["action"])
        >>> engine = RolloutEngine(SerialEnv(2, lambda: ContextToyVLAEnv(action_dim=2)),
        ...                        oracle, contexts, horizon=4)
        >>> todo, done = [Rollout(i, 0) for i in range(5)], []
        >>> _ = engine.run(lambda: todo.pop(0) if todo else None, lambda r: done.append(r) is not None)
        >>> sorted(r.context_id for r in done), all(r.success for r in done)
        ([0, 1, 2, 3, 4], True)
        >>> engine.close()
    """

    def __init__(
        self,
        env: EnvBase,
        policy: Callable[[TensorDictBase], TensorDictBase],
        contexts: ContextDataset,
        *,
        horizon: int,
        on_decision: Callable | None = None,
        action_key: NestedKey = "action",
        done_key: NestedKey = "done",
        success_key: NestedKey = "success",
        instruction_key: NestedKey = "language_instruction",
        env_steps_key: NestedKey = "env_steps",
        generator: torch.Generator | None = None,
        max_restarts: int = 3,
        extra_keys: list[NestedKey] | None = None,
        lockstep: bool = False,
    ) -> None:
        if int(horizon) < 1:
            raise ValueError(f"horizon must be >= 1 decision, got {horizon}.")
        self.env = as_env_pool(env)
        if len(self.env.batch_size) != 1:
            raise ValueError(
                "the rollout engine needs a pool of single envs (batch_size [n]), got "
                f"batch_size {tuple(self.env.batch_size)}."
            )
        self.policy = policy
        self.contexts = contexts
        self.horizon = int(horizon)
        self.on_decision = on_decision
        self.action_key = action_key
        self.done_key = done_key
        self.success_key = success_key
        self.instruction_key = instruction_key
        self.env_steps_key = env_steps_key
        self.generator = generator
        self.max_restarts = int(max_restarts)
        self.lockstep = bool(lockstep)
        self.times = EngineTimes()
        self.restart_log: list[str] = []
        self._check_contract()
        # an env without a per-step (non-tensor) instruction lets a process pool use its
        # shared-memory exchange; the engine then hands the policy the context's instruction
        self._instruction_from_contexts = self.instruction_key not in set(self.env.observation_spec.keys(True, True))
        in_keys = getattr(policy, "in_keys", None)
        self._policy_reads_instruction = in_keys is None or self.instruction_key in list(in_keys)
        self._input_keys = self._policy_input_keys(list(extra_keys or []))
        n = self.num_slots
        self._slots: list[Rollout | None] = [None] * n
        self._phase = [_IDLE] * n
        self._ready: list[tuple[list[int], TensorDictBase]] = []
        self._finished_late: list[Rollout] = []  # finished after a stop; handed out next run
        self._closed = False

    # -- set-up ---------------------------------------------------------------------
    @property
    def num_slots(self) -> int:
        return self.env.batch_size[0]

    @property
    def in_flight(self) -> list[Rollout]:
        """Rollouts kept between runs (``run(keep_in_flight=True)``)."""
        return [r for r in self._slots if r is not None] + list(self._finished_late)

    def _check_contract(self) -> None:
        state_keys = set(self.env.state_spec.keys(True, True))
        missing = [k for k in (SET_STATE_KEY, CONTEXT_STATE_KEY) if k not in state_keys]
        if missing:
            raise TypeError(
                f"the env does not speak the context-reset contract: its state_spec lacks {missing}. "
                "RIPT resets K envs to exactly the same context; add "
                "torchrl_ript.envs.context_state_spec(D) to the env's state_spec and read it in "
                "_reset with torchrl_ript.envs.read_context (see torchrl_ript.envs.common)."
            )
        dim = self.env.state_spec[CONTEXT_STATE_KEY].shape[-1]
        if dim != self.contexts.state_dim:
            raise ValueError(
                f"the contexts hold initial states of size {self.contexts.state_dim} but the env "
                f"takes context states of size {dim}: build the ContextDataset for this env "
                "(e.g. metaworld_contexts / libero_contexts) or pass the env's own state encoding."
            )

    def _policy_input_keys(self, extra: list[NestedKey]) -> list[NestedKey] | None:
        keys = getattr(self.policy, "in_keys", None)
        if keys is None:
            return None
        keys = list(dict.fromkeys([*keys, *extra]))
        available = set(self.env.observation_spec.keys(True, True)) | {self.instruction_key}
        missing = [k for k in keys if k not in available]
        keys.append(self.instruction_key)  # read once per rollout (stored with its trajectory)
        if missing:
            raise KeyError(
                f"the policy reads {missing}, which the env does not output "
                f"(its observations: {sorted(map(str, available))}): check the policy's in_keys."
            )
        return keys

    # -- running ----------------------------------------------------------------------
    def run(
        self,
        next_rollout: Callable[[], Rollout | None],
        on_finish: Callable[[Rollout], bool],
        *,
        keep_in_flight: bool = False,
        on_lost: Callable[[list[Rollout]], None] | None = None,
    ) -> list[Rollout]:
        """Run rollouts until ``next_rollout`` has none left and every slot is idle.

        ``next_rollout()`` gives the next rollout to start (or ``None``);
        ``on_finish(rollout)`` receives each finished one and returns ``True``
        to stop at once. What is in flight at a stop is kept for the next run
        (``keep_in_flight=True``) or abandoned and returned. ``on_lost`` gets
        the rollouts lost when dead env workers were replaced.
        """
        stop = False
        late, self._finished_late = self._finished_late, []
        for rollout in late:  # finished after the previous run's stop
            if stop:
                self._finished_late.append(rollout)
            elif on_finish(rollout):
                stop = True
        while not stop:
            try:
                self._start_resets(next_rollout)
                if not any(phase != _IDLE for phase in self._phase):
                    break
                self._act()
                stop = self._receive(on_finish, block=True)
            except _PoolFailure as failure:
                self._restart_or_raise(failure.__cause__, on_lost)
        self._drain(on_lost)
        if keep_in_flight:
            return []
        abandoned = [r for r in self._slots if r is not None] + self._finished_late
        self._clear()
        return abandoned

    def abandon(self) -> list[Rollout]:
        """Drop every rollout in flight or kept (once their outstanding results came back)."""
        self._drain(None)
        abandoned = [r for r in self._slots if r is not None] + self._finished_late
        self._clear()
        return abandoned

    def _clear(self) -> None:
        n = self.num_slots
        self._slots, self._phase, self._ready, self._finished_late = [None] * n, [_IDLE] * n, [], []

    def close(self) -> None:
        """Shut the pool's workers down (``AsyncEnvPool.is_closed`` does not track it)."""
        if not self._closed:
            self._closed = True
            self.env.close(raise_if_closed=False)

    def _start_resets(self, next_rollout) -> None:
        t0 = time.perf_counter()
        started: list[int] = []
        for i in range(self.num_slots):
            if self._phase[i] != _IDLE:
                continue
            rollout = next_rollout()
            if rollout is None:
                break
            rollout.slot = i
            self._slots[i] = rollout
            started.append(i)
        if started:
            rollouts = [self._slots[i] for i in started]
            ids = torch.tensor([r.context_id for r in rollouts])
            draw = [j for j, r in enumerate(rollouts) if r.initial_state is None]
            states = torch.empty(len(rollouts), self.contexts.state_dim, dtype=torch.float64)
            if draw:  # only these consume the generator
                states[draw] = self.contexts.initial_states(ids[draw], generator=self.generator)
            for j, rollout in enumerate(rollouts):
                if rollout.initial_state is not None:
                    states[j] = rollout.initial_state
            self._pool(self.env.async_reset_send, context_reset_td(states, self.contexts.task_ids[ids]),
                       env_index=started)
            for i in started:
                self._phase[i] = _RESETTING
        self.times.reset_s += time.perf_counter() - t0

    def _act(self) -> None:
        """One policy call over every ready slot, then send their steps."""
        if not self._ready:
            return
        slots = [i for ids, _ in self._ready for i in ids]
        rows = self._ready[0][1] if len(self._ready) == 1 else torch.cat([td for _, td in self._ready])
        self._ready = []
        if self._instruction_from_contexts:
            if self._policy_reads_instruction:
                texts = [self.contexts.instruction(self._slots[i].task_id) for i in slots]
                rows.set(self.instruction_key, NonTensorStack(*[NonTensorData(t) for t in texts]))
            else:  # only stored with each trajectory
                for i in slots:
                    if self._slots[i].decisions == 0:
                        self._slots[i].instruction = self.contexts.instruction(self._slots[i].task_id)
        t0 = time.perf_counter()
        out = self.policy(rows)
        t1 = time.perf_counter()
        self.times.policy_s += t1 - t0
        action = out.get(self.action_key, None)
        if action is None:
            raise KeyError(f"the policy did not write {self.action_key!r}: check its out_keys.")
        if action.is_floating_point() and not torch.isfinite(action).all():
            bad = [slots[j] for j in (~torch.isfinite(action.reshape(len(slots), -1)).all(-1)).nonzero().flatten().tolist()]
            raise ValueError(
                f"the policy produced non-finite actions (NaN/inf) for env slots {bad}: the env "
                "would simulate garbage. Check the policy's weights (a diverged update?) and inputs."
            )
        rollouts = [self._slots[i] for i in slots]
        fresh = [j for j, r in enumerate(rollouts) if r.decisions == 0]
        if fresh and self.instruction_key in rows.keys(True):
            texts = instruction_strings(rows, self.instruction_key, len(slots))
            for j in fresh:
                rollouts[j].instruction = texts[j]
        if self.on_decision is not None:
            self.on_decision(slots, rollouts, out)
        for rollout in rollouts:
            rollout.decisions += 1
        self.times.decision_steps += len(slots)
        self._pool(self.env.async_step_send, out.select(self.action_key), env_index=slots)
        for i in slots:
            self._phase[i] = _STEPPING
        self.times.bookkeeping_s += time.perf_counter() - t1

    def _receive(self, on_finish, *, block: bool) -> bool:
        """Collect what came back (waiting for at least one result if ``block``).

        Returns whether ``on_finish`` asked to stop; rollouts finishing after
        that are kept in ``_finished_late``.
        """
        stepping = self._phase.count(_STEPPING)
        resetting = self._phase.count(_RESETTING)
        if not stepping and not resetting:
            return False
        t0 = time.perf_counter()
        resets = steps = None
        if self.lockstep and block:  # a barrier: everything outstanding, in env order
            if resetting:
                resets = self._pool(self.env.async_reset_recv, min_get=resetting)
            if stepping:
                steps = self._pool(self.env.async_step_recv, min_get=stepping)
        while not (self.lockstep and block):
            if resetting:
                # resets are rare and short: poll them unless nothing else is running
                resets = self._recv(self.env.async_reset_recv, None if (block and not stepping) else 0)
            if stepping:
                wait = None if (block and not resetting and resets is None) else (0.002 if block and resets is None else 0)
                steps = self._recv(self.env.async_step_recv, wait)
            if resets is not None or steps is not None or not block:
                break
        t1 = time.perf_counter()
        self.times.env_wait_s += t1 - t0
        stop = False
        if resets is not None:
            ids = resets.get("env_index").tolist()
            for i in ids:
                self._phase[i] = _READY
            self._ready.append((ids, self._inputs(resets)))
        if steps is not None:
            stop = self._process_steps(steps, on_finish)
        self.times.bookkeeping_s += time.perf_counter() - t1
        return stop

    def _recv(self, receive, timeout):
        try:
            return self._pool(receive, min_get=1, timeout=timeout)
        except _PoolFailure as failure:
            if isinstance(failure.__cause__, TimeoutError):
                return None
            raise

    @staticmethod
    def _pool(call, *args, **kwargs):
        try:
            return call(*args, **kwargs)
        except Exception as err:
            raise _PoolFailure() from err

    def _inputs(self, td: TensorDictBase) -> TensorDictBase:
        if self._input_keys is None:
            return td.exclude("env_index", SET_STATE_KEY, CONTEXT_STATE_KEY)
        return td.select(*self._input_keys, strict=False)

    def _process_steps(self, steps: TensorDictBase, on_finish) -> bool:
        nxt = steps.get("next")
        ids = steps.get("env_index").tolist()
        n = len(ids)
        done = nxt.get(self.done_key).reshape(n, -1).any(-1).tolist()
        counts = nxt.get(self.env_steps_key, None)
        counts = [1] * n if counts is None else counts.reshape(n, -1)[:, 0].tolist()
        success = nxt.get(self.success_key, None)
        success = [False] * n if success is None else success.reshape(n, -1).any(-1).tolist()
        stop = False
        going: list[int] = []
        for j, i in enumerate(ids):
            rollout = self._slots[i]
            rollout.env_steps += int(counts[j])
            self.times.env_steps += int(counts[j])
            if done[j] or rollout.decisions >= self.horizon:
                rollout.success = bool(success[j])
                self._slots[i] = None
                self._phase[i] = _IDLE
                if stop:
                    self._finished_late.append(rollout)
                elif on_finish(rollout):
                    stop = True
            else:
                self._phase[i] = _READY
                going.append(j)
        if going:
            rows = nxt if len(going) == n else nxt[torch.tensor(going)]
            self._ready.append(([ids[j] for j in going], self._inputs(rows)))
        return stop

    def _drain(self, on_lost) -> None:
        """Wait for every result in flight (the pool must be quiet between runs)."""
        while True:
            try:
                if not (self._phase.count(_STEPPING) or self._phase.count(_RESETTING)):
                    return
                self._receive(lambda rollout: self._finished_late.append(rollout) or False, block=True)
            except _PoolFailure as failure:
                self._restart_or_raise(failure.__cause__, on_lost)

    # -- faults ---------------------------------------------------------------------------
    def _restart_or_raise(self, err: Exception, on_lost) -> None:
        dead = _dead_workers(self.env)
        if not dead:  # an env raised (a bug or bad input): not something a restart fixes
            raise RuntimeError(
                "an env raised while rolling out (not retried: a restart would raise again). Its "
                "error follows; check the contexts it was given (task ids, states) and the env.\n"
                f"{type(err).__name__}: {err}"
            ) from err
        self.times.restarts += 1
        self.restart_log.append("; ".join(dead))
        if self.times.restarts > self.max_restarts:
            raise EnvWorkerError(
                f"env workers died {self.times.restarts} times (max_restarts={self.max_restarts}); "
                f"last: {', '.join(dead)}. Earlier: {self.restart_log[:-1]}. Check the env's memory "
                "use and stability (run one env alone), or raise max_restarts."
            ) from err
        lost = [r for r in self._slots if r is not None]
        try:
            self.env.close(raise_if_closed=False)
        except Exception:  # the old pool is beyond use either way
            pass
        self.env = _rebuild_pool(self.env)
        n = self.num_slots
        self._slots, self._phase, self._ready = [None] * n, [_IDLE] * n, []
        if on_lost is not None and lost:
            on_lost(lost)
