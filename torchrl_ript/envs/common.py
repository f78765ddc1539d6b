"""The context-reset contract every RIPT environment speaks.

RIPT rolls a policy out K times from *exactly* the same initial context. TorchRL
environments reset from their own RNG, so we add a small, explicit contract on
top of TorchRL's canonical VLA schema (``torchrl/envs/custom/vla.py``):

Inputs at reset (entries of the environment's ``state_spec``, so they travel
through :class:`~torchrl.envs.ParallelEnv` shared buffers to every worker):

- ``"set_state"``: ``bool [1]``. When ``True`` the env starts from the context
  below; when ``False`` it resets as it normally would (its own random start).
- ``"context_state"``: ``float64 [D]``: the initial simulator state, in the
  env's own encoding (MetaWorld: the task's ``rand_vec``; LIBERO: the
  flattened MuJoCo state; the toy env: the target). ``D`` is fixed per env.
- ``"task_id"``: ``int64 [1]``: index into the env's ``task_names``.

Outputs (observation spec), in the canonical VLA layout:

- ``("observation", "image")``: ``uint8 [3, H, W]`` main camera;
  ``("observation", "wrist_image")`` for a second camera when there is one;
- ``("observation", "state")``: ``float32 [S]`` proprioception;
- ``"language_instruction"``: the task sentence (non-tensor);
- ``"task_id"``: ``int64 [1]``; ``"success"``: ``bool [1]``;
- ``"reward"``: ``float32 [1]``: 1 on the step success is first reached, else 0;
- ``"env_steps"`` (optional): ``int64 [1]``, raw simulator steps this ``step``
  ran (a chunked step runs several; 0 after reset). Without it a collector
  counts one per step;
- ``"terminated"`` on success, ``"truncated"`` at the time limit.

Reset also echoes ``"context_state"`` and ``"set_state"`` (TorchRL's
``check_env_specs`` expects state entries in the reset output).

An env may execute an action *chunk* ``[n, A]`` per ``step`` (and render only
once, after the chunk): that is what a decision step of a chunked VLA is.
"""
from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase

from torchrl.data import Categorical, Composite, Unbounded

__all__ = [
    "SET_STATE_KEY",
    "CONTEXT_STATE_KEY",
    "TASK_ID_KEY",
    "SUCCESS_KEY",
    "ENV_STEPS_KEY",
    "context_state_spec",
    "context_reset_td",
    "read_context",
]

SET_STATE_KEY = "set_state"
CONTEXT_STATE_KEY = "context_state"
TASK_ID_KEY = "task_id"
SUCCESS_KEY = "success"
ENV_STEPS_KEY = "env_steps"


def context_state_spec(state_dim: int, *, device=None) -> Composite:
    """The ``state_spec`` entries an env adds to accept context resets.

    Examples:
        >>> spec = context_state_spec(4)
        >>> spec["context_state"].shape, spec["context_state"].dtype
        (torch.Size([4]), torch.float64)
    """
    if state_dim < 1:
        raise ValueError(f"state_dim must be >= 1, got {state_dim}.")
    return Composite(
        {
            SET_STATE_KEY: Categorical(2, shape=(1,), dtype=torch.bool, device=device),
            CONTEXT_STATE_KEY: Unbounded(
                shape=(state_dim,), dtype=torch.float64, device=device
            ),
            TASK_ID_KEY: Unbounded(shape=(1,), dtype=torch.int64, device=device),
        },
        device=device,
    )


def context_reset_td(
    states: torch.Tensor,
    task_ids: torch.Tensor,
    *,
    reset_mask: torch.Tensor | None = None,
) -> TensorDict:
    """Build the tensordict that resets a batch of envs to given contexts.

    Args:
        states: ``[n, D]`` initial states, one row per env.
        task_ids: ``[n]`` task indices.

    Keyword Args:
        reset_mask: ``[n]`` bool, which envs to reset (default: all).

    Examples:
        >>> td = context_reset_td(torch.zeros(2, 3), torch.tensor([0, 1]))
        >>> td["set_state"].shape, td["context_state"].dtype
        (torch.Size([2, 1]), torch.float64)
    """
    n = states.shape[0]
    if task_ids.shape[0] != n:
        raise ValueError(
            f"states has {n} rows but task_ids has {task_ids.shape[0]}: give one "
            "task id per state."
        )
    td = TensorDict(
        {
            SET_STATE_KEY: torch.ones(n, 1, dtype=torch.bool),
            CONTEXT_STATE_KEY: states.to(torch.float64),
            TASK_ID_KEY: task_ids.to(torch.int64).reshape(n, 1),
        },
        batch_size=[n],
    )
    if reset_mask is not None:
        td.set("_reset", reset_mask.to(torch.bool).reshape(n, 1))
    return td


def read_context(tensordict: TensorDictBase | None) -> tuple[torch.Tensor, int] | None:
    """Inside an env's ``_reset``: the ``(state, task_id)`` to start from, or ``None``.

    ``None`` means no context was asked for (``set_state`` absent or ``False``):
    reset as usual.
    """
    if tensordict is None:
        return None
    flag = tensordict.get(SET_STATE_KEY, None)
    if flag is None or not bool(flag.reshape(-1)[0]):
        return None
    state = tensordict.get(CONTEXT_STATE_KEY, None)
    if state is None:
        raise KeyError(
            f"reset asked for set_state=True but no {CONTEXT_STATE_KEY!r} was given: "
            "build the reset input with torchrl_ript.envs.context_reset_td."
        )
    task = tensordict.get(TASK_ID_KEY, None)
    task_id = 0 if task is None else int(task.reshape(-1)[0])
    return state.reshape(-1), task_id
