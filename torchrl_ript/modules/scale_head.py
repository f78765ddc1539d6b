"""Fit the scale head of a regression VLA by NLL on demonstrations (Section 4.3).

A regression head trained with L1/MSE has a mean but no density. RIPT adds a
scale head and fits it, with everything else frozen, by the Laplace/Gaussian
NLL of the demonstration actions (the official code never released this step).
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.modules import ProbabilisticActor
from tqdm.auto import tqdm

__all__ = ["ScaleHead", "check_scale_bounds", "fit_scale_head", "chunk_nll", "OFT_MIN_SCALE", "OFT_MAX_SCALE"]


#: the paper's released OpenVLA-OFT code clamps the Laplace log-scale to [-2, 0.5]
#: in normalised action units ([-1, 1], as LIBERO's and MetaWorld's actions are)
OFT_MIN_SCALE = math.exp(-2.0)  # 0.135
OFT_MAX_SCALE = math.exp(0.5)  # 1.65


class ScaleHead(nn.Module):
    """A small MLP mapping features to a positive per-dimension scale.

    Two maps from the MLP's output ``raw`` to the scale:

    * bounded (``max_scale`` given, the default of the policies): the
      log-scale is ``sigmoid(raw)`` mapped onto ``[log min_scale, log
      max_scale]``, so the scale can never leave ``[min_scale, max_scale]``
      and its gradient stays smooth at the bounds (a clamp would stop it).
      The paper's released OFT code bounds the log-scale to ``[-2, 0.5]``
      (:data:`OFT_MIN_SCALE`, :data:`OFT_MAX_SCALE`): a floor on the scale is
      a floor on how far one gradient step can move a decision's log-prob
      ratio (``|d log p / d loc| = 1 / scale`` per Laplace dimension).
    * legacy (``max_scale=None``): ``softplus(raw) + min_scale``, unbounded
      above, the map of checkpoints saved before the bounded head existed.

    Args:
        in_features: feature size.
        out_shape: the scale's shape per row (e.g. ``(chunk, action_dim)``).

    Keyword Args:
        hidden (int): the MLP's hidden width. Defaults to ``256``.
        min_scale (float): the smallest scale. Defaults to :data:`OFT_MIN_SCALE`.
        max_scale (float, optional): the largest scale; ``None``: the legacy
            unbounded map. Defaults to :data:`OFT_MAX_SCALE`.
        init_scale (float): the scale before any fit (inside the bounds).
            Defaults to ``0.2``.

    Examples:
        >>> head = ScaleHead(16, (4, 7))
        >>> scale = head(torch.randn(2, 16)).detach()
        >>> scale.shape, round(float(scale.mean()), 4)
        (torch.Size([2, 4, 7]), 0.2)
        >>> with torch.no_grad():
        ...     _ = head.net[-1].bias.fill_(1e3)  # a head pushed far up stays at max_scale
        >>> round(float(head(torch.zeros(1, 16)).max().detach()), 4) == round(OFT_MAX_SCALE, 4)
        True
    """

    def __init__(
        self,
        in_features: int,
        out_shape: tuple[int, ...],
        *,
        hidden: int = 256,
        min_scale: float = OFT_MIN_SCALE,
        max_scale: float | None = OFT_MAX_SCALE,
        init_scale: float = 0.2,
    ) -> None:
        super().__init__()
        check_scale_bounds(min_scale, max_scale, init_scale)
        self.out_shape = tuple(out_shape)
        numel = 1
        for size in self.out_shape:
            numel *= size
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden), nn.GELU(), nn.Linear(hidden, numel)
        )
        self.min_scale = float(min_scale)
        self.max_scale = None if max_scale is None else float(max_scale)
        # start at init_scale so the first rollouts explore moderately
        nn.init.zeros_(self.net[-1].weight)
        if self.max_scale is None:
            bias = math.log(math.expm1(max(init_scale - min_scale, 1e-6)))
        else:
            low, high = math.log(self.min_scale), math.log(self.max_scale)
            share = (math.log(init_scale) - low) / (high - low)
            bias = math.log(share / (1.0 - share))
        nn.init.constant_(self.net[-1].bias, bias)

    @property
    def bounded(self) -> bool:
        """Whether the scale is bounded above (``max_scale`` set)."""
        return self.max_scale is not None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        raw = self.net(features).unflatten(-1, self.out_shape)
        if self.max_scale is None:
            return nn.functional.softplus(raw) + self.min_scale
        low, high = math.log(self.min_scale), math.log(self.max_scale)
        return (low + (high - low) * torch.sigmoid(raw)).exp()


def check_scale_bounds(min_scale: float, max_scale: float | None, init_scale: float) -> None:
    """Raise ``ValueError`` unless ``0 < min_scale < init_scale < max_scale``
    (``max_scale=None``: the legacy head, only ``min_scale >= 0`` and ``init_scale > min_scale``).

    Examples:
        >>> check_scale_bounds(0.135, 1.65, 0.2)
        >>> check_scale_bounds(0.135, 1.65, 0.1)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: init_scale=0.1 must lie strictly inside (min_scale, max_scale) = (0.135, 1.65): set ...
    """
    if max_scale is None:
        if min_scale < 0 or init_scale <= min_scale:
            raise ValueError(
                f"the unbounded scale head needs 0 <= min_scale < init_scale, got min_scale={min_scale}, "
                f"init_scale={init_scale}."
            )
        return
    if not 0 < min_scale < max_scale:
        raise ValueError(
            f"the scale bounds must satisfy 0 < min_scale < max_scale, got ({min_scale}, {max_scale}) "
            "(the paper's OFT code: exp(-2) = 0.135 and exp(0.5) = 1.65)."
        )
    if not min_scale < init_scale < max_scale:
        raise ValueError(
            f"init_scale={init_scale} must lie strictly inside (min_scale, max_scale) = ({min_scale}, "
            f"{max_scale}): set init_scale between them (e.g. 0.2) or widen the bounds."
        )


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
