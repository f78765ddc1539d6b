"""``benchmarks/start_coverage.py``: never-solved held-out starts against the demos' starts."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest


def test_never_solved_starts_lie_far_from_the_demos(tmp_path, load_benchmark, capsys):
    pytest.importorskip("metaworld")
    from torchrl_ript.envs.metaworld import metaworld_contexts

    held_out = metaworld_contexts(["reach-v3"], 6, seed=1000)
    states = held_out.states.double().numpy()
    # two demos that start exactly at held-out starts 0 and 1
    with h5py.File(tmp_path / "reach-v3_demo.hdf5", "w") as f:
        group = f.create_group("data")
        group.attrs["task_name"] = "reach-v3"
        for i in range(2):
            group.create_dataset(f"demo_{i}/context_state", data=states[i])
            group.create_dataset(f"demo_{i}/states", data=np.zeros((3, 4)))
    distance = np.linalg.norm(states[:, None] - states[None, :2], axis=-1).min(1)
    far = np.argsort(distance)[-2:]  # the two starts farthest from both demos: never solved
    sft = np.full(6, 4)
    sft[far] = 0
    ript = sft.copy()
    ript[[0, 1]] = 8
    result = {"tasks": ["reach-v3"], "config": {"eval": {"per_task": 6, "seed": 1000}},
              "sr_sft_by_mode": {"random": {"counts": sft.tolist(), "rollouts_per_start": 8}},
              "sr_ript_by_mode": {"random": {"counts": ript.tolist(), "rollouts_per_start": 8}}}
    (tmp_path / "result.json").write_text(json.dumps(result))
    summary = load_benchmark("start_coverage").main(["--result", str(tmp_path / "result.json"),
                                                     "--demos", str(tmp_path)])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary
    row = summary["policies"]["sft"]["per_task"]["reach-v3"]
    assert row["never_solved"] == pytest.approx(2 / 6) and row["sr"] == pytest.approx(16 / 48)
    assert row["distance_never"] == pytest.approx(distance[far].mean())
    assert row["distance_never"] > row["distance_others"] and row["corr_count_distance"] < 0
    after = summary["policies"]["ript"]["per_task"]["reach-v3"]
    assert after["always_solved"] == pytest.approx(2 / 6) and after["never_solved"] == row["never_solved"]
    # the 4 starts SFT solved 4 / 8 times: RIPT solves two of them always
    assert row["sft_mixed_starts"] == after["sft_mixed_starts"] == 4
    assert row["sr_on_sft_mixed"] == pytest.approx(0.5) and after["sr_on_sft_mixed"] == pytest.approx(0.75)
    assert after["sr_on_sft_never"] == 0.0 and after["sharpening_ceiling"] == pytest.approx(4 / 6)

    # a RIPT-only run (no SFT evaluation) takes the SFT counts from --sft-result
    ript_only = {**result, "sr_sft_by_mode": {}}
    (tmp_path / "ript_only.json").write_text(json.dumps(ript_only))
    args = ["--result", str(tmp_path / "ript_only.json"), "--demos", str(tmp_path)]
    with pytest.raises(SystemExit, match="--sft-result"):
        load_benchmark("start_coverage").main(args)
    again = load_benchmark("start_coverage").main(args + ["--sft-result", str(tmp_path / "result.json")])
    assert again["policies"]["ript"]["per_task"]["reach-v3"] == after
    other = {**result, "config": {"eval": {"per_task": 6, "seed": 7}}}
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="other held-out starts"):
        load_benchmark("start_coverage").main(args + ["--sft-result", str(tmp_path / "other.json")])


def test_a_result_without_its_config_is_refused(tmp_path, load_benchmark):
    (tmp_path / "result.json").write_text(json.dumps({"tasks": ["reach-v3"]}))
    with pytest.raises(SystemExit, match="holds no config"):
        load_benchmark("start_coverage").main(["--result", str(tmp_path / "result.json"), "--demos", str(tmp_path)])
