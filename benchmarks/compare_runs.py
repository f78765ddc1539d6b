"""Paired comparison of two RIPT variants run on the same seeds and held-out starts.

    python benchmarks/compare_runs.py \\
        --baseline runs/b32_seed{0,1,2}/result.json \\
        --candidate runs/b64_seed{0,1,2}/result.json [--mode random]

The i-th baseline and the i-th candidate must start from the same SFT policy
(same seed) and be scored on the same held-out starts (same ``eval.seed``,
``eval.per_task`` and ``eval.rollouts_per_start``): then each start is a
pair, and the exact test looks only at the starts on which the two differ
(one rollout per start: McNemar's test, "gained / lost"; several: the
sign-flip test of the per-start success counts, "up / down"). Pooling the
seeds concatenates their pairs. Prints one markdown row per seed and a
pooled row: each variant's gain over SFT with its own paired test, and the
candidate against the baseline after RIPT; the last line is JSON.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from torchrl_ript.trainers.pipeline import paired_mode_test


def scores(result: dict, stage: str, mode: str) -> dict:
    """``stage``'s ("sft" or "ript") scores in one evaluation mode: outcomes, counts per start, rollouts per start.

    Results saved before ``eval.rollouts_per_start`` existed hold one rollout per start.
    """
    by_mode = result.get(f"sr_{stage}_by_mode") or {}
    if mode not in by_mode:
        raise SystemExit(
            f"no {mode!r} evaluation of the {stage} policy in this result (modes: "
            f"{sorted(by_mode)}); pass --mode with one of them."
        )
    score = by_mode[mode]
    rollouts = int(score.get("rollouts_per_start", 1))
    counts = score.get("counts") or [int(bool(x)) for x in score["outcomes"]]
    return {"outcomes": list(score["outcomes"]), "counts": list(counts), "rollouts_per_start": rollouts}


def load_pair(baseline: Path, candidate: Path, mode: str) -> dict:
    base, cand = (json.loads(p.read_text()) for p in (baseline, candidate))
    sft_base = scores(base, "sft", mode)
    # a candidate run from the baseline's SFT policy with stages.eval_sft=false: the baseline's SFT scores serve both
    sft_cand = scores(cand, "sft", mode) if cand.get("sr_sft_by_mode") else sft_base
    if (len(sft_base["counts"]), sft_base["rollouts_per_start"]) != (len(sft_cand["counts"]),
                                                                    sft_cand["rollouts_per_start"]):
        raise SystemExit(
            f"{baseline} and {candidate} were scored on different starts ({len(sft_base['counts'])} x "
            f"{sft_base['rollouts_per_start']} vs {len(sft_cand['counts'])} x {sft_cand['rollouts_per_start']} "
            "rollouts): run both with the same eval.per_task, eval.seed and eval.rollouts_per_start."
        )
    seeds = {r.get("config", {}).get("ript", {}).get("seed") for r in (base, cand)}
    return {
        "seed": "/".join(str(s) for s in sorted(seeds, key=str)),
        "sft": sft_base,
        "sft_shared": sft_cand is sft_base,
        "sft_agree": sum(a == b for a, b in zip(sft_base["counts"], sft_cand["counts"])) / len(sft_base["counts"]),
        "baseline": scores(base, "ript", mode),
        "candidate": scores(cand, "ript", mode),
    }


def pool(parts: list[dict]) -> dict:
    """Scores of several seeds as one list of starts (every part has the same rollouts per start)."""
    rollouts = {p["rollouts_per_start"] for p in parts}
    if len(rollouts) > 1:
        raise SystemExit(f"the seeds were scored with {sorted(rollouts)} rollouts per start: pool runs with the "
                         "same eval.rollouts_per_start.")
    return {"outcomes": sum((p["outcomes"] for p in parts), []), "counts": sum((p["counts"] for p in parts), []),
            "rollouts_per_start": rollouts.pop()}


def row(name: str, pair: dict) -> dict:
    sft = pair["sft"]
    return {
        "seed": name,
        "n": len(sft["counts"]),
        "rollouts_per_start": sft["rollouts_per_start"],
        "sft": sum(sft["counts"]) / (len(sft["counts"]) * sft["rollouts_per_start"]),
        "baseline_vs_sft": paired_mode_test(sft, pair["baseline"]),
        "candidate_vs_sft": paired_mode_test(sft, pair["candidate"]),
        "candidate_vs_baseline": paired_mode_test(pair["baseline"], pair["candidate"]),
        "sft_agreement": pair["sft_agree"],
    }


def fmt(test: dict) -> str:
    up, down = (test["gained"], test["lost"]) if "gained" in test else (test["starts_up"], test["starts_down"])
    return f"{test['sr_before']:.2f} -> {test['sr_after']:.2f} ({up}/{down}, p = {test['p_value']:.3g})"


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
    pooled = {key: pool([p[key] for p in pairs]) for key in ("sft", "baseline", "candidate")}
    n = len(pooled["sft"]["counts"])
    pooled["sft_agree"] = sum(p["sft_agree"] * len(p["sft"]["counts"]) for p in pairs) / n
    rows = [row(p["seed"], p) for p in pairs] + [row("pooled", pooled)]
    rollouts = pooled["sft"]["rollouts_per_start"]
    print("starts gained / lost (McNemar)" if rollouts == 1 else
          f"{rollouts} rollouts per start: starts solved more / less often (sign-flip test of the counts)")
    print("| ript.seed | n | baseline vs SFT | candidate vs SFT | candidate vs baseline |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['seed']} | {r['n']} | {fmt(r['baseline_vs_sft'])} | {fmt(r['candidate_vs_sft'])} "
            f"| {fmt(r['candidate_vs_baseline'])} |"
        )
    shared = [str(c) for c, p in zip(args.candidate, pairs) if p["sft_shared"]]
    if shared:
        print(f"note: {', '.join(shared)} evaluated no SFT policy (stages.eval_sft=false): the baseline's SFT "
              "scores are used, which is right only if the candidate started from the baseline's SFT policy.")
    if any(p["sft_agree"] < 1.0 for p in pairs):
        print("note: the two variants' SFT evaluations differ on some starts (sampling noise of the "
              "evaluation, or not the same SFT policy); the baseline's SFT outcomes are used.")
    summary = {"mode": args.mode, "rows": rows}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
