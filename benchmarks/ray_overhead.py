"""What Ray rollout workers cost: RayGroupCollector vs the same GroupCollector in-process.

One workload, one process run:

- ``inproc``: ``GroupCollector(make_batched_env(env_fn, K))`` in this process
  (K env slots: worker processes, or threads with ``--pool threads``), the
  examples' set-up;
- ``ray_1``: one Ray worker (:class:`~torchrl_ript.collectors.RayGroupCollector`,
  ``num_workers=1``) running that same GroupCollector and pool in its actor:
  ``ray_1 / inproc`` is Ray's overhead for the same processes;
- ``ray_W``: W Ray workers, each such a GroupCollector: ``ray_W / ray_1`` is
  the scaling from 1 to W workers (W x K env slots; it needs the cores);
- ``ray_W_lag1``: as ``ray_W`` with ``max_policy_lag=1`` (the workers never
  wait for the learner's "next batch" request).

Every path collects batches of B = ``--groups`` x K rollouts with dynamic
sampling off (each batch is the same work), after one warm-up batch. Ray
workers report one group at a time, which is the design's cost: one Ray
round trip per group, and a worker's next group starts only when asked.
Also reported: Ray start-up (``ray.init`` + workers + first weight sync) and
the time of one weight update. Workloads: ``--env metaworld`` (the
``collector_throughput.py`` workload: reach-v3, one 128 px camera, 8-step
chunks, 25 decisions, a small conv policy) or ``--env toy`` (TorchRL's toy
VLA env: almost free steps, so it shows the fixed cost per report).

Usage::

    python benchmarks/ray_overhead.py               # MetaWorld, 2 workers (~6 min on 2 cores)
    python benchmarks/ray_overhead.py --env toy     # the fixed cost per report (~2 min)
    python benchmarks/ray_overhead.py --workers 8   # a 16-core machine

Prints a table; the LAST stdout line is one JSON object (also written to ``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from functools import partial

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import torch  # noqa: E402

DEFAULT_OUT = os.path.join(HERE, "results", "ray_overhead.json")


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- workloads (picklable: Ray workers rebuild them) --------------------------------
def toy_env(action_dim: int = 2, max_steps: int = 8):
    from torchrl_ript import ContextToyVLAEnv

    return ContextToyVLAEnv(action_dim=action_dim, max_steps=max_steps, success_tol=0.15)


def env_pool(env_fn, n: int, processes: bool):
    from torchrl_ript.trainers.factory import make_batched_env

    return make_batched_env(env_fn, n, parallel=processes)


def workload(args):
    """(env_fn, policy, contexts, horizon)."""
    if args.env == "toy":
        from torchrl_ript import ContextDataset
        from torchrl_ript.modules.toy_policies import toy_laplace_actor

        torch.manual_seed(0)
        actor, _ = toy_laplace_actor()
        contexts = ContextDataset(torch.rand(256, 2) - 0.5, [0] * 256, ["track"], seed=0)
        return partial(toy_env, max_steps=args.horizon), actor, contexts, args.horizon
    import collector_throughput as ct  # the MetaWorld workload of the collector benchmark

    ns = argparse.Namespace(task=args.task, cameras=args.cameras, image_size=args.image_size,
                            horizon=args.horizon, chunk=args.chunk, policy=args.policy)
    actor, _ = ct.make_policy(ns)
    return ct.env_fn(ns), actor, ct.make_contexts(ns, 256), args.horizon


# -- paths --------------------------------------------------------------------------
def _timed_batches(collector, iters: int) -> dict:
    iterator = iter(collector)
    t0 = time.perf_counter()
    next(iterator)  # warm-up (first weight sync, env start, first renders)
    warmup_s = time.perf_counter() - t0
    env_steps = rollouts = discarded = 0
    wall = 0.0
    for _ in range(iters):
        t0 = time.perf_counter()
        batch = next(iterator)
        wall += time.perf_counter() - t0
        stats = collector.last_stats
        env_steps += stats.env_steps
        rollouts += batch.shape[0]
        discarded += stats.rollouts_discarded
    return {
        "env_steps_per_s": env_steps / wall,
        "rollouts_per_s": rollouts / wall,
        "s_per_batch": wall / iters,
        "warmup_batch_s": warmup_s,
        "rollouts_discarded_per_batch": discarded / iters,
        "batch": rollouts // iters,
    }


def run_inproc(args) -> dict:
    from torchrl_ript import GroupCollector

    env_fn, policy, contexts, horizon = workload(args)
    collector = GroupCollector(env_pool(env_fn, args.k, args.pool == "processes"), policy, context_dataset=contexts, group_size=args.k,
                               trajs_per_batch=args.k * args.groups, max_frames_per_traj=horizon,
                               dynamic_sampling=False, seed=0)
    try:
        return _timed_batches(collector, args.iters)
    finally:
        collector.shutdown()


def run_ray(args, workers: int, *, lag: int = 0) -> dict:
    from torchrl_ript.collectors import RayGroupCollector

    env_fn, policy, contexts, horizon = workload(args)
    t0 = time.perf_counter()
    collector = RayGroupCollector(partial(env_pool, env_fn, args.k, args.pool == "processes"), policy,
                                  context_dataset=contexts,
                                  group_size=args.k, trajs_per_batch=args.k * args.groups,
                                  max_frames_per_traj=horizon, dynamic_sampling=False, seed=0,
                                  num_workers=workers, max_policy_lag=lag, worker_timeout_s=600)
    build_s = time.perf_counter() - t0
    try:
        out = _timed_batches(collector, args.iters)
        out["pool_start_s"] = build_s
        out["reports_per_batch"] = collector.last_stats.reports
        out["learner_wait_s_per_batch"] = collector.last_stats.wait_s
        with torch.no_grad():
            for p in policy.parameters():
                p.add_(1e-4)
        t0 = time.perf_counter()
        collector.update_policy_weights_()
        out["weight_update_s"] = time.perf_counter() - t0
        out["policy_params"] = sum(p.numel() for p in policy.parameters())
    finally:
        collector.shutdown()
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="metaworld", choices=["metaworld", "toy"])
    p.add_argument("--task", default="reach-v3")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--cameras", nargs="+", default=["corner2"])
    p.add_argument("--chunk", type=int, default=8)
    p.add_argument("--policy", default="small")
    p.add_argument("--horizon", type=int, default=None, help="decisions per rollout (25 MetaWorld, 8 toy)")
    p.add_argument("--k", type=int, default=4, help="rollouts per group (= env slots per worker)")
    p.add_argument("--pool", choices=["processes", "threads"], default=None,
                   help="env slots as worker processes (default for MetaWorld) or threads (toy)")
    p.add_argument("--groups", type=int, default=4, help="groups per batch (B = groups x K)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--iters", type=int, default=3, help="timed batches per path")
    p.add_argument("--out", default=DEFAULT_OUT)
    args = p.parse_args(argv)
    if args.horizon is None:
        args.horizon = 25 if args.env == "metaworld" else 8
    if args.pool is None:  # rendering envs need processes; the toy env is cheapest in threads
        args.pool = "processes" if args.env == "metaworld" else "threads"
    torch.set_num_threads(1)  # as each Ray worker (num_cpus=1): equal compute per process
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import ray

    load_start = _load()
    t_all = time.perf_counter()
    results = {}
    results["inproc"] = run_inproc(args)
    t0 = time.perf_counter()
    ray.init(num_cpus=max(2, args.workers), include_dashboard=False, log_to_driver=False)
    ray_init_s = time.perf_counter() - t0
    results["ray_1"] = run_ray(args, 1)
    results[f"ray_{args.workers}"] = run_ray(args, args.workers)
    results[f"ray_{args.workers}_lag1"] = run_ray(args, args.workers, lag=1)
    ray.shutdown()
    load_end = _load()
    rate = {k: v["env_steps_per_s"] for k, v in results.items()}
    W = args.workers
    summary = {
        "benchmark": "ray_overhead",
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_start": load_start, "load_end": load_end,
                    "wall_s": round(time.perf_counter() - t_all, 1)},
        "ray_init_s": ray_init_s,
        "paths": results,
        "ratios": {
            "ray_1_vs_inproc": rate["ray_1"] / rate["inproc"],
            f"ray_{W}_vs_ray_1": rate[f"ray_{W}"] / rate["ray_1"],
            f"ray_{W}_lag1_vs_ray_{W}": rate[f"ray_{W}_lag1"] / rate[f"ray_{W}"],
        },
    }
    print(f"\n{'path':<24}{'env steps/s':>12}{'rollouts/s':>12}{'s/batch':>9}{'discarded/batch':>17}")
    for name, r in results.items():
        print(f"{name:<24}{r['env_steps_per_s']:>12.1f}{r['rollouts_per_s']:>12.2f}"
              f"{r['s_per_batch']:>9.2f}{r['rollouts_discarded_per_batch']:>17.1f}")
    for name, value in summary["ratios"].items():
        print(f"{name:<34}{value:.3f}")
    print(f"ray.init {ray_init_s:.1f} s; pool start-up {results['ray_1']['pool_start_s']:.1f} s (1 worker), "
          f"{results[f'ray_{W}']['pool_start_s']:.1f} s ({W} workers); weight update "
          f"{results[f'ray_{W}']['weight_update_s'] * 1e3:.1f} ms; load {load_start} -> {load_end}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
