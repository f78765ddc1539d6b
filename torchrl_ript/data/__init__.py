"""Context datasets and demonstration files."""
from torchrl_ript.data.context import ContextDataset
from torchrl_ript.data.libero_contexts import libero_contexts, libero_suite_tasks, write_libero_rollout_demos
from torchrl_ript.data.demos import LIBERO_KEY_MAP, DemoFile, DemoWriter, demos_to_bc_dataset, read_demos

__all__ = [
    "libero_contexts",
    "libero_suite_tasks",
    "write_libero_rollout_demos",
    "ContextDataset", "LIBERO_KEY_MAP", "DemoFile", "DemoWriter", "demos_to_bc_dataset", "read_demos"]
