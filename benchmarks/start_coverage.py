"""Which held-out starts does a policy never solve? Their distance to the demonstrations' starts.

    python benchmarks/start_coverage.py --result <run>/result.json --demos <run>/demos

For a MetaWorld run scored with several rollouts per held-out start
(``eval.rollouts_per_start`` > 1, e.g. the main job), rebuilds the held-out
starts the example evaluated (``metaworld_contexts(tasks, eval.per_task,
seed=eval.seed)``), reads the starts of the demonstrations SFT was trained on
(``--demos``: the run's ``demos/`` folder or its ``.hdf5`` files), and prints
per task and per policy (``sft``, ``ript``): the share of starts never solved
in the R sampled rollouts, the mean distance from a start to the nearest demo
start of its task (in the task's start encoding, its ``rand_vec``: object /
goal positions in metres) for never-solved starts and for the others, and the
Pearson correlation of a start's success count with that distance.

RIPT learns only from groups that mix success and failure: a start the
policy never solves gives it nothing, so the never-solved share bounds what
sharpening alone can gain (README, "The default main job"). This script shows
where those starts lie. The LAST stdout line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def nearest_demo_distance(held_out, demos) -> np.ndarray:
    """Per held-out start, the distance to the nearest demo start of the same task (``inf`` if none)."""
    states, tasks = held_out.states.double().numpy(), held_out.task_ids.numpy()
    demo_states, demo_tasks = demos.states.double().numpy(), demos.task_ids.numpy()
    out = np.full(len(states), np.inf)
    for task in np.unique(tasks):
        mine, theirs = tasks == task, demo_states[demo_tasks == task]
        if len(theirs):
            out[mine] = np.linalg.norm(states[mine, None, :] - theirs[None], axis=-1).min(1)
    return out


def coverage(counts: np.ndarray, distance: np.ndarray, rollouts: int) -> dict:
    """Never-solved share, mean distances and the count-distance correlation of one task's starts."""
    never = counts == 0
    corr = float(np.corrcoef(counts, distance)[0, 1]) if counts.std() > 0 and distance.std() > 0 else float("nan")
    return {"starts": int(len(counts)), "sr": float(counts.mean() / rollouts), "never_solved": float(never.mean()),
            "always_solved": float((counts == rollouts).mean()),
            "distance_never": float(distance[never].mean()) if never.any() else None,
            "distance_others": float(distance[~never].mean()) if (~never).any() else None,
            "corr_count_distance": corr}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--result", required=True, help="a MetaWorld example's result.json (or its JSON line saved)")
    parser.add_argument("--demos", required=True, help="the run's demos folder, or its .hdf5 files", nargs="+")
    args = parser.parse_args(argv)

    from torchrl_ript import ContextDataset
    from torchrl_ript.envs.metaworld import metaworld_contexts

    result = json.loads(Path(args.result).read_text())
    cfg = result.get("config") or {}
    if "eval" not in cfg:
        raise SystemExit(f"{args.result} holds no config: pass a MetaWorld example's result.json.")
    files = [p for d in args.demos for p in (sorted(Path(d).glob("*.hdf5")) if Path(d).is_dir() else [Path(d)])]
    if not files:
        raise SystemExit(f"no .hdf5 demo files in {args.demos}: pass the run's demos/ folder.")
    held_out = metaworld_contexts(list(result["tasks"]), cfg["eval"]["per_task"], seed=cfg["eval"]["seed"])
    demos = ContextDataset.from_demonstrations([str(f) for f in files])
    if demos.task_names != held_out.task_names:
        raise SystemExit(f"the demos hold tasks {demos.task_names}, the run {held_out.task_names}.")
    distance = nearest_demo_distance(held_out, demos)
    tasks = held_out.task_ids.numpy()
    summary = {"result": str(args.result), "demos": [str(f) for f in files], "policies": {}}
    for policy in ("sft", "ript"):
        scores = (result.get(f"sr_{policy}_by_mode") or {}).get("random")
        if not scores or "counts" not in scores:
            continue
        rollouts = int(scores.get("rollouts_per_start", 1))
        counts = np.asarray(scores["counts"])
        per_task = {}
        for task_id, name in enumerate(held_out.task_names):
            mine = tasks == task_id
            per_task[name] = row = coverage(counts[mine], distance[mine], rollouts)
            print(f"{policy:4s} {name:28s} sr {row['sr']:.3f}  never solved in {rollouts}: {row['never_solved']:.0%}  "
                  f"distance to the nearest demo start: never-solved {row['distance_never'] or float('nan'):.3f} m, "
                  f"others {row['distance_others'] or float('nan'):.3f} m; corr(count, distance) "
                  f"{row['corr_count_distance']:+.2f}")
        summary["policies"][policy] = {"rollouts_per_start": rollouts, "per_task": per_task}
    if not summary["policies"]:
        raise SystemExit(f"{args.result} has no sampled-policy counts (sr_sft_by_mode / sr_ript_by_mode 'random').")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
