"""Context datasets and trajectory data helpers."""
from torchrl_ript.data.context import ContextDataset

__all__ = ["ContextDataset"]
