"""Collectors: grouped rollouts from exact contexts with dynamic sampling."""
from torchrl_ript.collectors.distributed import (
    RayCollectionStats,
    RayGroupCollector,
    RayWorkerError,
    RemoteGroupCollector,
    merge_collection_stats,
)
from torchrl_ript.collectors.group import CollectionStats, GroupCollector, make_ript_replay_buffer

__all__ = [
    "CollectionStats",
    "GroupCollector",
    "make_ript_replay_buffer",
    "RayCollectionStats",
    "RayGroupCollector",
    "RayWorkerError",
    "RemoteGroupCollector",
    "merge_collection_stats",
]
