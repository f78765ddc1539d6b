import subprocess
import sys
from pathlib import Path

import pytest

from torchrl_ript.config import PAPER_PRESETS, ConfigError, RIPTConfig, validate_ript_config


@pytest.mark.parametrize(
    "values, match",
    [
        (dict(group_size=1), "group_size"),
        (dict(group_size=8, batch_size=20), "multiple of group_size"),
        (dict(ppo_epochs=-1), "ppo_epochs must be >= 1"),
        (dict(num_steps=0), "num_steps must be >= 1"),
        (dict(lr=0.0), "lr must be > 0"),
        (dict(clip_epsilon=1.5), "clip_epsilon"),
        (dict(ratio="token"), "ratio"),
        (dict(max_context_draws=2), "max_context_draws"),
        (dict(minibatch_size=500), "minibatch_size"),
        (dict(max_grad_norm=0.0), "max_grad_norm"),
    ],
)
def test_bad_values_name_the_fix(values, match):
    with pytest.raises(ConfigError, match=match):
        validate_ript_config(RIPTConfig(**values))


def test_unknown_keys_are_rejected():
    with pytest.raises(ConfigError, match="unknown RIPT option"):
        RIPTConfig.from_mapping({"group_size": 8, "batch_size": 16, "epochs": 3})


def test_paper_presets_are_valid():
    for preset in PAPER_PRESETS.values():
        validate_ript_config(RIPTConfig(**preset))


def test_hydra_example_rejects_bad_overrides(tmp_path):
    script = Path(__file__).parents[2] / "examples" / "ript_toy.py"
    for override, message in [("ript.group_size=3", "must be a multiple of group_size"),
                              ("ript.nonsense=1", "Key 'nonsense' is not in struct")]:
        run = subprocess.run(
            [sys.executable, str(script), override, f"hydra.run.dir={tmp_path}"],
            capture_output=True, text=True, timeout=120,
        )
        assert run.returncode != 0
        assert message in run.stdout + run.stderr
