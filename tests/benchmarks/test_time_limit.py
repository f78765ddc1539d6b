"""``benchmarks/time_limit.py``: success rate and step cost under shorter time limits, from one evaluation."""
from __future__ import annotations

import json

import pytest


def test_shorter_limits_read_off_one_evaluation(tmp_path, load_benchmark, capsys):
    # 2 tasks x 2 starts x 2 rollouts, start-major; failures ran to the 500-step limit
    steps = [80, 500, 120, 260, 500, 500, 90, 100]
    outcomes = [True, False, True, True, False, False, True, True]
    scores = {"outcomes": outcomes, "rollout_env_steps": steps, "rollouts_per_start": 2,
              "per_task": {"a": 0.75, "b": 0.5}}
    result = {"tasks": ["a", "b"], "config": {"env": {"max_steps": 500}, "eval": {"per_task": 2}},
              "sr_sft_by_mode": {"random": scores}}
    path = tmp_path / "result.json"
    path.write_text(json.dumps(result))
    summary = load_benchmark("time_limit").main(["--result", str(path), "--limits", "100", "200", "900"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary
    assert summary["limits"] == [100, 200, 500]  # 900 is above the run's limit: dropped
    rows = summary["policies"]["sft/random"]["by_limit"]
    assert rows["all"]["500"] == {"sr": 5 / 8, "successes_kept": 1.0, "env_steps_ratio": 1.0}
    assert rows["all"]["200"]["sr"] == 4 / 8 and rows["all"]["200"]["successes_kept"] == 4 / 5  # the 260-step success
    assert rows["all"]["100"]["sr"] == 3 / 8
    assert rows["all"]["200"]["env_steps_ratio"] == pytest.approx(
        (80 + 200 + 120 + 200 + 200 + 200 + 90 + 100) / sum(steps))
    assert rows["a"]["200"]["sr"] == 2 / 4 and rows["b"]["200"]["sr"] == 2 / 4
    assert summary["policies"]["sft/random"]["success_steps"]["a"]["max"] == 260

    # results written before evaluations recorded the steps are refused with the fix named
    del scores["rollout_env_steps"]
    path.write_text(json.dumps(result))
    with pytest.raises(SystemExit, match="evaluate the policy again"):
        load_benchmark("time_limit").main(["--result", str(path)])


def test_libero_results_use_the_suites_limit(tmp_path, load_benchmark):
    """``ript_libero.py`` results: ``env.max_steps`` null is the suite's limit, the SFT scores are "before"."""
    scores = {"outcomes": [True, False], "rollout_env_steps": [150, 280], "per_task": {"a": 0.5}}
    result = {"suite": "libero_object", "tasks": ["a"], "config": {"env": {"max_steps": None}, "eval": {"per_task": 2}},
              "sr_before_by_mode": {"deterministic": scores}}
    path = tmp_path / "result.json"
    path.write_text(json.dumps(result))
    summary = load_benchmark("time_limit").main(["--result", str(path), "--limits", "100", "200"])
    assert summary["run_limit"] == 280 and summary["limits"] == [100, 200, 280]
    rows = summary["policies"]["sft/deterministic"]["by_limit"]["all"]
    assert rows["200"]["sr"] == 0.5 and rows["100"]["sr"] == 0.0
    assert rows["200"]["env_steps_ratio"] == pytest.approx(350 / 430)
