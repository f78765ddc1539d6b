"""Context datasets and demonstration files."""
from torchrl_ript.data.context import ContextDataset
from torchrl_ript.data.demos import LIBERO_KEY_MAP, DemoFile, DemoWriter, demos_to_bc_dataset, read_demos

__all__ = ["ContextDataset", "LIBERO_KEY_MAP", "DemoFile", "DemoWriter", "demos_to_bc_dataset", "read_demos"]
