"""Per-start success: how often does the sampling policy solve each held-out start?

    python benchmarks/per_start_success.py --config-name ript_metaworld \\
        policy.checkpoint=<run>/sft_policy.pt demos.dir=<run>/demos
    python benchmarks/per_start_success.py --rollouts 4 --against <run>/ript_policy.pt [<other run>/ript_policy.pt ...] \\
        --config-name ript_metaworld policy.checkpoint=<run>/sft_policy.pt demos.dir=<run>/demos

Takes an example's config and overrides exactly as the example does
(``ript_metaworld*`` or ``ript_libero*``, as ``benchmarks/signal_audit.py``)
and builds what it builds (its ``prepare``: the policy of
``policy.checkpoint``, or demos + SFT, the envs and the held-out starts the
example evaluates on), then rolls the *sampling* policy (the one RIPT collects
with; ``exploration=random``) out ``--rollouts`` times from each held-out start
(default: ``ript.group_size``, so a start's rollouts are one RIPT group) and
prints per task:

* ``sr``: the success rate over all rollouts (the example's headline number
  for the sampling policy, with ``--rollouts`` times its rollouts);
* ``never`` / ``mixed`` / ``always``: the share of starts no rollout solved,
  some rollouts solved, every rollout solved. RIPT learns only from mixed
  groups: a start that is never solved gives it all-failure groups, so a
  policy that fails most of its held-out starts every time has little
  headroom for RIPT, whatever the update (``solved_at_least_once`` = 1 -
  never);

and with ``--against <policy file> ...`` (e.g. the run's ``ript_policy.pt``, a
control run's) the same for each of those policies on the same starts with the
same seed, each with a one-sided exact sign-flip test of its per-start success
counts against the first policy's
(``torchrl_ript.trainers.paired_count_test``; with one rollout per start it is
the example's McNemar test, with more it sees a smaller gain).

The LAST stdout line is one JSON object (also written to
``<run folder>/per_start_success.json``; default run folder
``outputs/per_start_success/<config>/<time>``, ``hydra.run.dir=...`` changes
it): per policy and per task the counts and shares, the paired test, the
config name and overrides, wall time and load average.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, also when a test imports this file

from example_config import example_for, load_example, run_on_example_config  # noqa: E402

USAGE = ("python benchmarks/per_start_success.py [--rollouts N] [--against POLICY_FILE ...] --config-name NAME "
         "[overrides]")


def parse_own_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """This script's options; the rest of ``argv`` goes to Hydra."""
    parser = argparse.ArgumentParser(usage=USAGE, add_help=False)
    parser.add_argument("--rollouts", type=int, default=None,
                        help="rollouts per held-out start (default: ript.group_size)")
    parser.add_argument("--against", nargs="+", default=[],
                        help="policy files scored on the same starts, each tested against the first policy")
    args, rest = parser.parse_known_args(argv)
    if args.rollouts is not None and args.rollouts < 1:
        raise SystemExit(f"per_start_success: --rollouts must be >= 1, got {args.rollouts}.")
    missing = [path for path in args.against if not Path(path).is_file()]
    if missing:
        raise SystemExit(f"per_start_success: --against {missing} not found: pass policy files saved by a run "
                         "(<run>/ript_policy.pt, <run>/sft_policy.pt).")
    return args, rest


def score(env, policy, contexts, *, rollouts: int, horizon: int, lockstep: bool, seed: int, progress: bool) -> dict:
    """Per-start success of ``policy``'s sampling distribution, overall and per task."""
    from torchrl.envs.utils import ExplorationType

    from torchrl_ript.trainers.evaluate import evaluate_success, repeat_starts
    from torchrl_ript.trainers.stats import per_start_success

    result = evaluate_success(env, policy, repeat_starts(contexts, rollouts), horizon=horizon,
                              exploration_type=ExplorationType.RANDOM, lockstep=lockstep, seed=seed,
                              progress=progress)
    overall = per_start_success(result["outcomes"], rollouts)
    per_task = {}
    for task_id, name in enumerate(contexts.task_names):
        starts = [i for i, t in enumerate(contexts.task_ids.tolist()) if t == task_id]
        if starts:
            outcomes = [result["outcomes"][i * rollouts + r] for i in starts for r in range(rollouts)]
            per_task[name] = per_start_success(outcomes, rollouts)
    return {**overall, "per_task": per_task, "env_steps": result["env_steps"]}


def table(result: dict) -> str:
    """Per task and overall: sr, never / mixed / always, for each scored policy."""
    rows = []
    scored = [("policy", result["policy"])] + [(f"against{i + 1}", s) for i, s in enumerate(result["against"])]
    for label, scores in scored:
        for name, s in [*scores["per_task"].items(), ("all tasks", scores)]:
            rows.append((label, name, s["sr"], s["never"], s["mixed"], s["always"], s["n_starts"]))
    width = max(len(r[1]) for r in rows) + 2
    lines = [f"{result['rollouts']} sampled rollouts per held-out start; policy: {result['checkpoint']}"]
    lines += [f"against{i + 1}: {s['checkpoint']}" for i, s in enumerate(result["against"])]
    lines.append(f"{'':<10}{'task':<{width}}{'sr':>7}{'never':>8}{'mixed':>8}{'always':>8}{'starts':>8}")
    lines += [f"{label:<10}{name:<{width}}{sr:>7.3f}{never:>8.2f}{mixed:>8.2f}{always:>8.2f}{n:>8}"
              for label, name, sr, never, mixed, always, n in rows]
    for i, s in enumerate(result["against"]):
        test = s["paired"]
        lines.append(f"against{i + 1} vs policy: sr {test['sr_before']:.3f} -> {test['sr_after']:.3f}; "
                     f"{test['starts_up']} starts up, {test['starts_down']} down; one-sided exact sign-flip "
                     f"p = {test['p_value']:.4g}")
    return "\n".join(lines)


def run(cfg, *, args: argparse.Namespace, config_name: str, overrides: list[str], out: Path) -> dict:
    from omegaconf import OmegaConf

    from torchrl_ript.models.checkpoint import load_policy
    from torchrl_ript.models.registry import set_sampling, wrap_policy
    from torchrl_ript.trainers.pipeline import policy_sampling
    from torchrl_ript.trainers.stats import paired_count_test

    start = time.perf_counter()
    load_start = os.getloadavg()
    name = example_for(config_name, cfg)
    example = load_example(name)
    prep = example.prepare(cfg, out)
    config = prep.config
    rollouts = args.rollouts or config.group_size
    # LIBERO's prepare builds the env pool it evaluates on; MetaWorld's example builds its evaluation pool
    env = getattr(prep, "env", None) or example.make_eval_env(cfg, prep)
    common = dict(rollouts=rollouts, horizon=config.max_decisions, lockstep=config.lockstep, seed=cfg.eval.seed,
                  progress=cfg.progress)
    try:
        policy = score(env, prep.bundle.policy, prep.held_out, **common)
        against = []
        sampling = policy_sampling(cfg.policy.kind, OmegaConf.to_container(cfg.policy.sampling)) or {}
        for path in args.against:
            other = wrap_policy(set_sampling(load_policy(path), **sampling))
            scores = score(env, other.policy, prep.held_out, **common)
            against.append({"checkpoint": path, **scores,
                            "paired": paired_count_test(policy["counts"], scores["counts"], rollouts=rollouts)})
    finally:
        env.close(raise_if_closed=False)
    return {
        "rollouts": rollouts,
        "n_starts": len(prep.held_out),
        "policy": policy,
        "against": against,
        "checkpoint": cfg.policy.checkpoint,
        "config_name": config_name,
        "overrides": overrides,
        "example": f"examples/ript_{name}.py",
        "policy_kind": prep.bundle.kind,
        "eval_seed": cfg.eval.seed,
        "sft_s": prep.sft_info.get("sft_s", 0.0),
        "wall_s": time.perf_counter() - start,
        "load_avg": [round(load_start[0], 2), round(os.getloadavg()[0], 2)],
        "output_dir": str(out),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }


if __name__ == "__main__":
    own, hydra_args = parse_own_args(sys.argv[1:])
    run_on_example_config("per_start_success", __doc__, partial(run, args=own), table, hydra_args)
