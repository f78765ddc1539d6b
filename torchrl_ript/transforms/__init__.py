"""Replay-buffer transforms: leave-one-out advantage and dynamic rejection."""
from torchrl_ript.transforms.group_advantage import RLOOAdvantage, ZeroAdvantageFilter

__all__ = ["RLOOAdvantage", "ZeroAdvantageFilter"]
