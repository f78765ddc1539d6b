"""``examples/ript_libero.py`` with no arguments: its config, and a tiny version of it end to end.

The tiny run is the default pipeline with small numbers: scripted-expert demos
(1 per task, 32 px) -> tiny Laplace regression SFT -> evaluation -> one RIPT iteration ->
evaluation, on the real simulator (about a minute on 2 busy cores).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from torchrl_ript.envs.libero.setup import libero_available

EXAMPLES = Path(__file__).parents[2] / "examples"
SCRIPT = EXAMPLES / "ript_libero.py"


def test_default_config_is_the_cpu_scripted_recipe(compose_example_config):
    from omegaconf import OmegaConf

    cfg = compose_example_config("ript_libero")
    OmegaConf.resolve(cfg)
    assert cfg.suite == "libero_object" and 1 <= len(cfg.task_ids) <= 2
    # no data needed: the scripted experts record a few demos, held-out init states are not used
    assert cfg.demos.dir is None and not cfg.demos.random and cfg.demos.per_task >= 1
    assert cfg.demos.per_task + cfg.eval.per_task <= 50
    assert cfg.env.camera_size <= 64 and cfg.policy.image_size == cfg.env.camera_size
    # a Laplace regression policy, per-decision ratios, K=8, both eval modes (the mean action = headline)
    assert cfg.policy.kind == "regression" and cfg.ript.ratio == "step" and cfg.ript.group_size == 8
    assert list(cfg.eval.exploration) == ["deterministic", "random"]
    from torchrl_ript.config import RIPTConfig, validate_ript_config

    validate_ript_config(RIPTConfig.from_mapping({**OmegaConf.to_container(cfg.ript), "max_decisions": 35}))


@pytest.mark.parametrize("name", ["ript_libero_paper", "ript_libero_oft", "ript_libero_smoke"])
def test_variant_configs_resolve(name, compose_example_config):
    from omegaconf import OmegaConf

    cfg = compose_example_config(name)
    OmegaConf.resolve(cfg)
    if name == "ript_libero_paper":
        assert (cfg.ript.group_size, cfg.ript.trajs_per_batch, cfg.ript.ppo_epochs, cfg.ript.lr) == (16, 160, 20, 1e-6)
        assert cfg.env.camera_size == 128 and cfg.eval.per_task == 50
    if name == "ript_libero_oft":
        assert cfg.policy.kind == "hf" and cfg.policy.overrides.lora_rank == 32
        assert (cfg.ript.group_size, cfg.ript.ppo_epochs, cfg.ript.clip_epsilon) == (8, 1, 0.1)
        assert cfg.ript.lr == 1e-5 and cfg.ript.param_lrs["lora_"] == 1e-4


def test_context_sampler_keys_are_metaworlds(compose_example_config):
    libero, metaworld = compose_example_config("ript_libero"), compose_example_config("ript_metaworld")
    assert (libero.contexts.sampler, libero.contexts.explore) == (metaworld.contexts.sampler,
                                                                  metaworld.contexts.explore) == ("uniform", 0.2)


def test_unknown_override_fails(compose_example_config):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        compose_example_config("ript_libero", ["ript.not_a_field=1"])


@pytest.mark.skipif(not libero_available(), reason="LIBERO is not installed: run `bash scripts/install_libero.sh`.")
@pytest.mark.slow  # ~60 s; the LIBERO smoke config covers the example in the default run
@pytest.mark.timeout(900)
def test_tiny_default_pipeline_end_to_end(tmp_path):
    run = subprocess.run(
        [sys.executable, str(SCRIPT), f"hydra.run.dir={tmp_path}", "progress=false",
         # the default pipeline, small: 1 expert demo per task, tiny regression policy, 1 RIPT iteration
         "task_ids=[0]", "demos.per_task=1", "env.camera_size=32", "env.max_steps=16", "env.num_envs=1",
         "policy.preset=tiny", "sft.steps=5", "sft.scale_steps=5", "sft.batch_size=8",
         "eval.per_task=1", "eval.videos=1", "ript.group_size=2", "ript.trajs_per_batch=2", "ript.num_steps=1",
         "ript.ppo_epochs=1", "ript.minibatch_size=2", "ript.max_context_draws=1",
         "ript.dynamic_sampling=false"],  # keep the uniform group: the PPO step runs
        capture_output=True, text=True, timeout=850,
    )
    assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result == json.loads((tmp_path / "result.json").read_text())
    # the demos came from the scripted expert, in LIBERO's layout, from a start outside the held-out one
    from torchrl_ript.data.demos import LIBERO_KEY_MAP, read_demos

    (path,) = (tmp_path / "demos").glob("*_demo.hdf5")
    demos = read_demos(path, key_map=LIBERO_KEY_MAP, rotate_images_180=True)
    assert len(demos) == 1 and demos.env_args["expert"].endswith("LiberoScriptedExpert")
    assert demos.demos[0]["reward"][-1].item() == 1.0
    assert "recording 1 scripted-expert demos" in run.stdout
    # SFT -> evaluation -> one RIPT iteration with an update -> evaluation
    assert result["policy"] == "regression" and result["sft_s"] > 0 and result["n_eval"] == 1
    assert result["iterations"] == 1 and result["iterations_without_update"] == 0
    history = json.loads((tmp_path / "checkpoints" / "history.json").read_text())["train"]
    assert len(history) == 1 and history[0]["train/batch"] == 2
    assert result["env_steps"] == history[0]["collect/env_steps"] > 0
    assert result["policy_share"] == pytest.approx(history[0]["collect/policy_s"] / history[0]["collect/wall_s"])
    assert 0 < result["policy_share"] < 1
    assert 0 <= result["p_value"] <= 1 and set(result["paired_by_mode"]) == {"random", "deterministic"}
    for name in ("sft_policy.pt", "ript_policy.pt", "success_rate.png", "videos/before_0.gif"):
        assert (tmp_path / name).stat().st_size > 0, name
