"""``result_line``: the JSON line of both benchmark examples, key for key as they wrote it inline before
(plus ``policy_share``: policy seconds 3 + 1 over collection seconds 10 + 6 = 0.25)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from torchrl_ript.trainers.pipeline import collection_summary, paired_results, result_line
from torchrl_ript.trainers.stats import paired_count_test, paired_success_test

MODES = ["random", "deterministic"]
HISTORY = [
    {"collect/groups_completed": 5, "collect/groups_kept": 2, "collect/groups_all_success": 1,
     "collect/groups_all_failure": 2, "collect/env_steps": 1000, "collect/contexts_drawn": 6,
     "collect/rollouts_kept": 8, "collect/policy_s": 3.0, "collect/wall_s": 10.0, "train/skipped": 0},
    {"collect/groups_completed": 3, "collect/groups_kept": 2, "collect/groups_all_success": 0,
     "collect/groups_all_failure": 1, "collect/env_steps": 500, "collect/contexts_drawn": 4,
     "collect/rollouts_kept": 8, "collect/policy_s": 1.0, "collect/wall_s": 6.0, "train/skipped": 1},
    {"eval/success_rate": 0.5},  # a record without collection statistics
]


def evaluation(outcomes: dict[str, list[int]]) -> dict:
    by_mode = {m: {"sr": sum(o) / len(o), "per_task": {"a": sum(o) / len(o)}, "outcomes": o, "n": len(o)}
               for m, o in outcomes.items()}
    headline = by_mode[next(iter(by_mode))]
    return {"success_rate": headline["sr"], "per_task": headline["per_task"], "outcomes": headline["outcomes"],
            "by_mode": by_mode}


BEFORE = evaluation({"random": [0, 0, 1, 0], "deterministic": [1, 1, 0, 0]})
AFTER = evaluation({"random": [1, 1, 1, 0], "deterministic": [1, 0, 1, 0]})
TRAINER = SimpleNamespace(step=2, env_steps=1500, history=HISTORY)
CONFIG = {"ript": {"group_size": 4}}


def test_metaworld_line():
    line = result_line(
        fields={"tasks": ["a"], "pretrain_tasks": []}, policy="quest", modes=MODES, n_eval=4, baseline=BEFORE,
        final=AFTER, trainer=TRAINER, dynamic_sampling=True, stage_fields={"pretrain_s": 0.0, "sft_s": 1.5},
        ript_fields={"contexts": 10, "sampler": "uniform"}, wall_s=9.0, output_dir="/out", config=CONFIG,
    )
    tests = {m: paired_success_test(BEFORE["by_mode"][m]["outcomes"], AFTER["by_mode"][m]["outcomes"])
             for m in MODES}
    # what examples/ript_metaworld.py wrote inline
    expected = {"tasks": ["a"], "pretrain_tasks": [], "policy": "quest", "eval_modes": MODES,
                "sr_sft": 0.25, "sr_sft_per_task": {"a": 0.25}, "sr_sft_by_mode": BEFORE["by_mode"], "n_eval": 4,
                "pretrain_s": 0.0, "sft_s": 1.5, "sr_ript": 0.75, "sr_ript_per_task": {"a": 0.75},
                "sr_ript_by_mode": AFTER["by_mode"], "iterations": 2, "env_steps": 1500, "contexts": 10,
                "sampler": "uniform", "collection": collection_summary(HISTORY, dynamic_sampling=True),
                "p_value": tests["random"]["p_value"], "p_value_by_mode": tests, "policy_share": 0.25,
                "wall_s": 9.0, "output_dir": "/out", "config": CONFIG}
    assert line == expected
    assert line["collection"]["groups_informative"] == 4 and line["p_value"] == pytest.approx(0.25)
    # without RIPT (and without the SFT evaluation)
    line = result_line(fields={"tasks": ["a"], "pretrain_tasks": []}, policy="quest", modes=MODES, n_eval=4,
                       baseline=None, stage_fields={"pretrain_s": 0.0, "sft_s": 0.0}, wall_s=1.0,
                       output_dir="/out", config=CONFIG)
    assert line["sr_sft"] is None and line["sr_sft_by_mode"] is None
    assert (line["sr_ript"], line["iterations"], line["env_steps"], line["p_value"], line["policy_share"]) == (
        None, 0, 0, None, None)
    assert "collection" not in line and "p_value_by_mode" not in line and "sr_ript_by_mode" not in line


def test_libero_line():
    line = result_line(
        fields={"suite": "libero_spatial", "task_ids": [0], "tasks": ["a"]}, policy="quest", modes=MODES, n_eval=4,
        baseline=BEFORE, final=AFTER, trainer=TRAINER, baseline_name="before", paired_key="paired_by_mode",
        collection="groups",
        stage_fields={"sr_sft": 0.25, "demos_s": 1.0, "sft_s": 2.0, "eval_before_s": 3.0},
        ript_fields={"iterations_without_update": 1, "ript_s": 4.0, "eval_after_s": 5.0},
        wall_s=9.0, output_dir="/out", config=CONFIG,
    )
    # what examples/ript_libero.py wrote inline
    paired = {m: paired_success_test(BEFORE["by_mode"][m]["outcomes"], AFTER["by_mode"][m]["outcomes"])
              for m in MODES}
    collect = [r for r in HISTORY if "collect/groups_completed" in r]
    expected = {"suite": "libero_spatial", "task_ids": [0], "tasks": ["a"], "policy": "quest", "eval_modes": MODES,
                "n_eval": 4, "sr_before": 0.25, "sr_before_per_task": {"a": 0.25},
                "sr_before_by_mode": BEFORE["by_mode"], "sr_sft": 0.25, "demos_s": 1.0, "sft_s": 2.0,
                "eval_before_s": 3.0, "sr_ript": 0.75, "sr_ript_per_task": {"a": 0.75},
                "sr_ript_by_mode": AFTER["by_mode"], "p_value": paired[MODES[0]]["p_value"],
                "paired_by_mode": paired, "policy_share": 0.25, "iterations": 2, "iterations_without_update": 1, "env_steps": 1500,
                "ript_s": 4.0, "eval_after_s": 5.0,
                "groups_completed": sum(r["collect/groups_completed"] for r in collect),
                "groups_kept": sum(r["collect/groups_kept"] for r in collect),
                "groups_all_success": sum(r["collect/groups_all_success"] for r in collect),
                "groups_all_failure": sum(r["collect/groups_all_failure"] for r in collect),
                "task_mix": {"total": {}, "per_iteration": [{}, {}, {}]},  # no collect/per_task in HISTORY
                "wall_s": 9.0, "output_dir": "/out", "config": CONFIG}
    assert line == expected
    assert (line["groups_completed"], line["groups_kept"]) == (8, 4)


def test_result_line_rejects_an_unknown_collection_style_and_a_missing_final():
    with pytest.raises(ValueError, match="'summary' or 'groups'"):
        result_line(fields={}, policy="quest", modes=MODES, n_eval=4, baseline=BEFORE, collection="flat",
                    wall_s=0.0, output_dir="/out")
    with pytest.raises(ValueError, match="needs final="):
        result_line(fields={}, policy="quest", modes=MODES, n_eval=4, baseline=BEFORE, trainer=TRAINER,
                    wall_s=0.0, output_dir="/out")


def test_paired_results_on_per_start_counts():
    """Several rollouts per start: the sign-flip test on the counts; mixed rollouts per start are refused."""
    before = {"random": {"counts": [0, 1, 2, 4], "rollouts_per_start": 4},
              "deterministic": {"outcomes": [1, 0, 0, 1], "rollouts_per_start": 1}}
    after = {"random": {"counts": [2, 3, 2, 3], "rollouts_per_start": 4},
             "deterministic": {"outcomes": [1, 1, 0, 1]}}  # no rollouts_per_start: a result from before the option
    out = paired_results(before, after, MODES)
    assert out["p_value_by_mode"]["random"] == paired_count_test([0, 1, 2, 4], [2, 3, 2, 3], rollouts=4)
    assert out["p_value"] == pytest.approx(0.25)
    assert out["p_value_by_mode"]["deterministic"] == paired_success_test([1, 0, 0, 1], [1, 1, 0, 1])
    with pytest.raises(ValueError, match="same eval.rollouts_per_start"):
        paired_results(before, {**after, "random": {"outcomes": [1, 1, 1, 1]}}, MODES)
