"""A policy kind added from outside the package runs the whole pipeline: SFT -> checkpoint -> one RIPT step.

The kind is defined here (a linear Laplace network on the toy env's state,
its actor and an L1 SFT recipe) and registered with
``register_policy_kind``: the pipeline builds it by name, trains it with its
recipe, saves and reloads it, checks its sampling options, and a RIPT step
(``make_ript_trainer``) updates it. Nothing in the package is edited.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from torchrl_ript import ContextDataset, ContextToyVLAEnv
from torchrl_ript.config import RIPTConfig
from torchrl_ript.data.demos import DemoWriter, read_demos
from torchrl_ript.models import (
    CheckpointError,
    PolicyKind,
    build_policy,
    load_policy,
    policy_kind,
    policy_kind_of,
    policy_kinds,
    register_policy_kind,
    save_policy,
    unregister_policy_kind,
)
from torchrl_ript.models.bc import train_bc
from torchrl_ript.models.common import STATE_KEY
from torchrl_ript.modules.actors import make_continuous_actor
from torchrl_ript.trainers.evaluate import evaluate_success
from torchrl_ript.trainers.factory import make_batched_env, make_ript_trainer
from torchrl_ript.trainers.pipeline import load_or_train_policy, set_sampling, train_sft

A = 2  # the toy env's action size; its state is [position (A), target (A)]


@dataclass
class TinyConfig:
    action_dim: int = A
    chunk_size: int = 1  # one action per decision: demo rows hold [1, A] action chunks
    init_scale: float = 0.2


class TinyLinear(nn.Module):
    """state [.., 2A] -> Laplace loc and scale [.., A]."""

    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        self.config = config
        self.mean = nn.Linear(2 * config.action_dim, config.action_dim)
        self.log_scale = nn.Parameter(torch.full((config.action_dim,), math.log(config.init_scale)))

    def forward(self, state: torch.Tensor):
        loc = self.mean(state)
        return loc, self.log_scale.exp().expand_as(loc)


def tiny_actor(network: TinyLinear):
    return make_continuous_actor(network, in_keys=[STATE_KEY], event_dims=1)


def tiny_sft(bundle, batches, options):
    network = bundle.network

    def loss(batch):  # L1 to the first action of each demo chunk
        return (network.mean(batch.get(STATE_KEY)) - batch.get("action")[:, 0]).abs().mean()

    return {"mean": train_bc(network, loss, network.mean.parameters(), batches, steps=options.steps,
                             lr=options.lr, progress=options.progress)}


TINY = PolicyKind(
    name="tiny_linear",
    network_class=TinyLinear,
    config_class=TinyConfig,
    build=lambda spec: TinyLinear(TinyConfig(action_dim=spec.action_dim, **spec.overrides)),
    make_actor=tiny_actor,
    sft=tiny_sft,
)


@pytest.fixture
def tiny_kind():
    register_policy_kind(TINY)
    yield TINY
    unregister_policy_kind(TINY.name)


def write_toy_demos(path, targets: torch.Tensor, steps: int = 3):
    """The oracle on the toy env: from position 0, act the target (the state's second half)."""
    with DemoWriter(path, task_name="track", language_instruction="track") as writer:
        for target in targets.numpy():
            state = np.stack([np.concatenate([np.zeros(A) if t == 0 else target, target]) for t in range(steps)])
            writer.add_demo({"s": state.astype(np.float32)}, actions=np.tile(target, (steps, 1)))
    return path


def test_a_kind_registered_outside_the_package_runs_sft_then_a_ript_step(tiny_kind, tmp_path):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    targets = torch.rand(64, A, generator=g) - 0.5
    demos = write_toy_demos(tmp_path / "track_demo.hdf5", targets[:32])
    build = dict(kind="tiny_linear", preset="tiny", action_dim=A, state_dim=2 * A, image_keys=(), image_size=0)

    # SFT by name, with the kind's recipe; the policy file reloads as the same kind
    bundle, info = load_or_train_policy(
        None, build=build, files_fn=lambda: [read_demos(demos, key_map={"s": STATE_KEY})],
        sft_options=dict(steps=150, batch_size=16, lr=3e-2), save_to=tmp_path / "sft.pt", progress=False,
    )
    assert bundle.kind == "tiny_linear" and bundle.sampled_key == "action" and bundle.n_exec == 1
    assert set(info["history"]) == {"mean"} and info["history"]["mean"][-1] < 0.5 * info["history"]["mean"][0]
    reloaded = load_policy(tmp_path / "sft.pt")
    assert isinstance(reloaded, TinyLinear) and policy_kind_of(reloaded) is tiny_kind
    for key, value in bundle.network.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key
    with pytest.raises(ValueError, match="valid: none"):  # the kind has no sampling options
        set_sampling(bundle.network, top_k=3)

    # the SFT policy tracks held-out targets (deterministic: the Laplace mean)
    contexts = ContextDataset(targets, [0] * 64, ["track"], seed=0)
    train, held_out = contexts.split(16, seed=0)
    env_fn = lambda: ContextToyVLAEnv(action_dim=A, max_steps=3, success_tol=0.15)  # noqa: E731
    eval_env = make_batched_env(env_fn, 4, parallel=False)
    sr_sft = evaluate_success(eval_env, bundle.policy, held_out, horizon=3, progress=False)["success_rate"]
    assert sr_sft >= 0.5

    # one RIPT step on its actor (rollouts sample its Laplace), as the examples make it
    config = RIPTConfig(group_size=4, num_steps=1, ppo_epochs=1, lr=1e-3, max_decisions=3, num_envs=4,
                        dynamic_sampling=False, max_context_draws=None)
    before = {k: v.clone() for k, v in bundle.network.state_dict().items()}
    trainer = make_ript_trainer(
        config, env=make_batched_env(env_fn, config.num_envs, parallel=False), eval_env=None,
        actor=bundle.actor, policy=bundle.policy, sampled_action_key=bundle.sampled_key,
        train_contexts=train, progress=False,
    )
    trainer.train()
    trainer.collector.shutdown()
    eval_env.close(raise_if_closed=False)
    assert trainer.step == 1 and trainer.env_steps > 0
    record = trainer.history[0]
    assert record["train/batch"] > 0 and not record.get("train/skipped", 0)
    assert any(not torch.equal(bundle.network.state_dict()[k], v) for k, v in before.items())
    save_policy(bundle.network, tmp_path / "ript.pt")
    assert torch.equal(load_policy(tmp_path / "ript.pt").mean.weight, bundle.network.mean.weight)


def test_the_registry_answers_for_each_kind_and_refuses_clashes(tiny_kind, tmp_path):
    assert {"quest", "regression", "hf", "tiny_linear"} <= set(policy_kinds())
    assert policy_kind("quest").sampling_fields == ("temperature", "top_k")
    assert policy_kind("regression").sampling_fields == ("scale_multiplier",) and policy_kind("hf").checkpoint_state is not None
    with pytest.raises(ValueError, match="already registered"):
        register_policy_kind(TINY)
    with pytest.raises(ValueError, match="already the network of policy kind 'tiny_linear'"):
        register_policy_kind(PolicyKind(name="other", network_class=TinyLinear, config_class=TinyConfig,
                                        build=TINY.build, make_actor=tiny_actor, sft=tiny_sft))
    with pytest.raises(ValueError, match="policy kind must be one of .*got 'nope'"):
        policy_kind("nope")
    with pytest.raises(TypeError, match="no policy kind is registered for Linear"):
        policy_kind_of(nn.Linear(2, 2))
    # a file of a kind this process has not registered names the fix
    save_policy(TinyLinear(TinyConfig()), tmp_path / "tiny.pt")
    unregister_policy_kind("tiny_linear")
    try:
        with pytest.raises(CheckpointError, match="kind 'tiny_linear', which is not registered here"):
            load_policy(tmp_path / "tiny.pt")
    finally:
        register_policy_kind(TINY)


def test_train_sft_dispatches_to_the_kind_recipe(tiny_kind, tmp_path):
    calls = []

    def recipe(bundle, batches, options):
        calls.append((bundle.kind, options.steps, options.lr, next(batches)["action"].shape[-2:]))
        return {"recorded": [0.0]}

    register_policy_kind(PolicyKind(name="tiny_linear", network_class=TinyLinear, config_class=TinyConfig,
                                    build=TINY.build, make_actor=tiny_actor, sft=recipe), replace=True)
    demos = write_toy_demos(tmp_path / "track_demo.hdf5", torch.zeros(2, A))
    bundle = build_policy("tiny_linear", preset="tiny", action_dim=A, state_dim=2 * A, image_keys=(), image_size=0)
    history = train_sft(bundle, [read_demos(demos, key_map={"s": STATE_KEY})], steps=7, lr=0.5, progress=False)
    assert history == {"recorded": [0.0]} and calls == [("tiny_linear", 7, 0.5, (1, A))]
