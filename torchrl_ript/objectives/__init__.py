"""RIPT objectives: TorchRL's ClipPPOLoss on trajectory log-probs."""
from torchrl_ript.objectives.ppo import TrajectoryClipPPOLoss

__all__ = ["TrajectoryClipPPOLoss"]
