"""What a shorter time limit would keep and save, read from one evaluation.

    python benchmarks/time_limit.py --result <run>/result.json
    python benchmarks/time_limit.py --result <run>/result.json --limits 150 200 250 300

A rollout that succeeds after ``s`` simulator steps under a time limit ``T``
succeeds identically under any limit ``L >= s`` (the same start and draws up
to step ``s``), and fails under ``L < s``. So one evaluation at the run's
limit gives, for every shorter limit ``L``, the success rate the same policy
would score (successes within ``L`` steps) and the simulator steps it would
spend (each rollout's ``min(steps, L)``). Failures run to the time limit, so
on a task a policy often fails the limit sets most of the cost of both RIPT's
collection and the evaluations.

Reads the per-rollout ``rollout_env_steps`` that evaluations record, from a
MetaWorld or LIBERO example's result (a LIBERO run with ``env.max_steps``
null ran to its suite's official limit). Results written before evaluations
recorded the steps are refused: evaluate the policy again with the current
code, e.g. ``stages.ript=false policy.checkpoint=<run>/sft_policy.pt``. For each
policy (``sft``, ``ript``) and evaluation mode, and each limit: the success
rate per task and in all, the share of the run's successes kept, and the
steps spent relative to the run's own limit; then each task's success length
quantiles. The LAST stdout line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from torchrl_ript.envs import LIBERO_MAX_STEPS

# where each example's result keeps its evaluations (ript_libero.py names the SFT one "before")
EVALUATIONS = {"sft": ("sr_sft_by_mode", "sr_before_by_mode"), "ript": ("sr_ript_by_mode",)}


def at_limits(steps: np.ndarray, success: np.ndarray, limits: list[int]) -> dict:
    """Success rate, kept share of successes and relative step cost of ``steps``/``success`` under each limit."""
    spent = steps.sum()
    out = {}
    for limit in limits:
        kept = success & (steps <= limit)
        out[str(limit)] = {"sr": float(kept.mean()),
                           "successes_kept": float(kept.sum() / success.sum()) if success.any() else None,
                           "env_steps_ratio": float(np.minimum(steps, limit).sum() / spent) if spent else None}
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--result", required=True, help="a MetaWorld/LIBERO example's result.json")
    parser.add_argument("--limits", type=int, nargs="+", default=[100, 150, 200, 250, 300, 400],
                        help="time limits to read off (simulator steps); those above the run's own are dropped")
    args = parser.parse_args(argv)

    result = json.loads(Path(args.result).read_text())
    cfg = result.get("config") or {}
    # LIBERO's env.max_steps null is the suite's official limit
    run_limit = (cfg.get("env") or {}).get("max_steps") or LIBERO_MAX_STEPS.get(result.get("suite"))
    per_task = (cfg.get("eval") or {}).get("per_task")
    if not run_limit or not per_task:
        raise SystemExit(f"{args.result} names no time limit (env.max_steps, or a LIBERO suite) or no eval.per_task "
                         "in its config: pass an example's result.json.")
    limits = sorted({limit for limit in args.limits if 0 < limit <= run_limit} | {run_limit})
    tasks = list(result["tasks"])
    summary = {"result": str(args.result), "run_limit": run_limit, "limits": limits, "policies": {}}
    for policy, keys in EVALUATIONS.items():
        evaluations = next((result[key] for key in keys if result.get(key)), {})
        for mode, scores in evaluations.items():
            if "rollout_env_steps" not in scores:
                raise SystemExit(f"{args.result}: the {policy} evaluation ({mode}) has no rollout_env_steps (written "
                                 "before evaluations recorded them): evaluate the policy again with the current code.")
            steps, success = np.asarray(scores["rollout_env_steps"]), np.asarray(scores["outcomes"], dtype=bool)
            task_of = np.arange(len(steps)) // int(scores.get("rollouts_per_start", 1)) // per_task
            rows = {"all": at_limits(steps, success, limits)}
            lengths = {}
            for task_id, name in enumerate(tasks):
                mine = task_of == task_id
                if abs(success[mine].mean() - scores["per_task"][name]) > 1e-9:
                    raise SystemExit(f"{args.result}: the {policy} {mode} outcomes do not line up with its per-task "
                                     f"rates ({name}); was eval.per_task changed after the run?")
                rows[name] = at_limits(steps[mine], success[mine], limits)
                won = steps[mine][success[mine]]
                lengths[name] = ({q: int(np.quantile(won, p)) for q, p in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))}
                                 | {"max": int(won.max()), "n": int(len(won))}) if len(won) else None
            summary["policies"][f"{policy}/{mode}"] = {"by_limit": rows, "success_steps": lengths}
            print(f"{policy} {mode} ({len(steps)} rollouts at {run_limit} steps)")
            for limit in limits:
                row = rows["all"][str(limit)]
                kept = "no successes" if row["successes_kept"] is None else f"{row['successes_kept']:.1%} of successes kept"
                tasks_sr = "  ".join(f"{name} {rows[name][str(limit)]['sr']:.3f}" for name in tasks)
                print(f"  limit {limit:4d}: sr {row['sr']:.3f} ({kept}), "
                      f"env steps x{row['env_steps_ratio']:.2f}  | {tasks_sr}")
            for name, q in lengths.items():
                print(f"  success steps {name}: " + (", ".join(f"{k} {v}" for k, v in q.items()) if q else "none"))
    if not summary["policies"]:
        raise SystemExit(f"{args.result} holds no evaluation ({', '.join(k for keys in EVALUATIONS.values() for k in keys)}).")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
