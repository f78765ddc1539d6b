"""Context datasets and demonstration files (no simulator imports: the
benchmark-specific context builders live with their envs, e.g.
:func:`torchrl_ript.envs.libero_contexts.libero_contexts`)."""
from torchrl_ript.data.context import ContextDataset
from torchrl_ript.data.demos import LIBERO_KEY_MAP, DemoFile, DemoWriter, demos_to_bc_dataset, read_demos

__all__ = ["ContextDataset", "LIBERO_KEY_MAP", "DemoFile", "DemoWriter", "demos_to_bc_dataset", "read_demos"]
