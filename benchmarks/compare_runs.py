"""Paired comparison of two RIPT variants run on the same seeds and held-out starts.

    python benchmarks/compare_runs.py \\
        --baseline runs/b32_seed{0,1,2}/result.json \\
        --candidate runs/b64_seed{0,1,2}/result.json [--mode random]

The i-th baseline and the i-th candidate must start from the same SFT policy
(same seed) and be scored on the same held-out starts (same ``eval.seed`` and
``eval.per_task``): then each start is a pair, and the exact McNemar test
looks only at the starts one variant solved and the other did not. Pooling
the seeds concatenates their pairs. Prints one markdown row per seed and a
pooled row: each variant's gain over SFT with its own paired test, and the
candidate against the baseline after RIPT; the last line is JSON.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from torchrl_ript.trainers.stats import paired_success_test


def outcomes(result: dict, stage: str, mode: str) -> list[bool]:
    """Per-start outcomes of ``stage`` ("sft" or "ript") for one evaluation mode."""
    by_mode = result.get(f"sr_{stage}_by_mode") or {}
    if mode not in by_mode:
        raise SystemExit(
            f"no {mode!r} evaluation of the {stage} policy in this result (modes: "
            f"{sorted(by_mode)}); pass --mode with one of them."
        )
    return list(by_mode[mode]["outcomes"])


def load_pair(baseline: Path, candidate: Path, mode: str) -> dict:
    base, cand = (json.loads(p.read_text()) for p in (baseline, candidate))
    sft_base, sft_cand = outcomes(base, "sft", mode), outcomes(cand, "sft", mode)
    if len(sft_base) != len(sft_cand):
        raise SystemExit(
            f"{baseline} and {candidate} were scored on different numbers of starts "
            f"({len(sft_base)} vs {len(sft_cand)}): run both with the same eval.per_task and eval.seed."
        )
    seeds = {r.get("config", {}).get("ript", {}).get("seed") for r in (base, cand)}
    return {
        "seed": "/".join(str(s) for s in sorted(seeds, key=str)),
        "sft": sft_base,
        "sft_agree": sum(a == b for a, b in zip(sft_base, sft_cand)) / len(sft_base),
        "baseline": outcomes(base, "ript", mode),
        "candidate": outcomes(cand, "ript", mode),
    }


def row(name: str, pair: dict) -> dict:
    return {
        "seed": name,
        "n": len(pair["sft"]),
        "sft": sum(pair["sft"]) / len(pair["sft"]),
        "baseline_vs_sft": paired_success_test(pair["sft"], pair["baseline"]),
        "candidate_vs_sft": paired_success_test(pair["sft"], pair["candidate"]),
        "candidate_vs_baseline": paired_success_test(pair["baseline"], pair["candidate"]),
        "sft_agreement": pair["sft_agree"],
    }


def fmt(test: dict) -> str:
    return (
        f"{test['sr_before']:.2f} -> {test['sr_after']:.2f} "
        f"({test['gained']}/{test['lost']}, p = {test['p_value']:.3g})"
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", nargs="+", type=Path, required=True)
    parser.add_argument("--candidate", nargs="+", type=Path, required=True)
    parser.add_argument("--mode", default="random", help="evaluation mode: random (sampling) | deterministic")
    args = parser.parse_args(argv)
    if len(args.baseline) != len(args.candidate):
        raise SystemExit(
            f"give one candidate result per baseline result (same seeds, same order): got "
            f"{len(args.baseline)} baseline and {len(args.candidate)} candidate files."
        )
    pairs = [load_pair(b, c, args.mode) for b, c in zip(args.baseline, args.candidate)]
    pooled = {key: sum((p[key] for p in pairs), []) for key in ("sft", "baseline", "candidate")}
    pooled["sft_agree"] = sum(p["sft_agree"] * len(p["sft"]) for p in pairs) / len(pooled["sft"])
    rows = [row(p["seed"], p) for p in pairs] + [row("pooled", pooled)]
    print("| ript.seed | n | baseline vs SFT | candidate vs SFT | candidate vs baseline |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['seed']} | {r['n']} | {fmt(r['baseline_vs_sft'])} | {fmt(r['candidate_vs_sft'])} "
            f"| {fmt(r['candidate_vs_baseline'])} |"
        )
    if any(p["sft_agree"] < 1.0 for p in pairs):
        print("note: the two variants' SFT evaluations differ on some starts (sampling noise of the "
              "evaluation, or not the same SFT policy); the baseline's SFT outcomes are used.")
    summary = {"mode": args.mode, "rows": rows}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
