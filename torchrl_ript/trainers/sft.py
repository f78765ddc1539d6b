"""Behaviour cloning (SFT) of the RIPT policies from demonstrations.

Data: per-demo tensordicts ``[T]`` with the canonical observation keys and
``"action"`` ``[T, A]`` (what ``torchrl_ript.data.demos`` yields) are cut into
training rows by :func:`chunk_demo_files` / :func:`make_chunk_dataset`, on
TorchRL's ``ActionChunkTransform``
(:func:`torchrl_ript.data.demos.demos_to_bc_dataset`): the observation at
``t``, ``"action"`` ``[chunk, A]`` = actions ``t .. t+chunk-1`` (past the end:
the last action repeated) and ``"action_mask"`` ``[chunk]`` (``False`` on that
padding).

Recipes live with their policies (each policy kind's
:attr:`~torchrl_ript.models.registry.PolicyKind.sft`) and are re-exported
here:

* QueST (:mod:`torchrl_ript.models.quest`): :func:`train_quest_autoencoder`
  (stage 1, L1 reconstruction), then :func:`train_quest_prior` (stage 2,
  token NLL, autoencoder frozen); :func:`train_quest` runs both.
* Regression (OFT-style, :mod:`torchrl_ript.models.regression_policy`):
  :func:`train_regression` (mean head, L1 or MSE), then
  :func:`fit_regression_scale` (scale head by NLL, everything else frozen;
  :func:`torchrl_ript.modules.fit_scale_head`).

Every loop (:func:`~torchrl_ript.models.bc.train_bc`) shows a tqdm bar,
restores the module's train/eval mode and returns the per-step losses.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey

from torchrl_ript.data.demos import DemoFile, demos_to_bc_dataset
from torchrl_ript.models.bc import masked_l1, train_bc
from torchrl_ript.models.quest import (
    quest_autoencoder_loss,
    quest_prior_loss,
    train_quest,
    train_quest_autoencoder,
    train_quest_prior,
)
from torchrl_ript.models.regression_policy import fit_regression_scale, regression_loss, train_regression

__all__ = [
    "make_chunk_dataset",
    "chunk_demo_files",
    "from_bc_dataset",
    "batch_iterator",
    "masked_l1",
    "quest_autoencoder_loss",
    "quest_prior_loss",
    "regression_loss",
    "train_bc",
    "train_quest_autoencoder",
    "train_quest_prior",
    "train_quest",
    "train_regression",
    "fit_regression_scale",
]

_DEFAULT_KEEP: tuple[NestedKey, ...] = ("observation", "language_instruction")


def chunk_demo_files(
    files: Iterable[DemoFile],
    chunk_size: int,
    *,
    mask_key: NestedKey = "action_mask",
    keep_keys: Sequence[NestedKey] = _DEFAULT_KEEP,
) -> TensorDictBase:
    """Training rows of :func:`torchrl_ript.data.demos.read_demos` outputs.

    The chunks come from :func:`~torchrl_ript.data.demos.demos_to_bc_dataset`
    (TorchRL's ``ActionChunkTransform``): row ``t`` of a demo holds its
    observation at ``t``, ``"action"`` ``[chunk, A]`` = actions ``t ..
    t+chunk-1`` (past the end of the demo: its last action repeated) and
    ``mask_key`` ``[chunk]`` (``False`` on that padding). Each file's
    ``instruction`` becomes the rows' ``"language_instruction"``; only
    ``keep_keys`` (observations, instruction), the action, the mask and the
    demo bookkeeping are kept: ``"demo_id"`` ``[1]`` (the row's demo, a
    running index over the files) and ``"demo_count"`` ``[1]`` (demos in
    all), from which a recipe can hold whole demos out of a fit (the
    regression policy's held-out scale fit,
    :func:`~torchrl_ript.models.regression_policy.heldout_demo_ids`).

    Examples:
        >>> import numpy as np, os, tempfile
        >>> from torchrl_ript.data.demos import DemoWriter, read_demos
        >>> path = os.path.join(tempfile.mkdtemp(), "t.hdf5")
        >>> with DemoWriter(path, task_name="t", language_instruction="do it") as w:
        ...     _ = w.add_demo({"s": np.zeros((3, 2))}, actions=np.arange(12.0).reshape(3, 4))
        >>> rows = chunk_demo_files([read_demos(path, key_map={"s": ("observation", "state")})], 2)
        >>> rows["action"][2].tolist(), rows["action_mask"][2].tolist()  # last action repeated, masked
        ([[8.0, 9.0, 10.0, 11.0], [8.0, 9.0, 10.0, 11.0]], [True, False])
    """
    files = list(files)
    if not files or not any(len(file) for file in files):
        raise ValueError("the demo files hold no demos.")
    rows = from_bc_dataset(demos_to_bc_dataset(files, chunk_size=chunk_size), mask_key=mask_key)
    keep = [k for k in keep_keys if k in rows.keys(include_nested=True)]
    rows = rows.select(*keep, "action", mask_key, "demo_id")
    rows.set("demo_count", torch.full_like(rows.get("demo_id"), sum(len(file) for file in files)))
    return rows


def make_chunk_dataset(demos: Iterable[TensorDictBase], chunk_size: int, **kwargs) -> TensorDictBase:
    """:func:`chunk_demo_files` of in-memory demos ``[T]`` (each with ``"action"``
    ``[T, A]``, its observations and a ``"language_instruction"`` string)."""
    files = []
    for demo in demos:
        if demo.batch_dims != 1:
            raise ValueError(f"a demo must have one batch dim [T], got {demo.batch_size}.")
        instruction = demo.get_non_tensor("language_instruction", default="")
        if not isinstance(instruction, str):  # a per-step stack: one instruction per demo
            instruction = instruction[0]
        steps = demo.exclude("language_instruction", "next")
        files.append(DemoFile([steps], None, instruction, instruction, Path("<memory>")))
    if not files:
        raise ValueError("no demos given.")
    return chunk_demo_files(files, chunk_size, **kwargs)


def from_bc_dataset(dataset: TensorDictBase, *, mask_key: NestedKey = "action_mask") -> TensorDictBase:
    """Convert :func:`torchrl_ript.data.demos.demos_to_bc_dataset` rows
    (``("vla_action", "chunk")`` + ``"action_is_pad"``) to this module's
    ``"action"`` ``[chunk, A]`` + ``mask_key`` (``True`` on real steps)."""
    out = dataset.exclude("action", "vla_action", "action_is_pad")
    out.set("action", dataset.get(("vla_action", "chunk")))
    out.set(mask_key, ~dataset.get("action_is_pad"))
    return out


def batch_iterator(
    dataset: TensorDictBase, batch_size: int, *, seed: int | None = 0, device: torch.device | str | None = None
) -> Iterator[TensorDictBase]:
    """Endless shuffled minibatches (reshuffled every epoch) of a ``[N]`` dataset."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    n = dataset.batch_size[0]
    while True:
        perm = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            batch = dataset[perm[start : start + batch_size]]
            yield batch.to(device) if device is not None else batch
