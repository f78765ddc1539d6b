"""Which held-out starts does a policy never solve? Their distance to the demonstrations' starts.

    python benchmarks/start_coverage.py --result <run>/result.json --demos <run>/demos
    python benchmarks/start_coverage.py --result <ript-only run>/result.json --demos <run>/demos \
        --sft-result <run>/result.json      # a run from <run>'s SFT policy with stages.eval_sft=false

For a MetaWorld run scored with several rollouts per held-out start
(``eval.rollouts_per_start`` > 1, e.g. the main job), rebuilds the held-out
starts the example evaluated (``metaworld_contexts(tasks, eval.per_task,
seed=eval.seed)``), reads the starts of the demonstrations SFT was trained on
(``--demos``: the run's ``demos/`` folder or its ``.hdf5`` files), and prints
per task and per policy (``sft``, ``ript``): the share of starts never solved
in the R sampled rollouts, the mean distance from a start to the nearest demo
start of its task (in the task's start encoding, its ``rand_vec``: object /
goal positions in metres) for never-solved starts and for the others, and the
Pearson correlation of a start's success count with that distance. On the
starts the SFT policy solved sometimes but not always ("mixed"), each
policy's success rate: whether RIPT sharpens a task where it can (a task
whose mixed starts do not rise is not being learned, whatever its
never-solved share); and the sharpening ceiling, the task's success rate if
every start SFT solved at least once were always solved.

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


def coverage(counts: np.ndarray, distance: np.ndarray, rollouts: int, sft_counts: np.ndarray,
             sft_rollouts: int) -> dict:
    """One task's starts: never-solved share, mean distances, count-distance correlation, and the
    success rate on the starts the SFT policy (``sft_counts`` of ``sft_rollouts``) solved sometimes / never."""
    never = counts == 0
    corr = float(np.corrcoef(counts, distance)[0, 1]) if counts.std() > 0 and distance.std() > 0 else float("nan")
    sft_mixed, sft_never = (sft_counts > 0) & (sft_counts < sft_rollouts), sft_counts == 0
    return {"starts": int(len(counts)), "sr": float(counts.mean() / rollouts), "never_solved": float(never.mean()),
            "always_solved": float((counts == rollouts).mean()),
            "distance_never": float(distance[never].mean()) if never.any() else None,
            "distance_others": float(distance[~never].mean()) if (~never).any() else None,
            "corr_count_distance": corr,
            "sft_mixed_starts": int(sft_mixed.sum()),
            "sr_on_sft_mixed": float(counts[sft_mixed].mean() / rollouts) if sft_mixed.any() else None,
            "sr_on_sft_never": float(counts[sft_never].mean() / rollouts) if sft_never.any() else None,
            "sharpening_ceiling": float((sft_counts > 0).mean())}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--result", required=True, help="a MetaWorld example's result.json (or its JSON line saved)")
    parser.add_argument("--demos", required=True, help="the run's demos folder, or its .hdf5 files", nargs="+")
    parser.add_argument("--sft-result", default=None,
                        help="take the SFT policy's counts from this result.json (a RIPT-only run, stages.eval_sft="
                             "false, scored against the SFT evaluation of the run whose SFT policy it started from)")
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
    sft_source = json.loads(Path(args.sft_result).read_text()) if args.sft_result else result
    held = [(r.get("tasks"), {k: (r.get("config") or {}).get("eval", {}).get(k) for k in ("per_task", "seed")})
            for r in (result, sft_source)]
    if held[0] != held[1]:
        raise SystemExit(f"--sft-result {args.sft_result} evaluated other held-out starts ({held[1]}) than "
                         f"{args.result} ({held[0]}): pass the run whose SFT policy the RIPT run started from.")
    scored = {policy: scores for policy, source in (("sft", sft_source), ("ript", result))
              if "counts" in (scores := (source.get(f"sr_{policy}_by_mode") or {}).get("random") or {})}
    if "sft" not in scored:
        raise SystemExit(f"{args.sft_result or args.result} has no sampled-policy counts of the SFT policy "
                         "(sr_sft_by_mode 'random'; a RIPT-only run with stages.eval_sft=false has none): pass "
                         "--sft-result <the result.json of the run whose SFT policy it started from>.")
    sft_counts, sft_rollouts = np.asarray(scored["sft"]["counts"]), int(scored["sft"].get("rollouts_per_start", 1))
    for policy, scores in scored.items():
        rollouts = int(scores.get("rollouts_per_start", 1))
        counts = np.asarray(scores["counts"])
        per_task = {}
        for task_id, name in enumerate(held_out.task_names):
            mine = tasks == task_id
            per_task[name] = row = coverage(counts[mine], distance[mine], rollouts, sft_counts[mine], sft_rollouts)
            mixed = "n/a" if row["sr_on_sft_mixed"] is None else f"{row['sr_on_sft_mixed']:.3f}"
            print(f"{policy:4s} {name:28s} sr {row['sr']:.3f}  never solved in {rollouts}: {row['never_solved']:.0%}  "
                  f"distance to the nearest demo start: never-solved {row['distance_never'] or float('nan'):.3f} m, "
                  f"others {row['distance_others'] or float('nan'):.3f} m; corr(count, distance) "
                  f"{row['corr_count_distance']:+.2f}; sr on SFT's {row['sft_mixed_starts']} mixed starts {mixed} "
                  f"(ceiling {row['sharpening_ceiling']:.3f})")
        summary["policies"][policy] = {"rollouts_per_start": rollouts, "per_task": per_task}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
