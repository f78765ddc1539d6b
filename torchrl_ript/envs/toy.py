"""TorchRL's ``ToyVLAEnv`` (tracking mode) with exact context resets."""
from __future__ import annotations

import hashlib

import torch
from tensordict import TensorDictBase
from torchrl.data import Composite, Unbounded
from torchrl.envs.custom.vla import ToyVLAEnv

from torchrl_ript.envs.common import (
    CONTEXT_STATE_KEY,
    SET_STATE_KEY,
    TASK_ID_KEY,
    context_state_spec,
    read_context,
)

__all__ = ["ContextToyVLAEnv"]


class ContextToyVLAEnv(ToyVLAEnv):
    """A fast, exact-reset env whose success depends on the policy.

    TorchRL's :class:`~torchrl.envs.custom.ToyVLAEnv` in tracking mode: the
    target action sits in the state (``state[A:2A]``) and success means acting
    within ``success_tol`` of it for ``success_steps`` consecutive steps. This
    subclass adds what RIPT needs and the base class lacks:

    - the context-reset contract of :mod:`torchrl_ript.envs.common`: the
      context state *is* the target, and the random camera image is re-seeded
      from it, so K envs reset to one context give bitwise-equal observations;
    - the binary success reward (1 on the step success is reached, else 0);
    - a ``task_id`` entry and a time limit (``max_steps``, truncation).

    Keyword Args:
        action_dim, state_dim, image_shape, success_steps, success_tol:
            as :class:`~torchrl.envs.custom.ToyVLAEnv`.
        max_steps (int): time limit in steps. Defaults to ``8``.
        task_names (list of str): tasks (all share the dynamics; the id and
            instruction differ). Defaults to ``["track"]``.
        seed (int, optional): seed of the env's own (non-context) resets.

    Examples:
        >>> from torchrl_ript.envs import ContextToyVLAEnv, context_reset_td
        >>> env = ContextToyVLAEnv(action_dim=2, max_steps=4)
        >>> td = env.reset(context_reset_td(torch.tensor([[0.1, -0.2]]), torch.tensor([0]))[0])
        >>> td["observation", "state"][2:4]
        tensor([ 0.1000, -0.2000])
        >>> td["action"] = torch.tensor([0.1, -0.2])
        >>> out = env.step(td)["next"]
        >>> bool(out["success"]), float(out["reward"]), bool(out["terminated"])
        (True, 1.0, True)
    """

    def __init__(
        self,
        *,
        action_dim: int = 2,
        state_dim: int | None = None,
        image_shape: tuple[int, int, int] = (3, 8, 8),
        success_steps: int = 1,
        success_tol: float = 0.25,
        max_steps: int = 8,
        task_names: list[str] | None = None,
        seed: int | None = None,
    ) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}.")
        self.task_names = list(task_names or ["track"])
        super().__init__(
            action_dim=action_dim,
            state_dim=state_dim if state_dim is not None else 2 * action_dim,
            image_shape=image_shape,
            success_steps=success_steps,
            success_tol=success_tol,
            seed=seed,
        )
        self.max_steps = int(max_steps)
        self._steps = 0
        self._task_id = 0
        self.state_spec = context_state_spec(action_dim)
        done = self.done_spec["done"]
        self.done_spec = Composite(done=done.clone(), terminated=done.clone(), truncated=done.clone())
        self.observation_spec[TASK_ID_KEY] = Unbounded(shape=(1,), dtype=torch.int64)
        self.observation_spec["language_instruction"].example_data = self.task_names[0]

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs):
        context = read_context(tensordict)
        out = super()._reset(tensordict, **kwargs)
        if context is not None:
            state, self._task_id = context
            self._target = state.to(self._target.dtype).reshape(self._target.shape)
            self._rng.manual_seed(_digest(state))
            self.instruction = self.task_names[self._task_id]
            out = self._obs(self._make_state(None))
            out["success"] = torch.zeros(1, dtype=torch.bool)
            out.update(self.full_done_spec.zero())
        self._steps = 0
        out[TASK_ID_KEY] = torch.tensor([self._task_id])
        out[SET_STATE_KEY] = torch.tensor([context is not None])
        out[CONTEXT_STATE_KEY] = self._target.to(torch.float64).clone()
        return out

    def _step(self, tensordict: TensorDictBase):
        out = super()._step(tensordict)
        self._steps += 1
        success = out["success"]
        out["reward"] = success.to(torch.float32)
        out["truncated"] = torch.tensor([self._steps >= self.max_steps]) & ~success
        out["done"] = out["terminated"] | out["truncated"]
        out[TASK_ID_KEY] = torch.tensor([self._task_id])
        return out


def _digest(state: torch.Tensor) -> int:
    raw = state.detach().to(torch.float64).cpu().numpy().tobytes()
    return int.from_bytes(hashlib.sha256(raw).digest()[:7], "little")
