"""The batch layout of :class:`~torchrl_ript.GroupCollector`: one row per trajectory.

Each trajectory is one row (``batch_size [B]``) with its group/context/task
ids, reward, success, length, env steps, policy version, trajectory
log-prob (the sum over decisions, Eq. 8) and a zero-padded ``steps``
sub-tensordict ``[B, T]`` of the decisions (``("steps", "mask")`` marks the
real ones) holding only what the loss reads: the policy's observation
inputs, the sampled action and its per-decision log-prob.
:class:`StepRecorder` writes the decisions of all env slots into one
preallocated ``[slots, T]`` buffer; :func:`trajectory_row` copies a
finished rollout's row out of it.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from tensordict import NonTensorStack, TensorDict, TensorDictBase
from tensordict.utils import NestedKey

__all__ = ["StepRecorder", "trajectory_row"]


class StepRecorder:
    """Decisions of every env slot, ``[n_slots, T]``, allocated on the first write.

    Args:
        n_slots: env slots of the pool.
        horizon: T, decisions per rollout at most.
        observation_keys: the policy inputs to keep.
        sampled_key: what the loss scores (the action, or the action tokens).
        log_prob_key: the per-decision log-prob the actor wrote.

    Examples:
        >>> rec = StepRecorder(2, 3, [("observation", "state")], "action", "action_log_prob")
        >>> out = TensorDict({("observation", "state"): torch.ones(2, 4), "action": torch.zeros(2, 2),
        ...                   "action_log_prob": torch.tensor([-1.0, -2.0])}, [2])
        >>> rec.write([1, 0], [0, 0], out)  # slot 1 and slot 0, both at their first decision
        >>> rec.take(1, 1)["action_log_prob"]
        tensor([-1.,  0.,  0.])
    """

    def __init__(self, n_slots: int, horizon: int, observation_keys, sampled_key: NestedKey,
                 log_prob_key: NestedKey) -> None:
        self.n_slots, self.horizon = int(n_slots), int(horizon)
        self.keys = [*observation_keys, sampled_key, log_prob_key]
        self.td: TensorDict | None = None
        self.leaves: list | None = None

    def write(self, slots: list[int], times: list[int], out: TensorDictBase) -> None:
        """Record decision ``times[j]`` of slot ``slots[j]`` from row ``j`` of ``out``."""
        if self.td is None:
            missing = [k for k in self.keys if k not in out.keys(True)]
            if missing:
                raise KeyError(
                    f"the policy output lacks {missing}: the collector stores the observations "
                    "the policy reads, the sampled action and its log-prob. Check the actor's "
                    "keys or GroupCollector.set_keys(...)."
                )
            row = out[:1].select(*self.keys)[0]
            self.td = row.expand(self.n_slots, self.horizon).clone().zero_()
            self.leaves = list(self.td.keys(True, True))
        ids, ts = torch.tensor(slots), torch.tensor(times)
        for key in self.leaves:
            self.td.get(key)[ids, ts] = out.get(key)

    def take(self, slot: int, length: int) -> TensorDict:
        """A copy of a slot's first ``length`` decisions, zero padded to T."""
        steps = self.td[slot].clone()
        if length < self.horizon:
            steps[length:].zero_()
        return steps


def trajectory_row(
    steps: TensorDictBase,
    *,
    length: int,
    group_id: int,
    context_id: int,
    task_id: int,
    success: bool,
    env_steps: int,
    traj_id: int,
    policy_version: int,
    instruction: str,
    keys: Mapping[str, NestedKey] | None = None,
) -> TensorDict:
    """One trajectory row ``[1]`` (see the module doc) from its ``[T]`` decisions.

    ``keys`` renames entries (the collector's accepted keys): ``group_id``,
    ``context_id``, ``task_id``, ``reward``, ``success``, ``log_prob``
    (default ``"action_log_prob"``) and ``instruction`` (default
    ``"language_instruction"``).

    Examples:
        >>> steps = TensorDict(action_log_prob=torch.tensor([-1.0, -2.0, 0.0]), batch_size=[3])
        >>> row = trajectory_row(steps, length=2, group_id=0, context_id=3, task_id=0, success=True,
        ...                      env_steps=2, traj_id=0, policy_version=0, instruction="reach",
        ...                      keys={"reward": "R"})
        >>> row["R"], row["action_log_prob"], row["steps", "mask"]
        (tensor([[1.]]), tensor([-3.]), tensor([[ True,  True, False]]))
    """
    names = {**_ROW_KEYS, **(keys or {})}
    horizon = steps.shape[0]
    mask = torch.zeros(horizon, dtype=torch.bool)
    mask[:length] = True
    steps.set("mask", mask)
    log_prob = steps.get(names["log_prob"])
    row = TensorDict(
        {
            names["group_id"]: torch.tensor(group_id),
            names["context_id"]: torch.tensor(context_id),
            names["task_id"]: torch.tensor(task_id),
            names["reward"]: torch.tensor([float(success)]),
            names["success"]: torch.tensor([bool(success)]),
            "length": torch.tensor(length),
            "env_steps": torch.tensor(env_steps),
            "policy_version": torch.tensor(policy_version),
            # TorchRL's trajectory id (multi-process collectors count these)
            ("collector", "traj_ids"): torch.tensor(traj_id),
            # (per-action log-probs, ratio="action": [T, chunk])
            names["log_prob"]: (log_prob * mask.to(log_prob.dtype).reshape(-1, *(1,) * (log_prob.ndim - 1))).sum(),
            "steps": steps,
        },
        batch_size=[],
    ).unsqueeze(0)
    row.set(names["instruction"], NonTensorStack(instruction))
    return row


_ROW_KEYS: dict[str, NestedKey] = {
    "group_id": "group_id",
    "context_id": "context_id",
    "task_id": "task_id",
    "reward": "reward",
    "success": "success",
    "log_prob": "action_log_prob",
    "instruction": "language_instruction",
}
