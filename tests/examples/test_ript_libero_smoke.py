"""``examples/ript_libero.py --config-name ript_libero_smoke`` end to end (real LIBERO, CPU).

Random-rollout demos -> tiny QueST SFT -> evaluate -> 2 RIPT iterations ->
evaluate, in a subprocess (~40 s on 2 busy cores). The policy never succeeds:
the run must say so and still write its outputs and the JSON line.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from torchrl_ript.envs.libero.setup import libero_available

pytestmark = pytest.mark.skipif(
    not libero_available(),
    reason="LIBERO is not installed: run `bash scripts/install_libero.sh`.",
)

SCRIPT = Path(__file__).parents[2] / "examples" / "ript_libero.py"


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ript_libero_smoke")
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--config-name", "ript_libero_smoke", f"hydra.run.dir={out}"],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, f"smoke run failed:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    return out, run


@pytest.mark.timeout(700)
def test_smoke_result_line(smoke_run):
    out, run = smoke_run
    last = run.stdout.strip().splitlines()[-1]
    result = json.loads(last)
    assert result == json.loads((out / "result.json").read_text())
    for key in ("tasks", "sr_sft", "sr_before", "sr_ript", "n_eval", "p_value", "iterations", "env_steps", "wall_s"):
        assert key in result, key
    assert result["tasks"] == ["pick_up_the_black_bowl_between_the_plate_and_the_ramekin_and_place_it_on_the_plate"]
    assert result["iterations"] == 2
    assert result["env_steps"] > 0 and result["wall_s"] > 0
    assert 0.0 <= result["sr_ript"] <= 1.0 and result["sr_sft"] == result["sr_before"]
    # a policy cloned from random rollouts never succeeds: the run says so plainly
    assert result["sr_before"] == 0.0
    assert result["iterations_without_update"] == 2
    log = run.stdout + run.stderr
    assert "RANDOM rollouts" in log
    assert "dynamic sampling found no informative group" in log
    assert "made no update" in log


@pytest.mark.timeout(700)
def test_smoke_numbers_agree_with_history_and_logs(smoke_run):
    """What a wrong implementation would break: totals, per-mode outcomes, the paired test."""
    out, run = smoke_run
    result = json.loads(run.stdout.strip().splitlines()[-1])
    cfg = result["config"]
    history = json.loads((out / "checkpoints" / "history.json").read_text())["train"]
    K = cfg["ript"]["group_size"]
    # JSON totals = the sums over the trainer's history = the TorchRL CSV log
    assert len(history) == result["iterations"]
    assert result["env_steps"] == sum(r["collect/env_steps"] for r in history)
    for key in ("groups_completed", "groups_kept", "groups_all_success", "groups_all_failure"):
        assert result[key] == sum(r[f"collect/{key}"] for r in history), key
    csv = (out / "logs" / "ript_libero" / "scalars" / "env_steps_total.csv").read_text().split()
    assert float(csv[-1].split(",")[1]) == result["env_steps"]
    # each iteration's collection stats add up (dynamic sampling on: uniform groups rejected)
    for r in history:
        assert r["collect/groups_completed"] == (
            r["collect/groups_kept"] + r["collect/groups_all_success"] + r["collect/groups_all_failure"])
        assert r["collect/rollouts_kept"] == K * r["collect/groups_kept"] == r["train/batch"]
        assert r["collect/rollouts_finished"] >= K * r["collect/groups_completed"]
        assert r["collect/successes"] <= r["collect/rollouts_finished"]
        assert r["collect/contexts_drawn"] <= cfg["ript"]["max_context_draws"]
        # every finished rollout here fails, so each runs to the time limit
        assert r["collect/env_steps"] == r["collect/rollouts_finished"] * cfg["env"]["max_steps"]
    # evaluation: n_eval contexts per mode, SR = mean of the per-context outcomes, headline = first mode
    from torchrl_ript.trainers.stats import paired_success_test

    assert result["n_eval"] == cfg["eval"]["per_task"] * len(result["task_ids"])
    for tag in ("before", "ript"):
        by_mode = result[f"sr_{tag}_by_mode"]
        assert list(by_mode) == result["eval_modes"]
        for scores in by_mode.values():
            assert scores["n"] == len(scores["outcomes"]) == result["n_eval"]
            assert scores["sr"] == sum(scores["outcomes"]) / scores["n"]
        assert result[f"sr_{tag}"] == by_mode[result["eval_modes"][0]]["sr"]
    headline = result["eval_modes"][0]
    test = paired_success_test(result["sr_before_by_mode"][headline]["outcomes"],
                               result["sr_ript_by_mode"][headline]["outcomes"])
    assert result["p_value"] == test["p_value"] == result["paired_by_mode"][headline]["p_value"]


@pytest.mark.timeout(700)
def test_smoke_outputs(smoke_run):
    out, _ = smoke_run
    for name in ("success_rate.png", "sft_policy.pt", "ript_policy.pt", "checkpoints/latest.pt",
                 "checkpoints/history.json", "videos/before_0.gif", "videos/ript_0.gif"):
        assert (out / name).stat().st_size > 0, name
    assert list((out / "logs").rglob("*.csv")), "no TorchRL CSV log"
    assert len(list((out / "demos").glob("*_demo.hdf5"))) == 1
    from torchrl_ript.models.checkpoint import load_policy
    from torchrl_ript.models.quest import QuestPolicy

    assert isinstance(load_policy(out / "ript_policy.pt"), QuestPolicy)


@pytest.mark.slow  # ~50 s: a second LIBERO run; the QueST smoke run above stays in the default run
@pytest.mark.timeout(700)
def test_regression_policy_updates_on_libero_observations(tmp_path):
    # two cameras + proprio, Laplace policy, rejection off so the PPO step runs
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--config-name", "ript_libero_smoke", f"hydra.run.dir={tmp_path}",
         "policy.kind=regression", "ript.dynamic_sampling=false", "ript.num_steps=1", "eval.videos=0",
         "contexts.sampler=adaptive"],  # the sampler that learns from every finished rollout
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    history = json.loads((tmp_path / "checkpoints" / "history.json").read_text())
    assert history["train"][0]["train/batch"] == 2
    assert "RIPT contexts from init_files, adaptive sampler" in run.stdout
    from torchrl_ript.models.checkpoint import load_policy
    from torchrl_ript.models.regression_policy import RegressionPolicy

    policy = load_policy(tmp_path / "ript_policy.pt")
    assert isinstance(policy, RegressionPolicy)
    assert len(policy.config.encoder.image_keys) == 2  # agentview + eye-in-hand
