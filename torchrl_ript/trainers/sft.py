"""Behaviour cloning (SFT) of the RIPT policies from demonstrations.

Data: per-demo tensordicts ``[T]`` with the canonical observation keys and
``"action"`` ``[T, A]`` (what ``torchrl_ript.data.demos`` yields) are cut into
training rows by :func:`chunk_demo_files` / :func:`make_chunk_dataset`, on
TorchRL's ``ActionChunkTransform``
(:func:`torchrl_ript.data.demos.demos_to_bc_dataset`): the observation at
``t``, ``"action"`` ``[chunk, A]`` = actions ``t .. t+chunk-1`` (past the end:
the last action repeated) and ``"action_mask"`` ``[chunk]`` (``False`` on that
padding).

Recipes:

* QueST: :func:`train_quest_autoencoder` (stage 1, L1 reconstruction), then
  :func:`train_quest_prior` (stage 2, token NLL, autoencoder frozen);
  :func:`train_quest` runs both.
* Regression (OFT-style): :func:`train_regression` (mean head, L1 or MSE),
  then :func:`fit_regression_scale` (scale head by NLL, everything else
  frozen; :func:`torchrl_ript.modules.fit_scale_head`).

Every loop shows a tqdm bar, restores the module's train/eval mode and
returns the per-step losses.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torch import nn
from tqdm.auto import tqdm

from torchrl_ript.data.demos import DemoFile, demos_to_bc_dataset
from torchrl_ript.models.regression_policy import RegressionPolicy, make_regression_actor
from torchrl_ript.models.quest import QuestPolicy
from torchrl_ript.modules.scale_head import fit_scale_head

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
    ``keep_keys`` (observations, instruction), the action and the mask are
    kept.

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
    return rows.select(*keep, "action", mask_key)


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


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None, *, squared: bool = False) -> torch.Tensor:
    """Mean |pred - target| (or squared) over unmasked chunk steps."""
    err = (pred - target).abs()
    if squared:
        err = err.pow(2)
    if mask is None:
        return err.mean()
    m = mask.to(err.dtype).unsqueeze(-1).expand_as(err)
    return (err * m).sum() / m.sum().clamp_min(1)


def quest_autoencoder_loss(policy: QuestPolicy, batch: TensorDictBase, *, mask_key: NestedKey | None = None) -> torch.Tensor:
    """Stage 1: L1 reconstruction of the action chunk (QueST trains on full,
    padded chunks; pass ``mask_key`` to ignore the padding)."""
    actions = batch.get("action")
    recon, _ = policy.autoencoder(actions)
    mask = batch.get(mask_key) if mask_key is not None else None
    return masked_l1(recon, actions, mask)


def quest_prior_loss(policy: QuestPolicy, batch: TensorDictBase) -> torch.Tensor:
    """Stage 2: cross-entropy of the (frozen) autoencoder's tokens under the prior."""
    with torch.no_grad():
        tokens = policy.autoencoder.encode(batch.get("action"))
    logits = policy.token_logits(policy.context(batch), tokens)
    return nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten())


def regression_loss(policy: RegressionPolicy, batch: TensorDictBase, *, mask_key: NestedKey = "action_mask") -> torch.Tensor:
    """L1 (``config.loss="l1"``) or MSE of the mean head on unpadded steps."""
    mask = batch.get(mask_key, None)
    loc = policy.mean(policy.features(batch))
    return masked_l1(loc, batch.get("action"), mask, squared=policy.config.loss == "mse")


def train_bc(
    module: nn.Module,
    loss_fn: Callable[[TensorDictBase], torch.Tensor],
    parameters: Iterable[nn.Parameter],
    batches: Iterable[TensorDictBase],
    *,
    steps: int,
    lr: float = 1e-4,
    weight_decay: float = 1e-4,
    grad_clip: float | None = 1.0,
    progress: bool = True,
    desc: str = "bc",
) -> list[float]:
    """Generic AdamW loop over ``parameters`` (``batches`` is cycled).

    Only ``parameters`` are updated; ``module`` is put in train mode for the
    loop and returned to its previous mode afterwards.
    """
    params = [p for p in parameters if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters given.")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    was_training = module.training
    module.train()
    history: list[float] = []
    source = itertools.cycle(batches) if not isinstance(batches, Iterator) else batches
    try:
        bar = tqdm(range(steps), desc=desc, disable=not progress)
        for _ in bar:
            loss = loss_fn(next(source))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(params, grad_clip)
            optimizer.step()
            history.append(float(loss.detach()))
            bar.set_postfix(loss=f"{history[-1]:.4f}", refresh=False)
    finally:
        module.train(was_training)
    return history


def train_quest_autoencoder(policy: QuestPolicy, batches, *, steps: int = 1000, lr: float = 1e-4, **kwargs) -> list[float]:
    """QueST stage 1: autoencoder by L1 reconstruction."""
    return train_bc(
        policy, lambda b: quest_autoencoder_loss(policy, b), policy.autoencoder.parameters(), batches,
        steps=steps, lr=lr, desc="quest autoencoder", **kwargs,
    )


def train_quest_prior(policy: QuestPolicy, batches, *, steps: int = 1000, lr: float = 1e-4, **kwargs) -> list[float]:
    """QueST stage 2: prior + observation encoders by token NLL, autoencoder frozen."""
    return train_bc(
        policy, lambda b: quest_prior_loss(policy, b), policy.parameter_groups()["prior"], batches,
        steps=steps, lr=lr, desc="quest prior", **kwargs,
    )


def train_quest(policy: QuestPolicy, batches, *, ae_steps: int = 1000, prior_steps: int = 1000, lr: float = 1e-4, **kwargs) -> dict[str, list[float]]:
    """Both QueST stages; returns ``{"autoencoder": [...], "prior": [...]}``."""
    return {
        "autoencoder": train_quest_autoencoder(policy, batches, steps=ae_steps, lr=lr, **kwargs),
        "prior": train_quest_prior(policy, batches, steps=prior_steps, lr=lr, **kwargs),
    }


def train_regression(policy: RegressionPolicy, batches, *, steps: int = 1000, lr: float = 1e-4, **kwargs) -> list[float]:
    """Mean (action) head + encoders by L1 / MSE; the scale head is untouched."""
    return train_bc(
        policy, lambda b: regression_loss(policy, b), policy.parameter_groups()["policy"], batches,
        steps=steps, lr=lr, desc="regression", **kwargs,
    )


def fit_regression_scale(
    policy: RegressionPolicy,
    batches,
    *,
    steps: int = 500,
    lr: float = 1e-3,
    actor=None,
    max_batches: int = 64,
    progress: bool = True,
) -> list[float]:
    """Scale head by the actor's NLL (Section 4.3), all other weights frozen.

    An endless iterator (e.g. :func:`batch_iterator`) is sampled for
    ``max_batches`` batches that are then cycled (``fit_scale_head`` keeps
    what it cycles, so an endless source would grow without bound).
    """
    actor = actor if actor is not None else make_regression_actor(policy)
    if isinstance(batches, Iterator):
        batches = list(itertools.islice(batches, min(steps, max_batches)))
    was_training = policy.training
    policy.eval()
    try:
        return fit_scale_head(
            actor, policy.scale_head.parameters(), batches, steps=steps, lr=lr,
            mask_key="action_mask", progress=progress,
        )
    finally:
        policy.train(was_training)
