"""RIPT objectives: TorchRL's ClipPPOLoss on grouped trajectory rows."""
from torchrl_ript.objectives.ppo import RIPTClipPPOLoss

__all__ = ["RIPTClipPPOLoss"]
