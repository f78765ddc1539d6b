"""torchrl-ript: RIPT-VLA (reinforcement interactive post-training of VLAs) on TorchRL."""
from torchrl_ript.collectors import CollectionStats, GroupCollector, make_ript_replay_buffer
from torchrl_ript.data import ContextDataset, DemoFile, DemoWriter, demos_to_bc_dataset, read_demos
from torchrl_ript.envs import (
    ContextToyVLAEnv,
    LiberoContextEnv,
    MetaWorldEnv,
    ensure_libero,
    libero_contexts,
    context_reset_td,
    context_state_spec,
    metaworld_contexts,
    read_context,
    select_gl_backend,
)
from torchrl_ript.modules import (
    IndependentLaplace,
    IndependentGaussian,
    ScaleHead,
    TokenCategorical,
    chunk_nll,
    fit_scale_head,
    make_continuous_actor,
    make_rollout_policy,
    make_token_actor,
)
from torchrl_ript.objectives import RIPTClipPPOLoss
from torchrl_ript.trainers import (
    RIPTTrainer,
    evaluate_success,
    make_optimizer,
    make_param_groups,
    make_scheduler,
    save_video,
)
from torchrl_ript.transforms import ContextOutcomeFeed, RLOOAdvantage, ZeroAdvantageFilter

__version__ = "0.1.0"

__all__ = [
    "CollectionStats",
    "GroupCollector",
    "make_ript_replay_buffer",
    "ContextDataset",
    "DemoFile",
    "DemoWriter",
    "demos_to_bc_dataset",
    "read_demos",
    "ContextToyVLAEnv",
    "MetaWorldEnv",
    "LiberoContextEnv",
    "ensure_libero",
    "libero_contexts",
    "metaworld_contexts",
    "select_gl_backend",
    "context_reset_td",
    "context_state_spec",
    "read_context",
    "IndependentLaplace",
    "IndependentGaussian",
    "ScaleHead",
    "TokenCategorical",
    "chunk_nll",
    "fit_scale_head",
    "make_continuous_actor",
    "make_rollout_policy",
    "make_token_actor",
    "RIPTClipPPOLoss",
    "RIPTTrainer",
    "evaluate_success",
    "make_optimizer",
    "make_param_groups",
    "make_scheduler",
    "save_video",
    "ContextOutcomeFeed",
    "RLOOAdvantage",
    "ZeroAdvantageFilter",
]
