"""The collector benchmark's figures are consistent with what each path ran.

One ``--quick`` run (MetaWorld, 32 px, short rollouts, one round) is shared
by the tests below; each checks something a wrong benchmark would break:
ratios computed from other numbers than the ones reported, decisions counted
as env steps (or rollouts counted twice), a path that silently ran another
workload, a missing load average.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STOCK = ("collector", "collector_libero_env", "async_batched", "async_batched_driver")


# the benchmark runs ~1 min: with the long tests (bash scripts/test.sh -m slow)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("collector_throughput") / "ct.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "collector_throughput.py"), "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=420, env=env, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    return last, json.loads(out.read_text())


def test_reports_the_headline_keys(quick):
    last, saved = quick
    for key in ("env_steps_per_s", "group_vs_limit", "group_vs_stock", "group_vs_async_batched", "env",
                "load_avg", "paths", "group_time_breakdown", "bytes_per_rollout", "peak_rss_mb"):
        assert key in last, key
    assert last["env"] == "metaworld"
    assert saved == last  # --out holds the same object as the last stdout line
    expected = {"limit", "collector", "async_batched", "sequential", "group", "group_lockstep", "group_keep",
                "group_slots_x2_keep"}
    assert expected <= set(last["paths"])


def test_ratios_are_those_of_the_reported_paths(quick):
    last, _ = quick
    paths = last["paths"]
    rate = {name: p["decisions_per_s"] for name, p in paths.items()}
    stock = {name: rate[name] for name in STOCK if name in paths}
    assert {"collector", "async_batched"} <= set(stock)
    assert last["best_stock_path"] == max(stock, key=stock.get)
    assert last["group_vs_stock"] == pytest.approx(rate["group"] / max(stock.values()), rel=1e-9)
    assert last["group_vs_limit"] == pytest.approx(rate["group"] / rate["limit"], rel=1e-9)
    assert last["group_vs_async_batched"] == pytest.approx(rate["group"] / rate["async_batched"], rel=1e-9)
    assert last["group_vs_sequential"] == pytest.approx(rate["group"] / rate["sequential"], rel=1e-9)
    assert last["env_steps_per_s"] == pytest.approx(paths["group"]["env_steps_per_s"], rel=1e-9)
    # one round: each round's ratio is the headline ratio
    (round_ratios,) = last["round_ratios"]
    assert round_ratios["group_vs_stock"] == pytest.approx(last["group_vs_stock"], rel=1e-9)


def test_counts_match_rollouts_times_horizon(quick):
    last, _ = quick
    cfg = last["config"]
    horizon, chunk = cfg["horizon"], cfg["chunk"]
    for name, p in last["paths"].items():
        assert p["decisions"] > 0 and p["wall_s"] > 0, name
        if name == "limit":  # counted in the simulator processes: whole rollouts only
            assert p["counted_decisions"] == p["counted_rollouts"] * horizon
            continue
        assert p["decisions_per_s"] == pytest.approx(p["decisions"] / p["wall_s"], rel=1e-6), name
        # env steps as the env counted them (MetaWorldEnv's env_steps output), not decisions x chunk
        assert p["env_steps"] == p["decisions"] * chunk, name
        if p["successes"]:
            continue  # a success ends a rollout early (a random policy essentially never succeeds)
        if name.startswith("group") or name == "sequential":
            # whole trajectories only: a delivered rollout has exactly `horizon` decisions
            assert p["decisions"] == p["rollouts"] * horizon, name
        else:
            # stock collectors cut batches mid-rollout: at most one partial rollout per env
            assert abs(p["decisions"] - p["rollouts"] * horizon) <= p["slots"] * horizon, name
    group = last["paths"]["group"]
    assert group["rollouts"] == group["batches"] * group["trajs_per_batch"]
    # GroupCollector's simulated work is at least what it delivered
    assert group["simulated_decisions"] >= group["decisions"]
    keep = last["paths"]["group_keep"]
    assert keep["rollouts_discarded"] == 0 and keep["keep_in_flight"] and not group["keep_in_flight"]


def test_every_path_ran_the_same_workload(quick):
    last, _ = quick
    cfg = last["config"]
    expected = dict(env="metaworld", task=cfg["task"],
                    images={"observation/image": [3, cfg["image_size"], cfg["image_size"]]},
                    action_shape=[cfg["chunk"], 4], state_dim=4, horizon=cfg["horizon"],
                    policy_params=cfg["policy_params"])
    for name, p in last["paths"].items():
        assert p["workload"] == expected, name
    slots = {name: p["slots"] for name, p in last["paths"].items()}
    assert slots["group_slots_x2_keep"] == 2 * slots["group"] == 2 * slots["collector"]
    assert slots["sequential"] == cfg["k"]


def test_load_average_recorded(quick):
    last, _ = quick
    assert set(last["load_avg"]) == {"start", "end"}
    assert all(math.isfinite(v) and v >= 0 for v in last["load_avg"].values())
    for name, p in last["paths"].items():
        assert len(p["load_avg"]) == 2 and all(v >= 0 for v in p["load_avg"]), name
