"""The rollout loop shared by the group collector and evaluation.

A batched env has ``n`` slots. Each slot runs one rollout from a given
context; when it ends, the slot starts the next pending rollout at once, so
short rollouts never wait for long ones. One policy call per decision step
covers every busy slot.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torchrl.envs import EnvBase

from torchrl_ript.data.context import ContextDataset
from torchrl_ript.data.instructions import instruction_strings
from torchrl_ript.envs.common import context_reset_td

__all__ = ["Rollout", "RolloutEngine", "patient_worker_wait"]


@dataclass
class Rollout:
    """One rollout in flight: where it started and what it recorded."""

    context_id: int
    task_id: int
    group_id: int = -1
    steps: list = field(default_factory=list)
    env_steps: int = 0
    decisions: int = 0
    slot: int = -1
    instruction: str = ""
    success: bool = False


@dataclass
class EngineTimes:
    policy_s: float = 0.0
    env_s: float = 0.0
    bookkeeping_s: float = 0.0  # recording, finished rollouts (incl. on_finish)
    reset_s: float = 0.0  # context resets of freed slots
    decision_steps: int = 0
    env_steps: int = 0


class RolloutEngine:
    """Drive a batched context env with a policy, slot by slot.

    Args:
        env: a batched env with one batch dim speaking the context contract.
        policy: called on the busy slots' observations, writes ``action_key``.
        contexts: resolves context ids to initial states (and noise).

    Keyword Args:
        horizon: decision steps per rollout at most.
        record: ``record(rollout, policy_output_row, next_row)`` is called for
            each busy slot after every decision step (what to keep is the
            caller's choice).
        record_batch: ``record_batch(slot_ids, rollouts, policy_output, next)``
            is called once per decision step for all busy slots at once
            (``policy_output`` rows follow ``slot_ids``; ``next`` covers every
            slot). Use it instead of ``record`` to avoid per-slot indexing;
            the caller then keeps the data (``rollout.steps`` stays empty,
            ``rollout.decisions`` counts the steps).
        action_key, done_key, success_key, instruction_key, env_steps_key:
            tensordict keys.
        generator: RNG for the contexts' initial-state noise.
    """

    def __init__(
        self,
        env: EnvBase,
        policy: Callable[[TensorDictBase], TensorDictBase],
        contexts: ContextDataset,
        *,
        horizon: int,
        record: Callable | None = None,
        record_batch: Callable | None = None,
        action_key: NestedKey = "action",
        done_key: NestedKey = "done",
        success_key: NestedKey = "success",
        instruction_key: NestedKey = "language_instruction",
        env_steps_key: NestedKey = "env_steps",
        generator: torch.Generator | None = None,
    ) -> None:
        if len(env.batch_size) != 1:
            raise ValueError(
                "the rollout engine needs a batched env with one batch dim (e.g. "
                f"ParallelEnv or SerialEnv), got batch_size {tuple(env.batch_size)}."
            )
        self.env = env
        patient_worker_wait(env)
        self.policy = policy
        self.contexts = contexts
        self.horizon = int(horizon)
        if record is not None and record_batch is not None:
            raise ValueError("pass record or record_batch, not both.")
        self.record = record
        self.record_batch = record_batch
        self.action_key = action_key
        self.done_key = done_key
        self.success_key = success_key
        self.instruction_key = instruction_key
        self.env_steps_key = env_steps_key
        self.generator = generator
        self.times = EngineTimes()

    @property
    def num_slots(self) -> int:
        return self.env.batch_size[0]

    def run(
        self,
        next_rollout: Callable[[], Rollout | None],
        on_finish: Callable[[Rollout], bool],
    ) -> list[Rollout]:
        """Run until ``next_rollout`` has nothing left and all slots are idle.

        ``on_finish(rollout)`` returns ``True`` to stop at once (rollouts still
        in flight are abandoned and returned).
        """
        n = self.num_slots
        slots: list[Rollout | None] = [None] * n
        td = None
        exhausted = False

        def refill() -> list[int]:
            nonlocal exhausted
            started = []
            for i in range(n):
                if slots[i] is None and not exhausted:
                    rollout = next_rollout()
                    if rollout is None:
                        exhausted = True
                        break
                    slots[i] = rollout
                    started.append(i)
            return started

        td = self._reset(refill(), slots, None)
        batched = self.record_batch is not None
        while any(slot is not None for slot in slots):
            busy = [i for i, slot in enumerate(slots) if slot is not None]
            t0 = time.perf_counter()
            policy_in = td if len(busy) == n else td[torch.tensor(busy)]
            out = self.policy(policy_in.copy())
            t1 = time.perf_counter()
            nxt = self.env.step(self._step_input(td, out, busy)).get("next")
            t2 = time.perf_counter()
            self.times.policy_s += t1 - t0
            self.times.env_s += t2 - t1
            self.times.decision_steps += len(busy)
            done = nxt.get(self.done_key).reshape(n, -1).any(-1).tolist()
            counts = nxt.get(self.env_steps_key, None)
            counts = [1] * n if counts is None else counts.reshape(n, -1)[:, 0].tolist()
            fresh = [i for i in busy if not slots[i].decisions and not slots[i].instruction]
            if fresh and self.instruction_key in td.keys(include_nested=True):
                texts = instruction_strings(td, self.instruction_key, n)
                for i in fresh:
                    slots[i].instruction = texts[i]
            if batched:
                self.record_batch(busy, [slots[i] for i in busy], out, nxt)
            stop = False
            for j, i in enumerate(busy):
                rollout = slots[i]
                steps = int(counts[i])
                rollout.env_steps += steps
                self.times.env_steps += steps
                if not batched:
                    if self.record is not None:
                        self.record(rollout, out[j], nxt[i])
                    else:
                        rollout.steps.append(None)
                rollout.decisions += 1
                if done[i] or rollout.decisions >= self.horizon:
                    success = nxt.get(self.success_key, None)
                    rollout.success = bool(success[i].any()) if success is not None else False
                    slots[i] = None
                    if not stop and on_finish(rollout):
                        stop = True
            self.times.bookkeeping_s += time.perf_counter() - t2
            if stop:
                return [slot for slot in slots if slot is not None]
            t3 = time.perf_counter()
            td = self._reset(refill(), slots, nxt)
            self.times.reset_s += time.perf_counter() - t3
        return []

    def _reset(self, started: list[int], slots, current: TensorDictBase | None):
        n = self.num_slots
        if current is None and len(started) < n:
            current = self.env.reset()  # idle slots still need a valid observation
        if not started:
            return current
        ids = torch.tensor(started)
        context_ids = torch.zeros(n, dtype=torch.int64)
        context_ids[ids] = torch.tensor([slots[i].context_id for i in started])
        states = self.contexts.initial_states(context_ids, generator=self.generator)
        mask = torch.zeros(n, dtype=torch.bool)
        mask[ids] = True
        reset_in = context_reset_td(states, self.contexts.task_ids[context_ids], reset_mask=mask)
        reset_out = self.env.reset(reset_in)
        if current is None:
            return reset_out
        current = current.copy()
        current[ids] = reset_out[ids]
        return current

    def _step_input(self, td: TensorDictBase, out: TensorDictBase, busy: list[int]):
        n = self.num_slots
        action = out.get(self.action_key)
        step_in = td.copy()
        if len(busy) == n:
            step_in.set(self.action_key, action)
            return step_in
        ids = torch.tensor(busy)
        full = torch.zeros((n, *action.shape[1:]), dtype=action.dtype)
        full[ids] = action
        step_in.set(self.action_key, full)
        mask = torch.zeros(n, 1, dtype=torch.bool)
        mask[ids] = True
        step_in.set("_step", mask)  # idle slots do not step (TorchRL partial steps)
        return step_in


def patient_worker_wait(env: EnvBase, *, spins: int = 64, sleep_s: float = 5e-5) -> bool:
    """Make a :class:`~torchrl.envs.ParallelEnv` wait for its workers without busy-spinning.

    With shared buffers (the default), TorchRL's ``ParallelEnv`` waits for a
    step by spinning on shared-memory flags in the main process: it holds a
    whole core for as long as the workers simulate and render. When the
    machine has no spare core for it (workers >= cores), that spinning takes
    CPU from the workers themselves. This replaces the wait of ``env`` (only
    this instance) by a short spin followed by ``sleep_s`` naps, which costs
    at most ~``sleep_s`` latency per step. Returns ``True`` if ``env`` (or the
    batched env under its transforms) was patched.
    """
    from torchrl.envs import ParallelEnv, TransformedEnv

    base = env
    while isinstance(base, TransformedEnv):
        base = base.base_env
    # (no getattr of unknown names here: a ParallelEnv forwards them to its
    # workers and starts them)
    if not isinstance(base, ParallelEnv) or "_ript_patient_wait" in base.__dict__:
        return False
    original = type(base)._wait_for_workers.__get__(base)

    def wait(workers_range):
        flags = getattr(base, "_shm_done_flags", None)
        if not getattr(base, "_use_buffers", False) or flags is None:
            return original(workers_range)
        indices = base._worker_indices
        timeout = getattr(base, "BATCHED_PIPE_TIMEOUT", 10_000.0)
        t0 = time.monotonic()
        n = 0
        while True:
            for i in workers_range:
                if not flags[indices[i]]:
                    break
            else:
                for i in workers_range:
                    flags[indices[i]] = 0
                return
            n += 1
            if n <= spins:
                continue
            time.sleep(sleep_s)
            if n % 4096 == 0:  # every ~0.3 s: timeout and dead workers
                if time.monotonic() - t0 > timeout:
                    raise RuntimeError(
                        f"Failed to run all workers within the {timeout} sec time limit. This "
                        "threshold can be increased via the BATCHED_PIPE_TIMEOUT env variable."
                    )
                for i in workers_range:
                    if not flags[indices[i]] and not base._workers[i].is_alive():
                        return original(workers_range)  # raises "worker dead"

    base.__dict__["_ript_patient_wait"] = True
    base.__dict__["_wait_for_workers"] = wait
    return True

