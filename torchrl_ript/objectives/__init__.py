"""RIPT objectives: TorchRL's ClipPPOLoss on grouped trajectory rows."""
from torchrl_ript.objectives.ppo import RIPTClipPPOLoss

__all__ = ["RIPTClipPPOLoss"]


def __getattr__(name: str):
    if name == "TrajectoryClipPPOLoss":  # deprecated alias, warns
        from torchrl_ript.objectives import ppo

        return ppo.__getattr__(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
