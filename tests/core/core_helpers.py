"""Small policies for the core tests (the toy env's state holds the target)."""
import torch
from tensordict.nn import TensorDictModule

from torchrl_ript.modules.toy_policies import LinearLaplaceNet, toy_laplace_actor, toy_token_policy


def laplace_actor(**kwargs):
    return toy_laplace_actor(**kwargs)


def token_policy(bins=11, **kwargs):
    return toy_token_policy(bins=bins, **kwargs)


LinearLaplace = LinearLaplaceNet


def oracle_policy(noise=0.0):
    """Acts on the target (success for sure when noise=0)."""

    def act(state):
        action = state[..., 2:4] + noise * torch.randn_like(state[..., 2:4])
        return action, torch.zeros(state.shape[:-1])

    return TensorDictModule(act, in_keys=[("observation", "state")], out_keys=["action", "action_log_prob"])
