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
from torchrl_ript.envs.common import context_reset_td

__all__ = ["Rollout", "RolloutEngine"]


@dataclass
class Rollout:
    """One rollout in flight: where it started and what it recorded."""

    context_id: int
    task_id: int
    group_id: int = -1
    steps: list = field(default_factory=list)
    env_steps: int = 0
    instruction: str = ""
    success: bool = False


@dataclass
class EngineTimes:
    policy_s: float = 0.0
    env_s: float = 0.0
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
        self.policy = policy
        self.contexts = contexts
        self.horizon = int(horizon)
        self.record = record
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
        while any(slot is not None for slot in slots):
            busy = [i for i, slot in enumerate(slots) if slot is not None]
            t0 = time.perf_counter()
            policy_in = td if len(busy) == n else td[busy]
            out = self.policy(policy_in.copy())
            t1 = time.perf_counter()
            nxt = self.env.step(self._step_input(td, out, busy)).get("next")
            self.times.policy_s += t1 - t0
            self.times.env_s += time.perf_counter() - t1
            self.times.decision_steps += len(busy)
            done = nxt.get(self.done_key).reshape(n, -1).any(-1)
            stop = False
            for j, i in enumerate(busy):
                rollout = slots[i]
                if not rollout.steps and not rollout.instruction:
                    rollout.instruction = _text(td[i], self.instruction_key)
                row = nxt[i]
                steps = _count(row, self.env_steps_key)
                rollout.env_steps += steps
                self.times.env_steps += steps
                if self.record is not None:
                    self.record(rollout, out[j], row)
                else:
                    rollout.steps.append(None)
                if bool(done[i]) or len(rollout.steps) >= self.horizon:
                    success = row.get(self.success_key, None)
                    rollout.success = bool(success.any()) if success is not None else False
                    slots[i] = None
                    if not stop and on_finish(rollout):
                        stop = True
            if stop:
                return [slot for slot in slots if slot is not None]
            td = self._reset(refill(), slots, nxt)
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


def _count(row: TensorDictBase, key) -> int:
    # chunked envs report how many raw steps a decision ran; else one
    value = row.get(key, None)
    return 1 if value is None else int(value.reshape(-1)[0])


def _text(row: TensorDictBase, key) -> str:
    value = row.get(key, None)
    if value is None:
        return ""
    return value if isinstance(value, str) else str(getattr(value, "data", value))
