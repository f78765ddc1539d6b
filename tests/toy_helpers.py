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


class SlowToyEnv:
    """Factory of toy context envs whose steps take time (to test async slots and faults).

    ``delay`` seconds per step, plus ``jitter`` x a random fraction drawn from
    this process's own RNG (so two runs see different timings); with
    ``by_target`` the delay grows with |target|, so later contexts can finish
    first. ``die_at_step``: the worker process SIGKILLs itself at that step.
    """

    def __init__(self, delay=0.0, jitter=0.0, by_target=0.0, die_at_step=None, raise_at_step=None, **env_kwargs):
        self.delay, self.jitter, self.by_target, self.die_at_step = delay, jitter, by_target, die_at_step
        self.raise_at_step = raise_at_step
        self.env_kwargs = dict(action_dim=2, max_steps=4, **env_kwargs)

    def __call__(self):
        import os
        import random
        import signal
        import time

        from torchrl_ript import ContextToyVLAEnv

        outer = self
        rng = random.Random()  # seeded from os.urandom: timings differ between runs

        class _Slow(ContextToyVLAEnv):
            steps = 0

            def _step(self, tensordict):
                _Slow.steps += 1
                if outer.die_at_step is not None and _Slow.steps >= outer.die_at_step:
                    os.kill(os.getpid(), signal.SIGKILL)
                if outer.raise_at_step is not None and _Slow.steps >= outer.raise_at_step:
                    raise FloatingPointError("simulated physics blow-up in the env")
                wait = outer.delay + outer.jitter * rng.random()
                if outer.by_target:
                    wait += outer.by_target * float(self._target.abs().sum())
                time.sleep(wait)
                return super()._step(tensordict)

        return _Slow(**self.env_kwargs)


def clipped_oracle(limit=0.2):
    """Deterministic: acts on the target clipped to [-limit, limit] (fails on far targets)."""

    def act(state):
        return state[..., 2:4].clamp(-limit, limit), torch.zeros(state.shape[:-1])

    return TensorDictModule(act, in_keys=[("observation", "state")], out_keys=["action", "action_log_prob"])
