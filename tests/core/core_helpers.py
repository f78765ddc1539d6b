"""Small policies for the core tests (the toy env's state holds the target)."""
import torch
from tensordict.nn import TensorDictModule
from torch import nn

from torchrl_ript import ScaleHead, make_continuous_actor, make_rollout_policy, make_token_actor


class LinearLaplace(nn.Module):
    """Mean = W state (starts at zero), scale from a ScaleHead."""

    def __init__(self, state_dim=4, action_dim=2, init_scale=0.3):
        super().__init__()
        self.mean = nn.Linear(state_dim, action_dim)
        nn.init.zeros_(self.mean.weight)
        nn.init.zeros_(self.mean.bias)
        self.scale = ScaleHead(state_dim, (action_dim,), init_scale=init_scale, hidden=8)

    def forward(self, state):
        return self.mean(state), self.scale(state)


def laplace_actor(**kwargs):
    net = LinearLaplace(**kwargs)
    return make_continuous_actor(net, in_keys=[("observation", "state")], event_dims=1), net


class BinLogits(nn.Module):
    """One token per action dim over ``bins`` values in [-0.5, 0.5]."""

    def __init__(self, state_dim=4, action_dim=2, bins=11):
        super().__init__()
        self.action_dim, self.bins = action_dim, bins
        self.linear = nn.Linear(state_dim, action_dim * bins)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, state):
        return self.linear(state).unflatten(-1, (self.action_dim, self.bins))


def token_policy(bins=11, **kwargs):
    actor = make_token_actor(BinLogits(bins=bins), in_keys=[("observation", "state")], **kwargs)
    centers = torch.linspace(-0.5, 0.5, bins)
    decoder = TensorDictModule(lambda t: centers[t], in_keys=["action_tokens"], out_keys=["action"])
    return actor, make_rollout_policy(actor, decoder)


def oracle_policy(noise=0.0):
    """Acts on the target (success for sure when noise=0)."""
    def act(state):
        action = state[..., 2:4] + noise * torch.randn_like(state[..., 2:4])
        return action, torch.zeros(state.shape[:-1])

    return TensorDictModule(act, in_keys=[("observation", "state")], out_keys=["action", "action_log_prob"])
