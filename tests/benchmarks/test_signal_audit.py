"""``benchmarks/signal_audit.py`` end to end on the examples' smoke configs.

The script must build what the example builds (its config name picks the
example), collect one batch, run the real and the null update from the same
weights, and end with a JSON line whose numbers agree with each other and
with the file it writes. The smoke policies never succeed, so the run keeps
the uniform groups (``ript.dynamic_sampling=false``): every advantage is 0 and
both updates must leave the policy where it was (out of band 0, KL 0).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "signal_audit.py"


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "examples" / "configs").glob("*.yaml")))
def test_every_example_config_maps_to_its_example(name, compose_example_config, load_benchmark):
    """``--config-name`` picks the example: every ript_libero* / ript_metaworld* config, and a clear refusal else."""
    script = load_benchmark("example_config")
    cfg = compose_example_config(name)
    if name.startswith(("ript_libero", "ript_metaworld")):
        example = script.example_for(name, cfg)
        assert name.startswith(f"ript_{example}")
        assert (ROOT / "examples" / f"ript_{example}.py").exists()
    else:
        with pytest.raises(SystemExit, match="neither a MetaWorld nor a LIBERO"):
            script.example_for(name, cfg)


def run_audit(tmp_path, *args, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, str(SCRIPT), *args, f"hydra.run.dir={tmp_path}"],
                         capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result == json.loads((tmp_path / "signal_audit.json").read_text())
    return result, run.stdout


def check_consistent(result, *, config_name, overrides, trajectories):
    for key in ("out_of_band_real", "out_of_band_null", "kl_real", "kl_null", "k1_real", "k1_null", "k3_real",
                "k3_null", "grad_norm_real", "grad_norm_null", "n_decisions", "n_trajectories", "wall_s",
                "load_avg", "config_name", "overrides"):
        assert key in result, key
    assert result["config_name"] == config_name and result["overrides"] == list(overrides)
    assert result["n_trajectories"] == trajectories == result["collection"]["rollouts_kept"]
    assert result["n_trajectories"] <= result["n_decisions"]
    assert result["n_decisions"] <= trajectories * result["max_decisions"]
    for run in ("real", "null"):
        assert 0.0 <= result[f"out_of_band_{run}"] <= 1.0
        assert result[f"k3_{run}"] >= 0.0 and result[f"kl_{run}"] == result[f"k3_{run}"]
        assert result[run]["n"] == result["n_decisions"]
        assert result[run]["logp_check_max_abs_diff"] < 1e-4  # the loss scores what was sampled
    # both updates started from the same weights: the same rescored log-probs before each
    assert result["same_start"] and result["real"]["logp_before_sum"] == result["null"]["logp_before_sum"]
    assert result["wall_s"] > 0 and len(result["load_avg"]) == 2


def check_zero_advantages(result):
    """All-failure groups kept: zero advantages, so neither update may move the policy."""
    assert result["advantage_abs_mean"] == 0.0
    for run in ("real", "null"):
        assert result[f"grad_norm_{run}"] == 0.0
        assert result[f"out_of_band_{run}"] == 0.0
        # the weights did not move: what is left is the rescoring's float noise (batch shapes differ)
        assert result[f"k3_{run}"] < 1e-9 and abs(result[f"k1_{run}"]) < 1e-5
    assert result["null_in_band"] is True


@pytest.mark.slow  # ~40 s end to end; the audit's logic runs on the toy env in tests/trainers/test_audit.py
@pytest.mark.timeout(700)
def test_libero_smoke_regression(tmp_path):
    """LIBERO smoke config, Laplace regression policy: continuous scale statistics in the JSON."""
    from torchrl_ript.envs.libero.setup import libero_available

    if not libero_available():
        pytest.skip("LIBERO is not installed: run `bash scripts/install_libero.sh`.")
    overrides = ["policy.kind=regression", "ript.dynamic_sampling=false", "sft.scale_steps=3"]
    result, stdout = run_audit(tmp_path, "--config-name", "ript_libero_smoke", *overrides)
    check_consistent(result, config_name="ript_libero_smoke", overrides=overrides, trajectories=2)
    check_zero_advantages(result)
    assert result["example"] == "examples/ript_libero.py" and result["policy"] == "regression"
    assert result["checkpoint"] is None and result["sft_s"] > 0  # the example's own SFT ran
    assert (tmp_path / "sft_policy.pt").exists()
    scale = result["scale"]
    assert len(scale["before"]["mean"]) == 7  # LIBERO's 7 action dims
    assert scale["before"] == scale["after_real"] == scale["after_null"]  # nothing moved
    assert all(m > 0 for m in scale["before"]["min"])
    assert "real" in stdout and "verdict" in stdout and "scale per action dimension" in stdout


@pytest.mark.slow  # ~1-2 min: MetaWorld demos, SFT and one batch on 2 busy cores
@pytest.mark.timeout(700)
def test_metaworld_tiny_quest_with_checkpoint(tmp_path):
    """MetaWorld, tiny QueST: a first run SFTs, a second loads its checkpoint (no SFT) and audits the same batch."""
    pytest.importorskip("metaworld")
    tiny = ["tasks=[reach-v3]", "demos.per_task=1", "env.max_steps=40", "env.image_size=32", "env.num_envs=1",
            "policy.preset=tiny", "+policy.overrides.n_exec=8", "policy.sampling.top_k=3", "sft.steps=3",
            "sft.autoencoder_steps=3", "ript.group_size=2", "ript.trajs_per_batch=4", "ript.ppo_epochs=1",
            "ript.minibatch_size=2", "ript.max_context_draws=2", "ript.dynamic_sampling=false", "progress=false"]
    first, _ = run_audit(tmp_path / "sft", "--config-name", "ript_metaworld_fewshot", *tiny)
    check_consistent(first, config_name="ript_metaworld_fewshot", overrides=tiny, trajectories=4)
    assert first["example"] == "examples/ript_metaworld.py" and first["policy"] == "quest"
    assert first["scale"] is None  # a token policy
    checkpoint = tmp_path / "sft" / "sft_policy.pt"
    overrides = [*tiny, f"policy.checkpoint={checkpoint}"]
    second, _ = run_audit(tmp_path / "loaded", "--config-name", "ript_metaworld_fewshot", *overrides)
    check_consistent(second, config_name="ript_metaworld_fewshot", overrides=overrides, trajectories=4)
    assert second["sft_s"] == 0.0 and second["checkpoint"] == str(checkpoint)
    # the same weights and the same seeded collection: the same batch and the same numbers
    assert second["real"]["logp_before_sum"] == first["real"]["logp_before_sum"]
    assert second["out_of_band_null"] == first["out_of_band_null"]
