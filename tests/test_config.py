import subprocess
import sys
from pathlib import Path

import pytest

from torchrl_ript.config import PAPER_PRESETS, ConfigError, RIPTConfig, validate_ript_config


@pytest.mark.parametrize(
    "values, match",
    [
        (dict(group_size=1), "group_size"),
        (dict(group_size=8, trajs_per_batch=20), "multiple of group_size"),
        (dict(ppo_epochs=-1), "ppo_epochs must be >= 1"),
        (dict(num_steps=0), "num_steps must be >= 1"),
        (dict(lr=0.0), "lr must be > 0"),
        (dict(clip_epsilon=1.5), "clip_epsilon"),
        (dict(ratio="token"), "ratio"),
        (dict(max_context_draws=2), "max_context_draws"),
        (dict(minibatch_size=500), "minibatch_size"),
        (dict(max_grad_norm=0.0), "max_grad_norm"),
        (dict(max_staleness=-1), "max_staleness must be >= 0"),
        (dict(loss_reduction="rollout"), "loss_reduction must be 'decision' or 'trajectory'"),
        (dict(target_kl=0.0), "target_kl must be > 0 or null"),
        (dict(update_threads=0), "update_threads must be an integer >= 1 or null"),
        (dict(update_threads=1.5), "update_threads must be an integer >= 1 or null"),
    ],
)
def test_bad_values_name_the_fix(values, match):
    with pytest.raises(ConfigError, match=match):
        validate_ript_config(RIPTConfig(**values))


def test_unknown_keys_are_rejected():
    with pytest.raises(ConfigError, match="unknown RIPT option"):
        RIPTConfig.from_mapping({"group_size": 8, "trajs_per_batch": 16, "epochs": 3})


def test_keep_in_flight_reaches_the_collector():
    import torch
    from torchrl.envs import SerialEnv

    from torchrl_ript import ContextDataset, ContextToyVLAEnv
    from torchrl_ript.modules.toy_policies import toy_laplace_actor
    from torchrl_ript.trainers.factory import make_ript_trainer

    actor, _ = toy_laplace_actor()
    config = RIPTConfig(group_size=2, trajs_per_batch=4, minibatch_size=2, max_decisions=4, keep_in_flight=True,
                        max_staleness=2)
    trainer = make_ript_trainer(config, env=SerialEnv(2, lambda: ContextToyVLAEnv(action_dim=2)), eval_env=None,
                                actor=actor, train_contexts=ContextDataset(torch.zeros(4, 2), [0] * 4, ["track"]),
                                progress=False)
    assert trainer.collector.keep_in_flight and trainer.collector.max_staleness == 2
    trainer.collector.shutdown()


def test_paper_presets_are_valid():
    for preset in PAPER_PRESETS.values():
        validate_ript_config(RIPTConfig(**preset))


def test_hydra_example_rejects_bad_overrides(tmp_path):
    """The example stops with the config check's message (one subprocess: ~7 s of imports)."""
    script = Path(__file__).parents[1] / "examples" / "ript_toy.py"
    run = subprocess.run(
        [sys.executable, str(script), "ript.group_size=3", f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode != 0
    assert "must be a multiple of group_size" in run.stdout + run.stderr


def test_hydra_config_rejects_unknown_keys(compose_example_config):
    """A misspelt field is Hydra's struct error, before any work starts."""
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="nonsense"):
        compose_example_config("ript_toy", ["ript.nonsense=1"])
