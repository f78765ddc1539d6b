"""torchrl-ript: RIPT-VLA (reinforcement interactive post-training of VLAs) on TorchRL."""
from torchrl_ript.collectors import CollectionStats, GroupCollector, make_ript_replay_buffer
from torchrl_ript.data import ContextDataset
from torchrl_ript.envs import ContextToyVLAEnv, context_reset_td, context_state_spec, read_context
from torchrl_ript.modules import (
    IndependentLaplace,
    IndependentNormal,
    ScaleHead,
    TokenCategorical,
    chunk_nll,
    fit_scale_head,
    make_continuous_actor,
    make_rollout_policy,
    make_token_actor,
)
from torchrl_ript.transforms import RLOOAdvantage, ZeroAdvantageFilter

__version__ = "0.1.0"

__all__ = [
    "CollectionStats",
    "GroupCollector",
    "make_ript_replay_buffer",
    "ContextDataset",
    "ContextToyVLAEnv",
    "context_reset_td",
    "context_state_spec",
    "read_context",
    "IndependentLaplace",
    "IndependentNormal",
    "ScaleHead",
    "TokenCategorical",
    "chunk_nll",
    "fit_scale_head",
    "make_continuous_actor",
    "make_rollout_policy",
    "make_token_actor",
    "RLOOAdvantage",
    "ZeroAdvantageFilter",
]
