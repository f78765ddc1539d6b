"""RIPT environments: the context-reset contract and the envs that speak it."""
from torchrl_ript.envs.common import (
    CONTEXT_STATE_KEY,
    ENV_STEPS_KEY,
    SET_STATE_KEY,
    SUCCESS_KEY,
    TASK_ID_KEY,
    context_reset_td,
    context_state_spec,
    read_context,
)
from torchrl_ript.envs.libero import (
    LIBERO_MAX_STEPS,
    LIBERO_SUITES,
    LiberoContextEnv,
    ensure_libero,
    libero_available,
    libero_contexts,
    libero_suite_tasks,
    pad_state,
    write_libero_rollout_demos,
)
from torchrl_ript.envs.metaworld import (
    METAWORLD_INSTRUCTIONS,
    MetaWorldEnv,
    metaworld_contexts,
    metaworld_task_names,
)
from torchrl_ript.envs.rendering import apply_render_quality, select_gl_backend
from torchrl_ript.envs.toy import ContextToyVLAEnv

__all__ = [
    "CONTEXT_STATE_KEY",
    "ENV_STEPS_KEY",
    "SET_STATE_KEY",
    "SUCCESS_KEY",
    "TASK_ID_KEY",
    "context_reset_td",
    "context_state_spec",
    "read_context",
    "ContextToyVLAEnv",
    "LIBERO_MAX_STEPS",
    "LIBERO_SUITES",
    "LiberoContextEnv",
    "pad_state",
    "libero_contexts",
    "libero_suite_tasks",
    "write_libero_rollout_demos",
    "ensure_libero",
    "libero_available",
    "METAWORLD_INSTRUCTIONS",
    "MetaWorldEnv",
    "metaworld_contexts",
    "metaworld_task_names",
    "apply_render_quality",
    "select_gl_backend",
]
