"""One table row per MetaWorld run folder: SR before/after, n, p, informative groups, cost.

    python benchmarks/metaworld_summary.py runs/metaworld_transfer/*/      # markdown table

Reads each folder's ``result.json`` (the example's JSON line) and
``checkpoints/history.json`` (per-iteration statistics). The informative-group
rate is informative groups / completed groups; env steps per informative
group counts every env step the collector spent.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def summarize(folder: Path) -> dict:
    result = json.loads((folder / "result.json").read_text())
    history = folder / "checkpoints" / "history.json"
    train = json.loads(history.read_text())["train"] if history.exists() else []
    cfg = result.get("config", {})
    coll = result.get("collection") or {}
    collect_s = sum(r.get("collect/wall_s", 0.0) for r in train)
    return {
        "run": folder.name,
        "pretrain": ",".join(result.get("pretrain_tasks") or []) or "-",
        "tasks": ",".join(result["tasks"]),
        "demos": cfg.get("demos", {}).get("per_task"),
        "sampler": result.get("sampler", cfg.get("contexts", {}).get("sampler")),
        "sr_sft": result.get("sr_sft"),
        "sr_ript": result.get("sr_ript"),
        "n_eval": result.get("n_eval"),
        "p_value": result.get("p_value"),
        "iterations": result.get("iterations"),
        "env_steps": result.get("env_steps"),
        "informative_rate": coll.get("informative_group_rate"),
        "steps_per_informative": coll.get("env_steps_per_informative_group"),
        "groups": f"{coll.get('groups_informative')}/{coll.get('groups_completed')}",
        "collect_min": collect_s / 60,
        "wall_min": result.get("wall_s", 0.0) / 60,
    }


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1 else f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}"
    return str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args()
    rows = [summarize(f) for f in args.folders if (f / "result.json").exists()]
    if not rows:
        raise SystemExit("no result.json in the given folders.")
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(fmt(row[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
