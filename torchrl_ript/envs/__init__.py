"""RIPT environments: the context-reset contract and the envs that speak it."""
from torchrl_ript.envs.common import (
    CONTEXT_STATE_KEY,
    SET_STATE_KEY,
    SUCCESS_KEY,
    TASK_ID_KEY,
    context_reset_td,
    context_state_spec,
    read_context,
)
from torchrl_ript.envs.toy import ContextToyVLAEnv

__all__ = [
    "CONTEXT_STATE_KEY",
    "SET_STATE_KEY",
    "SUCCESS_KEY",
    "TASK_ID_KEY",
    "context_reset_td",
    "context_state_spec",
    "read_context",
    "ContextToyVLAEnv",
]
