"""Fit the scale head of a regression VLA by NLL on demonstrations (Section 4.3).

A regression head trained with L1/MSE has a mean but no density. RIPT adds a
scale head and fits it, with everything else frozen, by the Laplace/Gaussian
NLL of the demonstration actions (the official code never released this step).
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.modules import ProbabilisticActor
from tqdm.auto import tqdm

__all__ = ["ScaleHead", "fit_scale_head", "chunk_nll"]


class ScaleHead(nn.Module):
    """A small MLP mapping features to a positive per-dimension scale.

    ``softplus`` keeps the scale positive and ``min_scale`` keeps the density
    finite when demonstrations are (almost) deterministic.

    Examples:
        >>> head = ScaleHead(16, (4, 7))
        >>> head(torch.randn(2, 16)).shape
        torch.Size([2, 4, 7])
    """

    def __init__(
        self,
        in_features: int,
        out_shape: tuple[int, ...],
        *,
        hidden: int = 256,
        min_scale: float = 1e-3,
        init_scale: float = 0.1,
    ) -> None:
        super().__init__()
        self.out_shape = tuple(out_shape)
        numel = 1
        for size in self.out_shape:
            numel *= size
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden), nn.GELU(), nn.Linear(hidden, numel)
        )
        self.min_scale = min_scale
        # start near init_scale so the first rollouts explore moderately
        nn.init.zeros_(self.net[-1].weight)
        bias = torch.log(torch.expm1(torch.tensor(max(init_scale - min_scale, 1e-6))))
        nn.init.constant_(self.net[-1].bias, float(bias))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        raw = self.net(features).unflatten(-1, self.out_shape)
        return nn.functional.softplus(raw) + self.min_scale


def chunk_nll(
    actor: ProbabilisticActor,
    batch: TensorDictBase,
    *,
    action_key: NestedKey = "action",
    mask_key: NestedKey | None = None,
) -> torch.Tensor:
    """Mean NLL per action dimension of ``batch[action_key]`` under the actor.

    ``mask_key`` (``[*batch, chunk]`` bool) excludes padded chunk steps.
    """
    dist = actor.get_dist(batch)
    actions = batch.get(action_key)
    logp = dist.elementwise_log_prob(actions)
    if mask_key is None:
        return -logp.mean()
    mask = batch.get(mask_key).to(logp.dtype)
    while mask.ndim < logp.ndim:
        mask = mask.unsqueeze(-1)
    mask = mask.expand_as(logp)
    return -(logp * mask).sum() / mask.sum().clamp_min(1)


def fit_scale_head(
    actor: ProbabilisticActor,
    scale_parameters: Iterable[nn.Parameter],
    batches: Iterable[TensorDictBase],
    *,
    steps: int = 500,
    lr: float = 1e-3,
    action_key: NestedKey = "action",
    mask_key: NestedKey | None = None,
    progress: bool = True,
) -> list[float]:
    """Fit only ``scale_parameters`` by the actor's NLL on demonstration batches.

    Every other parameter of the actor is frozen for the fit and restored
    afterwards. ``batches`` feeds ``steps`` updates (the paper uses 500): a
    list is cycled, an iterator is drawn from. Returns the NLL of each step.

    Examples:
        >>> from tensordict import TensorDict
        >>> from torchrl_ript.modules import make_continuous_actor
        >>> class Net(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.mean = nn.Linear(3, 2)
        ...         self.scale = ScaleHead(3, (2,), hidden=8)
        ...     def forward(self, x):
        ...         return self.mean(x), self.scale(x)
        >>> net = Net()
        >>> actor = make_continuous_actor(net, in_keys=["obs"], event_dims=1)
        >>> demos = [TensorDict(obs=torch.randn(64, 3), action=torch.randn(64, 2), batch_size=[64])]
        >>> history = fit_scale_head(actor, net.scale.parameters(), demos, steps=50, lr=1e-2, progress=False)
        >>> history[-1] < history[0]
        True
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    scale_parameters = list(scale_parameters)
    if not scale_parameters:
        raise ValueError("scale_parameters is empty: pass the scale head's parameters.")
    trainable = {id(p) for p in scale_parameters}
    saved = {p: p.requires_grad for p in actor.parameters()}
    for p in actor.parameters():
        p.requires_grad_(id(p) in trainable)
    optimizer = torch.optim.Adam(scale_parameters, lr=lr)
    history: list[float] = []
    # cycle a list of batches; draw from an iterator as is (cycling one keeps
    # every batch it has seen, so an endless source would grow without bound)
    source = batches if isinstance(batches, Iterator) else itertools.cycle(batches)
    try:
        for _ in tqdm(range(steps), desc="scale-head NLL", disable=not progress):
            loss = chunk_nll(actor, next(source), action_key=action_key, mask_key=mask_key)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            history.append(float(loss.detach()))
    finally:
        for p, flag in saved.items():
            p.requires_grad_(flag)
    return history
