"""Where DDP ranks get their rollouts: each rank collects B/G, or rank 0 collects B and scatters.

Runs ``examples/ript_metaworld.py`` three times on the same fixed RIPT
workload (dynamic sampling off, so every step collects exactly B rollouts;
a tiny QueST policy, a few SFT steps, evaluation only at the ends) and
reads the per-step wall time (``time/step_s``: collection + PPO update) from
each run's ``history.json``:

- ``single``: one process, ``ParallelEnv(G)`` (the default set-up);
- ``per_rank``: ``torchrun --nproc_per_node=G``, each rank a GroupCollector
  over one in-process env collecting B/G rollouts (``collector.ddp_collect=per_rank``);
- ``rank0``: ``torchrun --nproc_per_node=G``, rank 0 collects all B with
  ``ParallelEnv(G)`` and scatters the rows (``collector.ddp_collect=rank0``).

Usage::

    python benchmarks/ddp_collect.py              # ~6 min on 2 cores
    python benchmarks/ddp_collect.py --ranks 4

The LAST stdout line is one JSON object (also written to ``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "ript_metaworld.py"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "ddp_collect.json"


def _load():
    return [round(x, 2) for x in os.getloadavg()]


def run(name: str, prefix: list[str], overrides: list[str], folder: Path) -> dict:
    out = folder / name
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    t0 = time.perf_counter()
    proc = subprocess.run([*prefix, str(EXAMPLE), f"hydra.run.dir={out}", *overrides],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=3600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    history = json.loads((out / "checkpoints" / "history.json").read_text())["train"]
    steps = [r["time/step_s"] for r in history[1:]]  # the first step also starts workers
    collect = [r["collect/wall_s"] for r in history[1:]]
    return {
        "step_s": statistics.mean(steps),
        "step_s_all": [r["time/step_s"] for r in history],
        "collect_s": statistics.mean(collect),
        "batch": history[-1]["train/batch"],
        "env_steps_per_step": statistics.mean(r["collect/env_steps"] for r in history),
        "run_wall_s": wall,
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--steps", type=int, default=4, help="RIPT steps per run (the first is not timed)")
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--out", default=str(DEFAULT_OUT))
    args = p.parse_args(argv)
    G = args.ranks
    torchrun = shutil.which("torchrun") or sys.exit("torchrun not found")
    common = [
        "tasks=[reach-v3]", "demos.per_task=1", "env.image_size=64", "env.max_steps=200",
        "policy.kind=quest", "policy.preset=tiny", "sft.steps=3", "sft.autoencoder_steps=3",
        "stages.eval_sft=false", "eval.per_task=1", "eval.num_envs=1", "eval.during_training_per_task=1", "eval.videos=0",
        f"ript.num_steps={args.steps}", f"ript.group_size={args.k}", f"ript.trajs_per_batch={args.batch}",
        "ript.ppo_epochs=2", f"ript.minibatch_size={2 * G}", "ript.dynamic_sampling=false",
        f"ript.eval_every={10 * args.steps}", "progress=false", "logger.kind=none",
    ]
    load_start = _load()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        results["single"] = run("single", [sys.executable], [*common, f"env.num_envs={G}"], folder)
        results["per_rank"] = run("per_rank", [torchrun, "--standalone", f"--nproc_per_node={G}"],
                                  [*common, "env.num_envs=1", "collector.ddp_collect=per_rank"], folder)
        results["rank0"] = run("rank0", [torchrun, "--standalone", f"--nproc_per_node={G}"],
                               [*common, f"env.num_envs={G}", "collector.ddp_collect=rank0"], folder)
    load_end = _load()
    summary = {
        "benchmark": "ddp_collect",
        "config": vars(args),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_start": load_start, "load_end": load_end},
        "runs": results,
        "ratios": {
            "single_vs_per_rank_step_s": results["single"]["step_s"] / results["per_rank"]["step_s"],
            "rank0_vs_per_rank_step_s": results["rank0"]["step_s"] / results["per_rank"]["step_s"],
        },
    }
    for name, r in results.items():
        print(f"{name:<10} step {r['step_s']:.2f} s (collect {r['collect_s']:.2f} s), batch {r['batch']}, "
              f"{r['env_steps_per_step']:.0f} env steps/step, run {r['run_wall_s']:.0f} s")
    print(f"load {load_start} -> {load_end}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
