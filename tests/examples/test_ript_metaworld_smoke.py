"""The MetaWorld pipeline end to end on a tiny config: demos, SFT, eval, one RIPT step."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parents[2] / "examples" / "ript_metaworld.py"


# QueST also runs with top-k sampling and scores both the sampling policy and the mode
EXTRA = {"quest": ["policy.sampling.top_k=3", "eval.exploration=[random,deterministic]"], "regression": []}


@pytest.mark.parametrize("kind", ["quest", "regression"])
def test_metaworld_pipeline_smoke(tmp_path, kind):
    run = subprocess.run(
        [
            sys.executable, str(EXAMPLE), f"hydra.run.dir={tmp_path}", "tasks=[reach-v3]",
            "demos.per_task=1", "env.image_size=32", "env.max_steps=40", "env.num_envs=1",
            f"policy.kind={kind}", "policy.preset=tiny", "sft.steps=3", "sft.autoencoder_steps=3", "sft.scale_steps=3",
            "eval.per_task=2", "eval.during_training_per_task=1", "eval.videos=1",
            "ript.num_steps=1", "ript.group_size=2", "ript.batch_size=2", "ript.ppo_epochs=1",
            "ript.minibatch_size=2", "ript.max_context_draws=2", "progress=false",
            # a tiny policy never succeeds: without rejection the PPO step still runs
            "ript.dynamic_sampling=false",
            *EXTRA[kind],
        ],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    for key in ("tasks", "sr_sft", "sr_ript", "iterations", "env_steps", "wall_s"):
        assert key in result, key
    assert result["tasks"] == ["reach-v3"] and result["iterations"] == 1
    assert result["env_steps"] > 0
    assert 0.0 <= result["sr_sft"] <= 1.0 and 0.0 <= result["sr_ript"] <= 1.0
    for produced in ("demos/reach-v3_demo.hdf5", "sft_policy.pt", "success_rate.png",
                     "checkpoints/latest.pt", "result.json", "videos/sft_0.gif", "ript_policy.pt"):
        assert (tmp_path / produced).exists(), produced
    history = json.loads((tmp_path / "checkpoints" / "history.json").read_text())
    assert history["train"][0]["train/batch"] == 2  # the loss ran on the collected batch
    if kind == "quest":
        assert result["eval_modes"] == ["random", "deterministic"]
        assert set(result["sr_ript_by_mode"]) == {"random", "deterministic"}
        assert result["sr_ript"] == result["sr_ript_by_mode"]["random"]["sr"]
        from torchrl_ript.models.checkpoint import load_policy

        assert load_policy(tmp_path / "ript_policy.pt").config.top_k == 3  # saved with the weights
