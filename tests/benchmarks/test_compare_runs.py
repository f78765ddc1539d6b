"""``benchmarks/compare_runs.py``: paired comparison of two variants over seeds."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from torchrl_ript.trainers import paired_count_test

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "compare_runs.py"


@pytest.fixture(scope="module")
def compare(load_benchmark):
    return load_benchmark("compare_runs").main


def write_result(path: Path, seed: int, sft: list[int], ript: list[int]) -> str:
    result = {
        "config": {"ript": {"seed": seed}},
        "sr_sft_by_mode": {"random": {"outcomes": [bool(x) for x in sft]}},
        "sr_ript_by_mode": {"random": {"outcomes": [bool(x) for x in ript]}},
    }
    path.write_text(json.dumps(result))
    return str(path)


def test_pooled_pairs_and_per_seed_rows(tmp_path, compare, capsys):
    sft = [0, 0, 0, 0, 1, 1]
    b0 = write_result(tmp_path / "b0.json", 0, sft, [1, 0, 0, 0, 1, 1])
    c0 = write_result(tmp_path / "c0.json", 0, sft, [1, 1, 1, 0, 1, 1])
    b1 = write_result(tmp_path / "b1.json", 1, sft, [0, 0, 0, 0, 1, 0])
    c1 = write_result(tmp_path / "c1.json", 1, sft, [1, 1, 0, 0, 1, 1])
    summary = compare(["--baseline", b0, b1, "--candidate", c0, c1])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary
    rows = {r["seed"]: r for r in summary["rows"]}
    assert set(rows) == {"0", "1", "pooled"}
    assert (rows["0"]["candidate_vs_baseline"]["gained"], rows["0"]["candidate_vs_baseline"]["lost"]) == (2, 0)
    assert rows["1"]["baseline_vs_sft"]["lost"] == 1
    pooled = rows["pooled"]
    assert pooled["n"] == 12
    # the pooled discordant starts are the sum over seeds: 2 + 3 gained, 0 lost
    assert (pooled["candidate_vs_baseline"]["gained"], pooled["candidate_vs_baseline"]["lost"]) == (5, 0)
    assert pooled["candidate_vs_baseline"]["p_value"] == pytest.approx(1 / 32)


def test_refuses_mismatched_inputs(tmp_path, compare):
    a = write_result(tmp_path / "a.json", 0, [0, 1], [1, 1])
    b = write_result(tmp_path / "b.json", 0, [0, 1, 1], [1, 1, 1])
    with pytest.raises(SystemExit, match="eval.per_task"):
        compare(["--baseline", a, "--candidate", b])
    with pytest.raises(SystemExit, match="one candidate result per baseline"):
        compare(["--baseline", a, a, "--candidate", a])
    with pytest.raises(SystemExit, match="--mode"):
        compare(["--baseline", a, "--candidate", a, "--mode", "deterministic"])


def write_counts(path: Path, seed: int, sft: list[int], ript: list[int], rollouts: int) -> str:
    """A result scored with ``eval.rollouts_per_start=rollouts`` (per-start success counts)."""
    def score(counts):
        outcomes = [r < c for c in counts for r in range(rollouts)]
        return {"outcomes": outcomes, "counts": counts, "rollouts_per_start": rollouts}

    path.write_text(json.dumps({"config": {"ript": {"seed": seed}}, "sr_sft_by_mode": {"random": score(sft)},
                                "sr_ript_by_mode": {"random": score(ript)}}))
    return str(path)


def test_several_rollouts_per_start_are_compared_on_counts(tmp_path, compare, capsys):
    sft = [0, 1, 2, 4]
    b0 = write_counts(tmp_path / "b0.json", 0, sft, [0, 2, 2, 4], rollouts=4)
    c0 = write_counts(tmp_path / "c0.json", 0, sft, [2, 3, 2, 3], rollouts=4)
    b1 = write_counts(tmp_path / "b1.json", 1, sft, [1, 1, 2, 4], rollouts=4)
    c1 = write_counts(tmp_path / "c1.json", 1, sft, [1, 4, 3, 4], rollouts=4)
    summary = compare(["--baseline", b0, b1, "--candidate", c0, c1])
    assert "4 rollouts per start" in capsys.readouterr().out
    rows = {r["seed"]: r for r in summary["rows"]}
    assert rows["0"]["candidate_vs_sft"] == paired_count_test(sft, [2, 3, 2, 3], rollouts=4)
    pooled = rows["pooled"]
    assert (pooled["n"], pooled["rollouts_per_start"]) == (8, 4)
    assert pooled["candidate_vs_baseline"] == paired_count_test([0, 2, 2, 4, 1, 1, 2, 4], [2, 3, 2, 3, 1, 4, 3, 4],
                                                                rollouts=4)
    one = write_result(tmp_path / "one.json", 1, [0, 1, 1, 1], [1, 1, 1, 1])
    with pytest.raises(SystemExit, match="eval.rollouts_per_start"):
        compare(["--baseline", b0, "--candidate", one])
    with pytest.raises(SystemExit, match="same eval.rollouts_per_start"):
        compare(["--baseline", b0, one, "--candidate", c0, one])


def test_a_candidate_without_sft_evaluation_uses_the_baselines(tmp_path, compare, capsys):
    """A RIPT-only candidate run with stages.eval_sft=false (no SFT scores) is paired with the baseline's SFT."""
    base = write_counts(tmp_path / "b.json", 0, [0, 1, 2, 4], [0, 2, 2, 4], rollouts=4)
    cand = json.loads(Path(write_counts(tmp_path / "c.json", 0, [0, 0, 0, 0], [2, 3, 2, 3], rollouts=4)).read_text())
    cand["sr_sft_by_mode"] = None
    (tmp_path / "c.json").write_text(json.dumps(cand))
    summary = compare(["--baseline", base, "--candidate", str(tmp_path / "c.json")])
    assert "evaluated no SFT policy" in capsys.readouterr().out
    row = summary["rows"][0]
    assert row["candidate_vs_sft"] == paired_count_test([0, 1, 2, 4], [2, 3, 2, 3], rollouts=4)
    assert row["sft_agreement"] == 1.0
