"""The behaviour-cloning loop the policies' SFT recipes share.

Each policy kind's SFT recipe (QueST in :mod:`~torchrl_ript.models.quest`,
regression in :mod:`~torchrl_ript.models.regression_policy`) is a loss and a
parameter group run through :func:`train_bc`; the demo data comes from
:mod:`torchrl_ript.trainers.sft`.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator

import torch
from tensordict import TensorDictBase
from torch import nn
from tqdm.auto import tqdm

__all__ = ["masked_l1", "train_bc"]


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None, *, squared: bool = False) -> torch.Tensor:
    """Mean |pred - target| (or squared) over unmasked chunk steps.

    Examples:
        >>> pred, target = torch.zeros(1, 2, 1), torch.tensor([[[1.0], [3.0]]])
        >>> float(masked_l1(pred, target, torch.tensor([[True, False]])))
        1.0
    """
    err = (pred - target).abs()
    if squared:
        err = err.pow(2)
    if mask is None:
        return err.mean()
    m = mask.to(err.dtype).unsqueeze(-1).expand_as(err)
    return (err * m).sum() / m.sum().clamp_min(1)


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
