"""Context datasets and demonstration files (no simulator imports: the
benchmark-specific context builders live with their envs, e.g.
:func:`torchrl_ript.envs.libero.libero_contexts`)."""
from torchrl_ript.data.context import ContextDataset
from torchrl_ript.data.demos import (
    LIBERO_KEY_MAP,
    DemoFile,
    DemoStarts,
    DemoWriter,
    demos_to_bc_dataset,
    read_demo_attrs,
    read_demo_starts,
    read_demos,
)
from torchrl_ript.data.samplers import (
    AdaptiveSampler,
    ContextSampler,
    PerTaskSampler,
    UniformSampler,
)

__all__ = [
    "AdaptiveSampler",
    "ContextDataset",
    "ContextSampler",
    "LIBERO_KEY_MAP",
    "DemoFile",
    "DemoStarts",
    "DemoWriter",
    "PerTaskSampler",
    "UniformSampler",
    "demos_to_bc_dataset",
    "read_demo_attrs",
    "read_demo_starts",
    "read_demos",
]
