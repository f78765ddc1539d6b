"""RIPT actors: token (categorical) and continuous (Laplace/Gaussian) policies."""
from torchrl_ript.modules.actors import (
    ContinuousScoring,
    make_continuous_actor,
    make_rollout_policy,
    make_token_actor,
    score_per_action,
)
from torchrl_ript.modules.distributions import (
    IndependentLaplace,
    IndependentGaussian,
    TokenCategorical,
)
from torchrl_ript.modules.scale_head import ScaleHead, chunk_nll, fit_scale_head

__all__ = [
    "ContinuousScoring",
    "score_per_action",
    "make_continuous_actor",
    "make_rollout_policy",
    "make_token_actor",
    "IndependentLaplace",
    "IndependentGaussian",
    "TokenCategorical",
    "ScaleHead",
    "chunk_nll",
    "fit_scale_head",
]
