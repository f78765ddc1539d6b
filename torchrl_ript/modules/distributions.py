"""Action distributions whose sampling and scoring always agree.

The official RIPT-VLA code samples QueST tokens with top-k and OpenVLA-OFT
actions with a 5x Laplace scale, but scores the *plain* distribution, so the
PPO ratio is computed for a policy that never acted. Here every sampling
option (temperature, top-k, scale multiplier) is part of the distribution
itself: ``sample`` and ``log_prob`` see the same modified distribution.

Why not TorchRL's :class:`~torchrl.modules.MaskedCategorical` for top-k: its
mask is an input the caller supplies per call, while the top-k support here
is recomputed from the current logits at every ``log_prob`` (a token can leave
the top-k after an update, which the PPO loss must see), and a decision is a
*sequence* of tokens scored jointly.
"""
from __future__ import annotations

import torch
from torch import distributions as D

__all__ = ["TokenCategorical", "IndependentLaplace", "IndependentGaussian"]


class TokenCategorical(D.Independent):
    """A sequence of ``L`` categorical tokens, scored jointly.

    ``logits`` is ``[*batch, L, V]``; a sample is ``[*batch, L]`` token ids and
    ``log_prob`` sums the per-token log-probabilities (Eq. 8 within a
    decision). Temperature and top-k reshape the logits *before* both
    sampling and scoring.

    Args:
        logits: ``[*batch, L, V]`` unnormalised scores.

    Keyword Args:
        temperature (float): divides the logits. Defaults to ``1.0``.
        top_k (int, optional): keep the ``k`` largest logits per token, give
            the rest zero probability. Defaults to ``None`` (all tokens).

    Examples:
        >>> logits = torch.tensor([[[2.0, 1.0, 0.0], [0.0, 0.0, 5.0]]])
        >>> dist = TokenCategorical(logits, top_k=2)
        >>> dist.deterministic_sample
        tensor([[0, 2]])
        >>> dist.log_prob(torch.tensor([[2, 2]]))  # token 2 is outside the top-2 of the first slot
        tensor([-inf])
    """

    def __init__(
        self,
        logits: torch.Tensor,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
    ) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        logits = logits / temperature
        if top_k is not None:
            if not 1 <= top_k <= logits.shape[-1]:
                raise ValueError(
                    f"top_k must be in [1, {logits.shape[-1]}] (the vocabulary size), got {top_k}."
                )
            kth = logits.topk(top_k, dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        self.temperature = temperature
        self.top_k = top_k
        super().__init__(D.Categorical(logits=logits), 1, validate_args=False)

    @property
    def logits(self) -> torch.Tensor:
        return self.base_dist.logits

    @property
    def deterministic_sample(self) -> torch.Tensor:
        return self.base_dist.logits.argmax(-1)

    @property
    def mode(self) -> torch.Tensor:
        return self.deterministic_sample

    def entropy(self) -> torch.Tensor:
        # Categorical.entropy gives nan where top-k put -inf logits (0 * -inf).
        probs = self.base_dist.probs
        logp = self.base_dist.logits.clamp_min(torch.finfo(probs.dtype).min)
        return -(probs * logp).sum(-1).sum(-1)


class _IndependentScaled(D.Independent):
    """Shared body of the Laplace and Normal chunk distributions."""

    base_class: type[D.Distribution]

    def __init__(
        self,
        loc: torch.Tensor,
        scale: torch.Tensor,
        *,
        scale_multiplier: float = 1.0,
        event_dims: int = 2,
    ) -> None:
        if scale_multiplier <= 0:
            raise ValueError(f"scale_multiplier must be > 0, got {scale_multiplier}.")
        if event_dims > loc.ndim:
            raise ValueError(
                f"event_dims={event_dims} but loc has only {loc.ndim} dims: use "
                "event_dims=1 for single actions, 2 for [chunk, action_dim] chunks."
            )
        self.scale_multiplier = scale_multiplier
        base = self.base_class(loc, scale * scale_multiplier, validate_args=False)
        super().__init__(base, event_dims, validate_args=False)

    @property
    def deterministic_sample(self) -> torch.Tensor:
        return self.base_dist.loc

    @property
    def mode(self) -> torch.Tensor:
        return self.base_dist.loc

    def elementwise_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Per-dimension log-probabilities (for masked NLL on padded chunks)."""
        return self.base_dist.log_prob(value)


class IndependentLaplace(_IndependentScaled):
    """Factorised Laplace over an action chunk (L1-trained regression heads).

    ``loc`` comes from the action head, ``scale`` from the scale head (Section
    4.3). ``log_prob`` sums over the last ``event_dims`` dims (chunk and action
    dims). ``scale_multiplier`` widens exploration *and* the scored density.

    Examples:
        >>> dist = IndependentLaplace(torch.zeros(2, 4, 7), torch.ones(2, 4, 7))
        >>> dist.sample().shape, dist.log_prob(torch.zeros(2, 4, 7)).shape
        (torch.Size([2, 4, 7]), torch.Size([2]))
    """

    base_class = D.Laplace


class IndependentGaussian(_IndependentScaled):
    """Factorised Gaussian over an action chunk (MSE-trained regression heads).

    Named apart from :class:`torchrl.modules.IndependentNormal`, which has
    another signature (``upscale``/``tanh_loc``, no scale multiplier).

    Examples:
        >>> dist = IndependentGaussian(torch.zeros(3, 7), torch.ones(3, 7), event_dims=1)
        >>> dist.log_prob(torch.zeros(3, 7)).shape
        torch.Size([3])
    """

    base_class = D.Normal
