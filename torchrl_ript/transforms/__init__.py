"""Replay-buffer transforms: leave-one-out advantage, dynamic rejection, the context-outcome feed."""
from torchrl_ript.transforms.group_advantage import RLOOAdvantage, ZeroAdvantageFilter, random_sign_advantages
from torchrl_ript.transforms.outcome_feed import ContextOutcomeFeed

__all__ = ["ContextOutcomeFeed", "RLOOAdvantage", "ZeroAdvantageFilter", "random_sign_advantages"]
