"""Optimiser helpers: learning rates per parameter group, and schedules."""
from __future__ import annotations

import math
import re

import torch
from torch import nn

__all__ = ["make_param_groups", "make_optimizer", "make_scheduler"]


def make_param_groups(
    module: nn.Module, lrs: dict[str, float] | None, *, default_lr: float
) -> list[dict]:
    """Split trainable parameters by name pattern, one learning rate each.

    ``lrs`` maps a regular expression (searched in the parameter's name) to a
    learning rate; the first matching pattern wins, and parameters matching
    none get ``default_lr``. Frozen parameters are left out.

    Examples:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
        >>> groups = make_param_groups(net, {r"^1\\.": 1e-5}, default_lr=1e-4)
        >>> [(g["name"], g["lr"], len(g["params"])) for g in groups]
        [('^1\\\\.', 1e-05, 2), ('default', 0.0001, 2)]
    """
    patterns = list((lrs or {}).items())
    buckets: dict[str, list] = {pattern: [] for pattern, _ in patterns}
    buckets["default"] = []
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        for pattern, _ in patterns:
            if re.search(pattern, name):
                buckets[pattern].append(param)
                break
        else:
            buckets["default"].append(param)
    rates = dict(patterns, default=default_lr)
    groups = [
        {"name": name, "params": params, "lr": float(rates[name])}
        for name, params in buckets.items()
        if params
    ]
    if not groups:
        raise ValueError("the module has no trainable parameters.")
    return groups


def make_optimizer(
    module: nn.Module,
    *,
    lr: float,
    param_lrs: dict[str, float] | None = None,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    """AdamW over :func:`make_param_groups`."""
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}.")
    groups = make_param_groups(module, param_lrs, default_lr=lr)
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, betas=tuple(betas))


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    kind: str = "constant",
    total_steps: int,
    warmup_steps: int = 0,
    min_factor: float = 0.1,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Constant or cosine learning-rate schedule with linear warm-up, per RIPT step."""
    if kind not in ("constant", "cosine"):
        raise ValueError(f"scheduler kind must be 'constant' or 'cosine', got {kind!r}.")

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
