"""The collector benchmark's figures are consistent with what each path ran.

One ``--quick`` run (MetaWorld, 32 px, short rollouts, one round, 2 and 4
slots on 2 cores) is shared by the tests below; each checks something a
wrong benchmark would break: ratios computed from other numbers than the
ones reported, a bound that is not its stored components' formula, a "best"
slot count that is not the best of the recorded sweep or a slot count
missing from it, decisions counted as env steps (or rollouts counted twice),
a path that silently ran another workload, a missing load average. None of
them asserts a speed: speed targets live in the benchmark's README.
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
GROUP = ("group", "group_lockstep", "group_keep")
SWEPT = (*STOCK, *GROUP)


# the benchmark runs ~2 min: with the long tests (bash scripts/test.sh -m slow)
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


def records(last):
    """Every measured record: (path, record), each swept path once per slot count."""
    for name, p in last["paths"].items():
        if "by_slots" in p:
            yield from ((name, r) for r in p["by_slots"].values())
        else:
            yield name, p


def test_reports_the_headline_keys(quick):
    last, saved = quick
    for key in ("env_steps_per_s", "group_vs_bound", "group_vs_limit", "group_vs_stock", "group_vs_async_batched",
                "env", "load_avg", "bound", "best_group_path", "best_stock_path", "best_slots", "paths",
                "group_time_breakdown", "cpu_accounting", "bytes_per_rollout", "peak_rss_mb"):
        assert key in last, key
    assert last["env"] == "metaworld"
    assert saved == last  # --out holds the same object as the last stdout line
    expected = {"limit", "collector", "async_batched", "sequential", "group", "group_lockstep", "group_keep"}
    assert expected <= set(last["paths"])


def test_ratios_are_those_of_the_reported_paths(quick):
    last, _ = quick
    paths = last["paths"]
    # a path's rate is that of its best slot count
    rate = {name: p["decisions_per_s"] for name, p in paths.items()}
    stock = {name: rate[name] for name in STOCK if name in paths}
    group = {name: rate[name] for name in GROUP}
    assert {"collector", "async_batched"} <= set(stock)
    assert last["best_stock_path"] == max(stock, key=stock.get)
    assert last["best_group_path"] == max(group, key=group.get)
    g = max(group.values())
    bound = last["bound"]["bound_decisions_per_s"]
    assert last["group_vs_bound"] == pytest.approx(g / bound, rel=1e-9)
    assert last["group_vs_stock"] == pytest.approx(g / max(stock.values()), rel=1e-9)
    assert last["group_vs_limit"] == pytest.approx(g / rate["limit"], rel=1e-9)
    assert last["group_vs_async_batched"] == pytest.approx(g / rate["async_batched"], rel=1e-9)
    assert last["group_vs_sequential"] == pytest.approx(g / rate["sequential"], rel=1e-9)
    assert last["stock_vs_bound"] == pytest.approx(max(stock.values()) / bound, rel=1e-9)
    assert last["decisions_per_s"] == pytest.approx(g, rel=1e-9)
    assert last["env_steps_per_s"] == pytest.approx(paths[last["best_group_path"]]["env_steps_per_s"], rel=1e-9)
    # one round: each round's ratio is the headline ratio (the round's best against the round's best)
    (round_ratios,) = last["round_ratios"]
    for key in ("group_vs_bound", "group_vs_stock", "group_vs_limit", "group_vs_async_batched"):
        assert round_ratios[key] == pytest.approx(last[key], rel=1e-9), key


def test_bound_is_its_stored_components(quick):
    last, _ = quick
    b, cfg = last["bound"], last["config"]
    assert b["cores"] == last["machine"]["cores"] >= 1
    # the simulator's CPU per decision is the limit path's
    assert b["sim_cpu_ms_per_decision"] == pytest.approx(last["paths"]["limit"]["cpu_ms_per_decision"], rel=1e-9)
    # the policy was timed at every batch size a path can form: 1 .. the largest slot count, and K
    by_batch = b["policy_cpu_ms_per_decision_by_batch"]
    assert set(by_batch) == {str(n) for n in range(1, max(cfg["slot_counts"]) + 1)} | {str(cfg["k"])}
    for size, row in b["policy_by_batch"].items():
        assert row["batch"] == int(size) and row["calls"] >= 5
        assert row["cpu_ms_per_decision"] == pytest.approx(row["cpu_ms_per_call"] / row["batch"], rel=1e-9)
        assert by_batch[size] == row["cpu_ms_per_decision"] > 0
    # the cheapest batch size's
    assert b["policy_cpu_ms_per_decision"] == min(by_batch.values()) == by_batch[str(b["policy_batch"])]
    expected = b["cores"] * 1000 / (b["sim_cpu_ms_per_decision"] + b["policy_cpu_ms_per_decision"])
    assert b["bound_decisions_per_s"] == pytest.approx(expected, rel=1e-12)


def test_every_swept_path_at_every_slot_count(quick):
    last, _ = quick
    counts = last["config"]["slot_counts"]
    assert len(counts) >= 2  # --quick still sweeps
    assert counts[0] == last["config"]["slots"] == last["paths"]["limit"]["slots"]
    swept = [name for name in last["paths"] if name in SWEPT]
    assert set(swept) >= {"collector", "async_batched", *GROUP}
    assert set(last["best_slots"]) == set(swept)
    for name in swept:
        p = last["paths"][name]
        by = p["by_slots"]
        assert set(by) == {str(n) for n in counts}, name
        for n, r in by.items():
            assert r["slots"] == int(n) and r["path"] == name, name
        # the best slot count is the argmax of the recorded sweep (ties: fewer slots)
        best = max(counts, key=lambda n: by[str(n)]["decisions_per_s"])
        assert p["best_slots"] == best == last["best_slots"][name] == p["slots"], name
        assert p["decisions_per_s"] == by[str(best)]["decisions_per_s"], name
    # unswept paths: the limit at --slots, the sequential loop at K
    for name in ("limit", "sequential"):
        assert "by_slots" not in last["paths"][name] and "best_slots" not in last["paths"][name]


def test_cpu_accounting_adds_up(quick):
    last, _ = quick
    cores = last["bound"]["cores"]
    policy = last["bound"]["policy_by_batch"]
    sim = last["bound"]["sim_cpu_ms_per_decision"]
    for name, acc in last["cpu_accounting"].items():
        p = last["paths"][name]
        d, cpu = p["decisions"], p["cpu"]
        assert acc["slots"] == p["slots"], name
        assert acc["core_ms"] == pytest.approx(1e3 * cores * cpu["wall_s"] / d, rel=1e-9), name
        assert acc["core_ms"] == pytest.approx(acc["idle_ms"] + acc["cpu_ms"], rel=1e-9), name
        assert acc["cpu_ms"] == pytest.approx(acc["main_cpu_ms"] + acc["children_cpu_ms"], rel=1e-9), name
        assert acc["cpu_ms"] == pytest.approx(1e3 * (cpu["main_cpu_s"] + cpu["children_cpu_s"]) / d, rel=1e-9)
        assert acc["sim_ms"] == sim
        calls = p.get("policy_calls")
        if name == "async_batched":  # the policy runs in TorchRL's inference process: not counted
            assert calls is None and acc["policy_ms"] is None and acc["collection_ms"] is None
            continue
        # the call counter saw every decision: one row per env slot stepped
        stepped = sum(int(b) * n for b, n in calls.items())
        if name.startswith("group"):
            assert stepped == p["simulated_decisions"], name
        elif name == "sequential":
            assert stepped >= p["decisions"], name  # K rows per step, done envs included
        else:
            assert stepped == p["decisions"], name
        assert acc["policy_ms"] == pytest.approx(
            sum(n * policy[b]["cpu_ms_per_call"] for b, n in calls.items()) / d, rel=1e-9), name
        parts = acc["idle_ms"] + acc["sim_ms"] + acc["wasted_sim_ms"] + acc["policy_ms"] + acc["collection_ms"]
        assert acc["core_ms"] == pytest.approx(parts, rel=1e-9), name


def test_counts_match_rollouts_times_horizon(quick):
    last, _ = quick
    cfg = last["config"]
    horizon, chunk = cfg["horizon"], cfg["chunk"]
    for name, p in records(last):
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
    for name, group in records(last):
        if not name.startswith("group"):
            continue
        assert group["rollouts"] == group["batches"] * group["trajs_per_batch"], name
        # GroupCollector's simulated work is at least what it delivered
        assert group["simulated_decisions"] >= group["decisions"], name
        assert group["keep_in_flight"] == (name == "group_keep") and group["lockstep"] == (name == "group_lockstep")
        if name == "group_keep":
            assert group["rollouts_discarded"] == 0


def test_every_path_ran_the_same_workload(quick):
    last, _ = quick
    cfg = last["config"]
    expected = dict(env="metaworld", task=cfg["task"],
                    images={"observation/image": [3, cfg["image_size"], cfg["image_size"]]},
                    action_shape=[cfg["chunk"], 4], state_dim=4, horizon=cfg["horizon"],
                    policy_params=cfg["policy_params"])
    for name, p in records(last):
        assert p["workload"] == expected, name
    assert last["paths"]["sequential"]["slots"] == cfg["k"]


def test_load_average_recorded(quick):
    last, _ = quick
    assert set(last["load_avg"]) == {"start", "end"}
    assert all(math.isfinite(v) and v >= 0 for v in last["load_avg"].values())
    for name, p in records(last):
        assert len(p["load_avg"]) == 2 and all(v >= 0 for v in p["load_avg"]), name
        assert p["cpu"]["steal_s"] >= 0, name  # the host's share of the window (0 where not reported)
    assert last["steal"]["s"] >= 0 and 0 <= last["steal"]["fraction"] <= 1
