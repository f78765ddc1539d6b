"""Small reference policies for :class:`~torchrl_ript.envs.ContextToyVLAEnv`.

The toy env's state holds the target action (``state[A:2A]``), so a linear
map can solve it; these start at "always act zero" and must *learn* the map
from binary success alone, which makes them a quick check of a RIPT set-up.
"""
from __future__ import annotations

import torch
from tensordict.nn import TensorDictModule
from torch import nn

from torchrl_ript.modules.actors import make_continuous_actor, make_rollout_policy, make_token_actor
from torchrl_ript.modules.scale_head import ScaleHead

__all__ = ["LinearLaplaceNet", "BinTokenNet", "toy_laplace_actor", "toy_token_policy"]

STATE_KEY = ("observation", "state")


class LinearLaplaceNet(nn.Module):
    """Mean = W state (initialised to zero), scale from a :class:`ScaleHead`.

    The toy's head is the unbounded one with a 1e-3 floor (``max_scale=None``):
    the toy env succeeds within 0.15 of its target, so the policies' default
    floor (0.02-0.135, sized for [-1, 1] robot actions) is not this task's.
    """

    def __init__(self, state_dim: int = 4, action_dim: int = 2, *, init_scale: float = 0.3) -> None:
        super().__init__()
        self.mean = nn.Linear(state_dim, action_dim)
        nn.init.zeros_(self.mean.weight)
        nn.init.zeros_(self.mean.bias)
        self.scale = ScaleHead(state_dim, (action_dim,), init_scale=init_scale, hidden=8, min_scale=1e-3,
                               max_scale=None)

    def forward(self, state: torch.Tensor):
        return self.mean(state), self.scale(state)


class BinTokenNet(nn.Module):
    """One token per action dim over ``bins`` values (logits initialised to zero)."""

    def __init__(self, state_dim: int = 4, action_dim: int = 2, *, bins: int = 7) -> None:
        super().__init__()
        self.action_dim, self.bins = action_dim, bins
        self.linear = nn.Linear(state_dim, action_dim * bins)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.linear(state).unflatten(-1, (self.action_dim, self.bins))


def toy_laplace_actor(*, action_dim: int = 2, init_scale: float = 0.3):
    """Laplace actor over one action (``event_dims=1``); returns ``(actor, net)``.

    Examples:
        >>> actor, net = toy_laplace_actor()
        >>> actor.out_keys[:1]
        ['loc']
    """
    net = LinearLaplaceNet(2 * action_dim, action_dim, init_scale=init_scale)
    return make_continuous_actor(net, in_keys=[STATE_KEY], event_dims=1), net


def toy_token_policy(*, action_dim: int = 2, bins: int = 7, low: float = -0.5, high: float = 0.5, **kwargs):
    """Token actor (one token per dim) + bin decoder; returns ``(actor, policy)``.

    Examples:
        >>> actor, policy = toy_token_policy()
        >>> policy.out_keys[-1]
        'action'
    """
    actor = make_token_actor(BinTokenNet(2 * action_dim, action_dim, bins=bins), in_keys=[STATE_KEY], **kwargs)
    centers = torch.linspace(low, high, bins)
    decoder = TensorDictModule(lambda tokens: centers[tokens], in_keys=["action_tokens"], out_keys=["action"])
    return actor, make_rollout_policy(actor, decoder)
