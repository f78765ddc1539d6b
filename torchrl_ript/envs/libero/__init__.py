"""LIBERO for RIPT: the context env, its context datasets, env factories, scripted experts.

Modules, each importing only the ones listed before it (no import circle):

- :mod:`~torchrl_ript.envs.libero.setup`: make an installed LIBERO usable
  headless (config file, assets, GL backend) before ``libero`` is imported;
- :mod:`~torchrl_ript.envs.libero.env`: :class:`LiberoContextEnv` (TorchRL's
  ``LiberoEnv`` with exact context resets), the suites and their tasks;
- :mod:`~torchrl_ript.envs.libero.contexts`: :func:`libero_contexts` (benchmark
  init states, demo first states or fresh draws as a ``ContextDataset``) and
  LIBERO-layout rollout files;
- :mod:`~torchrl_ript.envs.libero.factory`: :class:`LiberoMultiTaskEnv`,
  :func:`libero_env_fn` and the demo-file helpers of a RIPT run;
- :mod:`~torchrl_ript.envs.libero.experts`: scripted pick-and-place experts
  and their demo writer, also a command line
  (``python -m torchrl_ript.envs.libero.experts --help``).

``experts`` is not imported here: ``python -m`` would otherwise find it already
imported by this package and warn (import it from its module). Nothing here
imports ``libero`` or ``robosuite`` at import time; they are imported when an
env or a task list is first built, after :func:`ensure_libero`.

Examples:
    >>> from torchrl_ript.envs.libero import LIBERO_SUITES, pad_state
    >>> LIBERO_SUITES[:2]
    ('libero_spatial', 'libero_object')
    >>> pad_state([1.0], 3)
    tensor([1., 0., 0.], dtype=torch.float64)
"""
from torchrl_ript.envs.libero.contexts import libero_contexts, sample_libero_starts, write_libero_rollout_demos
from torchrl_ript.envs.libero.env import (
    LIBERO_CONTEXT_STATE_DIM,
    LIBERO_MAX_STEPS,
    LIBERO_PROPRIO_KEYS,
    LIBERO_SUITES,
    LiberoContextEnv,
    libero_suite_tasks,
    pad_state,
)
from torchrl_ript.envs.libero.factory import (
    LiberoMultiTaskEnv,
    find_libero_demo_files,
    libero_env_fn,
    read_libero_demo_files,
    write_random_libero_demos,
)
from torchrl_ript.envs.libero.setup import LIBERO_CONFIG_KEYS, ensure_libero, libero_available, libero_config_file

__all__ = [
    "LIBERO_CONFIG_KEYS",
    "LIBERO_CONTEXT_STATE_DIM",
    "LIBERO_MAX_STEPS",
    "LIBERO_PROPRIO_KEYS",
    "LIBERO_SUITES",
    "LiberoContextEnv",
    "LiberoMultiTaskEnv",
    "ensure_libero",
    "find_libero_demo_files",
    "libero_available",
    "libero_config_file",
    "libero_contexts",
    "libero_env_fn",
    "libero_suite_tasks",
    "pad_state",
    "read_libero_demo_files",
    "sample_libero_starts",
    "write_libero_rollout_demos",
    "write_random_libero_demos",
]
