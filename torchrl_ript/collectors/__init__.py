"""Collectors: grouped rollouts from exact contexts with dynamic sampling."""
from torchrl_ript.collectors.engine import EnvWorkerError, Rollout, RolloutEngine, as_env_pool
from torchrl_ript.collectors.group import GroupCollector, make_ript_replay_buffer
from torchrl_ript.collectors.stats import CollectionStats

__all__ = [
    "CollectionStats",
    "EnvWorkerError",
    "GroupCollector",
    "Rollout",
    "RolloutEngine",
    "as_env_pool",
    "make_ript_replay_buffer",
]
