"""The MetaWorld pipeline end to end on tiny configs: its JSON line must agree with its logs.

Few-shot from scratch (both policy kinds) and the transfer protocol
(pretrain -> 1-demo SFT -> one RIPT iteration from the demo's jittered
starts, adaptive sampler). Each asserts what a wrong implementation would
break: the JSON fields match the history and the evaluation outcomes, the
collection statistics add up, the fine-tuned policy kept the pretrained
tokenizer, evaluation never starts from a demo's start.
"""
import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

pytest.importorskip("metaworld")

EXAMPLE = Path(__file__).parents[2] / "examples" / "ript_metaworld.py"
TINY = [
    "env.image_size=32", "env.num_envs=1", "eval.num_envs=1", "policy.preset=tiny", "sft.steps=3", "sft.autoencoder_steps=3",
    "sft.scale_steps=3", "eval.during_training_per_task=1", "eval.videos=1", "ript.num_steps=1",
    "ript.group_size=2", "ript.trajs_per_batch=4", "ript.ppo_epochs=1", "ript.minibatch_size=2",
    "ript.max_context_draws=2", "progress=false",
    # a tiny policy rarely succeeds: without rejection the PPO step always runs on B rows
    "ript.dynamic_sampling=false",
]


def run_example(tmp_path, config, *overrides):
    run = subprocess.run([sys.executable, str(EXAMPLE), "--config-name", config, f"hydra.run.dir={tmp_path}",
                          *TINY, *overrides],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result == json.loads((tmp_path / "result.json").read_text())
    return result


def check_result_agrees_with_logs(tmp_path, result, *, tasks, per_task, batch, group):
    from torchrl_ript.trainers.pipeline import paired_mode_test

    for key in ("tasks", "sr_sft", "sr_ript", "iterations", "env_steps", "wall_s", "n_eval", "p_value"):
        assert key in result, key
    assert result["tasks"] == tasks and result["iterations"] == 1
    # n_eval: the held-out contexts, each rolled out rollouts_per_start times (the mode once); the SRs are
    # the means of those outcomes, the counts their sums per start
    assert result["n_eval"] == per_task * len(tasks)
    for stage in ("sft", "ript"):
        for mode, scores in result[f"sr_{stage}_by_mode"].items():
            rollouts = scores["rollouts_per_start"]
            assert rollouts == (1 if mode == "deterministic" else result["config"]["eval"]["rollouts_per_start"])
            assert scores["starts"] == result["n_eval"], (stage, mode)
            assert scores["n"] == len(scores["outcomes"]) == result["n_eval"] * rollouts, (stage, mode)
            assert scores["counts"] == [sum(scores["outcomes"][i:i + rollouts])
                                        for i in range(0, scores["n"], rollouts)]
            assert scores["sr"] == pytest.approx(np.mean(scores["outcomes"]))
    headline = result["eval_modes"][0]
    assert result["sr_sft"] == result["sr_sft_by_mode"][headline]["sr"]
    assert result["sr_ript"] == result["sr_ript_by_mode"][headline]["sr"]
    expected = paired_mode_test(result["sr_sft_by_mode"][headline], result["sr_ript_by_mode"][headline])
    assert result["p_value"] == pytest.approx(expected["p_value"])
    # the collection statistics add up and match the trainer's history
    history = json.loads((tmp_path / "checkpoints" / "history.json").read_text())["train"]
    assert len(history) == result["iterations"]
    record = history[0]
    assert result["env_steps"] == sum(r["collect/env_steps"] for r in history) == result["collection"]["env_steps"]
    assert record["collect/rollouts_kept"] == record["train/batch"] == batch  # B kept (no rejection)
    assert record["collect/groups_kept"] * group == batch
    assert record["collect/groups_kept"] == record["collect/groups_completed"]
    assert record["collect/rollouts_finished"] >= batch
    assert record["collect/env_steps"] >= record["collect/decision_steps"] > 0
    # the policy's share of the collection's wall time, from the same per-iteration timings
    assert 0 < record["collect/policy_s"] < record["collect/wall_s"]
    assert result["policy_share"] == pytest.approx(
        sum(r["collect/policy_s"] for r in history) / sum(r["collect/wall_s"] for r in history))
    summary = result["collection"]
    assert summary["groups_completed"] == record["collect/groups_completed"]
    uniform = record["collect/groups_all_success"] + record["collect/groups_all_failure"]
    assert summary["groups_informative"] == record["collect/groups_kept"] - uniform
    # the task mix counts the same groups, split by task
    mix = summary["task_mix"]["total"]
    assert sum(c["groups"] for c in mix.values()) == summary["groups_completed"]
    assert sum(c["informative"] for c in mix.values()) == summary["groups_informative"]
    assert sum(c["kept"] for c in mix.values()) == summary["rollouts_kept"]
    assert len(summary["task_mix"]["per_iteration"]) == result["iterations"]
    for produced in ("sft_policy.pt", "success_rate.png", "checkpoints/latest.pt", "result.json",
                     "videos/sft_0.gif", "videos/ript_0.gif", "ript_policy.pt"):
        assert (tmp_path / produced).exists(), produced


# 8 actions per decision keep the rollouts short in decisions
EXTRA = {"quest": ["+policy.overrides.n_exec=8", "policy.sampling.top_k=3", "eval.exploration=[random,deterministic]"],
         "regression": []}  # its tiny preset executes its 8-action chunk


# ~40 s each: the default run keeps the QueST one (the main job's kind and protocol); the
# regression kind's pipeline stages run in tests/trainers/test_pipeline_transfer.py
@pytest.mark.parametrize("kind", ["quest", pytest.param("regression", marks=pytest.mark.slow)])
def test_metaworld_fewshot_pipeline_smoke(tmp_path, kind):
    result = run_example(
        tmp_path, "ript_metaworld_fewshot", "tasks=[reach-v3]", "demos.per_task=1",
        "env.max_steps=40", f"policy.kind={kind}", "eval.per_task=2", "eval.rollouts_per_start=2", *EXTRA[kind],
    )
    check_result_agrees_with_logs(tmp_path, result, tasks=["reach-v3"], per_task=2, batch=4, group=2)
    assert result["pretrain_tasks"] == [] and result["pretrain_s"] == 0.0
    assert not (tmp_path / "pretrain_policy.pt").exists()
    assert (tmp_path / "demos/reach-v3_demo.hdf5").exists()
    if kind == "quest":
        assert result["eval_modes"] == ["random", "deterministic"]
        assert set(result["p_value_by_mode"]) == {"random", "deterministic"}
        # 2 sampled rollouts per start: the count test for the sampling policy, McNemar for the mode
        assert "starts_up" in result["p_value_by_mode"]["random"]
        assert "gained" in result["p_value_by_mode"]["deterministic"]
        from torchrl_ript.models.checkpoint import load_policy

        assert load_policy(tmp_path / "ript_policy.pt").config.top_k == 3  # saved with the weights


@pytest.mark.slow  # ~45 s; pretrain -> fine-tune runs in-process in tests/trainers/test_pipeline_transfer.py
def test_metaworld_transfer_pipeline_smoke(tmp_path):
    """pretrain (2 demos of reach-v3) -> 1-demo SFT of reach-wall-v3 -> one RIPT iteration."""
    from torchrl_ript.data import ContextDataset
    from torchrl_ript.envs.metaworld import metaworld_contexts
    from torchrl_ript.models.checkpoint import load_policy

    result = run_example(
        tmp_path, "ript_metaworld_transfer", "pretrain.tasks=[reach-v3]",
        "tasks=[reach-wall-v3]", "pretrain.demos_per_task=2", "pretrain.steps=3", "pretrain.autoencoder_steps=3",
        "demos.per_task=1", "env.max_steps=100", "eval.per_task=3", "contexts.jitter.copies=4",
        "contexts.sampler=adaptive", "eval.exploration=[random]", "+policy.overrides.n_exec=8",
    )
    check_result_agrees_with_logs(tmp_path, result, tasks=["reach-wall-v3"], per_task=3, batch=4, group=2)
    assert result["pretrain_tasks"] == ["reach-v3"] and result["sampler"] == "adaptive"
    # RIPT's contexts: the one demo's start and 3 jittered variants of it
    assert result["contexts"] == 4
    with h5py.File(tmp_path / "pretrain_demos/reach-v3_demo.hdf5") as f:
        assert len(f["data"]) == 2
    # the target SFT started from the pretrained policy and kept its skill tokenizer
    pretrained = load_policy(tmp_path / "pretrain_policy.pt")
    tuned, extra = load_policy(tmp_path / "sft_policy.pt", return_extra=True)
    assert extra["start_from"].endswith("pretrain_policy.pt")
    for key, value in pretrained.autoencoder.state_dict().items():
        assert torch.equal(tuned.autoencoder.state_dict()[key], value), key
    # evaluation contexts: seeded held-out starts, none of them a demo's start
    demos = ContextDataset.from_demonstrations(tmp_path / "demos/reach-wall-v3_demo.hdf5")
    held_out = metaworld_contexts(["reach-wall-v3"], 3, seed=1000)
    assert not held_out.matches(demos).any()
