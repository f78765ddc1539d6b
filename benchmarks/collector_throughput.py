"""Rollout-collection throughput: GroupCollector vs the simulator limit, TorchRL's
stock collector and a RIPT-style sequential loop, on one workload.

Workload (all four paths run it in the same process run): ``MetaWorldEnv``
(one task, ``--cameras`` rendered at ``--image-size`` once per decision,
``--chunk`` raw physics steps per decision, ``--horizon`` decisions per
rollout), a small conv+MLP policy with a Laplace head
(:func:`torchrl_ript.make_continuous_actor`, ``--policy tiny|small``), and
``--workers`` env processes (``ParallelEnv``, spawn).

Paths:

- ``limit``: the simulator alone, no policy, no TorchRL: each of N spawned
  processes runs raw MetaWorld physics + MuJoCo rendering at decision steps
  (and a context reset per rollout), all N at the same time; the limit is the
  sum of their rates (``limit_single_x_n`` = one process alone x N is
  reported too);
- ``stock``: ``ParallelEnv(N)`` + ``torchrl.collectors.Collector`` with the
  same policy and envs, resets without contexts (as a stock user would);
- ``sequential``: the official RIPT code's loop: per context, a
  ``ParallelEnv`` of K envs is reset to the context, stepped with one policy
  call per step until *all* K rollouts are done, then the next context;
- ``group``: :class:`~torchrl_ript.GroupCollector` over ``ParallelEnv(N)``
  (K rollouts per context, ``--contexts`` contexts per batch, no dynamic
  sampling so every batch has the same size).

Rates: ``decisions/s`` (TorchRL ``env.step`` calls, one per decision, summed
over envs), ``env_steps/s`` = decisions x chunk (raw simulator steps; exact
unless a rollout succeeds mid-chunk, which a random policy essentially never
does), ``rollouts/s``.

Usage::

    python benchmarks/collector_throughput.py --quick          # < 1 min
    python benchmarks/collector_throughput.py                  # default workload
    python benchmarks/collector_throughput.py --growth         # + K/contexts/horizon sweep
    python benchmarks/collector_throughput.py --profile        # + cProfile of GroupCollector

Prints a table; the LAST stdout line is one JSON object (also written to
``--out``).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import multiprocessing as mp
import os
import platform
import pstats
import sys
import time
from functools import partial

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch import nn  # noqa: E402

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "collector_throughput.json")
POLICY_SIZES = {"tiny": dict(channels=8, hidden=64), "small": dict(channels=32, hidden=256)}
IMAGE_KEYS = (("observation", "image"), ("observation", "wrist_image"))
# forkserver: workers fork from a server that imported torch/torchrl/metaworld
# once (no GL context in it), so starting N workers costs ~0.1 s instead of
# N fresh interpreters importing everything (~5-15 s on a busy 2-core box).
# Plain fork is unsafe once this process holds a GL context.
START_METHOD = "forkserver"
PRELOAD = ["torch", "torchrl", "torchrl.envs", "tensordict", "torchrl_ript", "torchrl_ript.envs.metaworld",
           "metaworld", "mujoco"]


# -- memory -----------------------------------------------------------------------
def _vm(pid: int | str, field: str) -> int:
    """A /proc/<pid>/status field in bytes (VmHWM = peak RSS, VmRSS = current)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _reset_peak_rss() -> None:
    try:  # Linux >= 4.0: "5" resets VmHWM to the current RSS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _children_peak_rss() -> list[int]:
    import psutil

    return [_vm(p.pid, "VmHWM") for p in psutil.Process().children(recursive=True)]


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- workload ---------------------------------------------------------------------
class ConvLaplaceNet(nn.Module):
    """Small conv encoder (per camera, shared) + MLP -> Laplace mean and scale of a chunk."""

    def __init__(self, *, n_cameras: int, image_size: int, chunk: int, channels: int, hidden: int):
        super().__init__()
        from torchrl_ript import ScaleHead

        self.chunk = chunk
        self.encoder = nn.Sequential(
            nn.Conv2d(3, channels, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * channels, 2 * channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        )
        features = n_cameras * 8 * channels + 4
        self.trunk = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.mean = nn.Linear(hidden, chunk * 4)
        self.scale = ScaleHead(hidden, (chunk, 4), hidden=hidden // 2, init_scale=0.3)

    def forward(self, *inputs):
        *images, state = inputs
        feats = [self.encoder(img.float().div(255.0)) for img in images]
        h = self.trunk(torch.cat([*feats, state], -1))
        return torch.tanh(self.mean(h)).unflatten(-1, (self.chunk, 4)), self.scale(h)


def make_policy(args):
    from torchrl_ript import make_continuous_actor

    torch.manual_seed(0)
    n_cams = len(args.cameras)
    net = ConvLaplaceNet(n_cameras=n_cams, image_size=args.image_size, chunk=args.chunk, **POLICY_SIZES[args.policy])
    in_keys = [*IMAGE_KEYS[:n_cams], ("observation", "state")]
    actor = make_continuous_actor(net, in_keys=in_keys, event_dims=2)
    n_params = sum(p.numel() for p in net.parameters())
    return actor, n_params


def env_fn(args, seed: int = 0):
    from torchrl_ript.envs.metaworld import MetaWorldEnv

    return partial(
        MetaWorldEnv,
        task_names=[args.task],
        camera_names=tuple(args.cameras),
        image_size=args.image_size,
        max_steps=args.horizon * args.chunk,
        action_chunk=args.chunk,
        render_quality="fast",
        seed=seed,
    )


def parallel_env(args, n: int, **kwargs):
    from torchrl.envs import ParallelEnv

    return ParallelEnv(n, env_fn(args), mp_start_method=START_METHOD, **kwargs)


def make_contexts(args, n: int):
    from torchrl_ript.envs.metaworld import metaworld_contexts

    return metaworld_contexts([args.task], n, seed=0)


# -- limit: the simulator alone ---------------------------------------------------
def _limit_worker(args, duration: float, barrier, queue) -> None:
    import numpy as np

    from torchrl_ript.envs.metaworld import _ROTATED_CAMERAS, _context_reset, rand_vec_dim, sample_rand_vecs

    torch.set_num_threads(1)
    env = env_fn(args)()
    raw, renderer = env._sim(0)
    vec = sample_rand_vecs(args.task, 1, seed=0)[0][: rand_vec_dim(args.task)]
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(args.horizon, args.chunk, 4))

    def render():
        for cam in args.cameras:
            renderer.update_scene(raw.data, camera=cam)
            img = renderer.render()
            if cam in _ROTATED_CAMERAS:
                img = img[::-1, ::-1]
            np.ascontiguousarray(img.transpose(2, 0, 1))

    _context_reset(raw, vec)  # warm-up (GL context, first render)
    render()
    barrier.wait()
    sim_s = render_s = reset_s = 0.0
    rollouts = 0
    start = time.perf_counter()
    while time.perf_counter() - start < duration:  # whole rollouts for ~duration seconds
        t0 = time.perf_counter()
        _context_reset(raw, vec)
        render()
        t1 = time.perf_counter()
        reset_s += t1 - t0
        for t in range(args.horizon):
            t0 = time.perf_counter()
            for a in actions[t]:
                raw.step(a)
            t1 = time.perf_counter()
            render()
            t2 = time.perf_counter()
            sim_s += t1 - t0
            render_s += t2 - t1
        rollouts += 1
    wall = time.perf_counter() - start
    queue.put(dict(wall_s=wall, sim_s=sim_s, render_s=render_s, reset_s=reset_s,
                   decisions=rollouts * args.horizon, peak_rss=_vm("self", "VmHWM")))


def measure_limit(args, n: int, duration: float) -> dict:
    """N simulator processes at once, each for ~``duration`` s; the limit is the sum of their rates."""
    ctx = mp.get_context(START_METHOD)
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_limit_worker, args=(args, duration, barrier, queue)) for _ in range(n)]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    decisions = sum(r["decisions"] for r in results)
    per_s = sum(r["decisions"] / r["wall_s"] for r in results)
    per_decision = {k: sum(r[k] for r in results) / decisions for k in ("sim_s", "render_s", "reset_s")}
    return dict(
        workers=n, decisions_per_s=per_s, env_steps_per_s=per_s * args.chunk,
        rollouts_per_s=per_s / args.horizon,
        per_decision_ms={k[:-2]: 1e3 * v for k, v in per_decision.items()},
        worker_peak_rss_mb=max(r["peak_rss"] for r in results) / 2**20,
        load=_load(),
    )


def _mean_limit(runs: list[dict]) -> dict:
    out = dict(runs[0])
    for key in ("decisions_per_s", "env_steps_per_s", "rollouts_per_s"):
        out[key] = sum(r[key] for r in runs) / len(runs)
    out["per_decision_ms"] = {k: sum(r["per_decision_ms"][k] for r in runs) / len(runs) for k in runs[0]["per_decision_ms"]}
    out["runs_decisions_per_s"] = [r["decisions_per_s"] for r in runs]
    out["load"] = [r["load"] for r in runs]
    return out


# -- TorchRL stock: ParallelEnv + Collector ---------------------------------------
def measure_stock(args, n: int, rollouts: int, *, patient_wait: bool = False) -> dict:
    """``patient_wait``: the same, with GroupCollector's ParallelEnv wait fix (not stock)."""
    from torchrl.collectors import Collector

    from torchrl_ript.collectors.engine import patient_worker_wait

    policy, _ = make_policy(args)
    _reset_peak_rss()
    env = parallel_env(args, n)
    if patient_wait:
        patient_worker_wait(env)
    frames = n * args.horizon  # one rollout per env per batch
    batches = max(1, -(-rollouts // n))
    collector = Collector(env, policy, frames_per_batch=frames, total_frames=-1,
                          use_buffers=False, auto_register_policy_transforms=False)
    it = iter(collector)
    next(it)  # warm-up: workers start, first resets
    start = time.perf_counter()
    decisions = 0
    for _ in range(batches):
        batch = next(it)
        decisions += batch.numel()
    wall = time.perf_counter() - start
    workers_rss = _children_peak_rss()
    bytes_per_rollout = batch.bytes() / n
    collector.shutdown()
    del collector, it
    per_s = decisions / wall
    return dict(
        workers=n, wall_s=wall, decisions_per_s=per_s, env_steps_per_s=per_s * args.chunk,
        rollouts_per_s=per_s / args.horizon, bytes_per_rollout=bytes_per_rollout,
        main_peak_rss_mb=_vm("self", "VmHWM") / 2**20,
        worker_peak_rss_mb=max(workers_rss, default=0) / 2**20, load=_load(),
    )


# -- RIPT-style sequential waves -------------------------------------------------
def measure_sequential(args, contexts_n: int) -> dict:
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    from torchrl_ript.envs.common import context_reset_td

    policy, _ = make_policy(args)
    contexts = make_contexts(args, contexts_n)
    k = args.k
    _reset_peak_rss()
    env = parallel_env(args, k)
    env.reset()  # warm-up: workers start
    decisions = 0
    start = time.perf_counter()
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        for c in range(contexts_n):
            states = contexts.initial_states(torch.full((k,), c))
            td = env.reset(context_reset_td(states, contexts.task_ids[torch.full((k,), c)]))
            done = torch.zeros(k, dtype=torch.bool)
            trajectory = []
            for _ in range(args.horizon):
                td = policy(td)
                td.set("_step", (~done).unsqueeze(-1))
                td = env.step(td)
                trajectory.append(td.exclude("next").clone())  # what the RIPT loop keeps per step
                decisions += int((~done).sum())
                done = done | td.get(("next", "done")).reshape(k)
                td = td.get("next").exclude("_step")
                if bool(done.all()):
                    break
    wall = time.perf_counter() - start
    workers_rss = _children_peak_rss()
    env.close()
    per_s = decisions / wall
    return dict(
        workers=k, wall_s=wall, decisions_per_s=per_s, env_steps_per_s=per_s * args.chunk,
        rollouts_per_s=k * contexts_n / wall, main_peak_rss_mb=_vm("self", "VmHWM") / 2**20,
        worker_peak_rss_mb=max(workers_rss, default=0) / 2**20, load=_load(),
    )


# -- GroupCollector -------------------------------------------------------------------
def measure_group(args, n: int, *, k: int | None = None, contexts_n: int | None = None,
                  horizon: int | None = None, iters: int | None = None, profile: bool = False) -> dict:
    from torchrl_ript import GroupCollector

    k = k or args.k
    contexts_n = contexts_n or args.contexts
    if horizon is not None and horizon != args.horizon:
        args = argparse.Namespace(**{**vars(args), "horizon": horizon})
    iters = iters or args.iters
    policy, _ = make_policy(args)
    contexts = make_contexts(args, max(contexts_n, 4))
    _reset_peak_rss()
    env = parallel_env(args, n)
    collector = GroupCollector(
        env, policy, context_dataset=contexts, group_size=k, trajs_per_batch=k * contexts_n,
        max_frames_per_traj=args.horizon, dynamic_sampling=False, seed=0,
        observation_keys=[*IMAGE_KEYS[: len(args.cameras)], ("observation", "state")],
    )
    it = iter(collector)
    next(it)  # warm-up: workers start
    totals = dict(wall_s=0.0, policy_s=0.0, env_s=0.0, bookkeeping_s=0.0, reset_s=0.0, decision_steps=0, rollouts=0)
    prof = cProfile.Profile() if profile else None
    if prof:
        prof.enable()
    for _ in range(iters):
        batch = next(it)
        s = collector.last_stats
        totals["wall_s"] += s.wall_s
        totals["policy_s"] += s.policy_s
        totals["env_s"] += s.env_s
        totals["decision_steps"] += s.decision_steps
        totals["rollouts"] += s.rollouts_finished
        totals["bookkeeping_s"] += getattr(s, "bookkeeping_s", 0.0)
        totals["reset_s"] += getattr(s, "reset_s", 0.0)
    if prof:
        prof.disable()
    workers_rss = _children_peak_rss()
    collector.shutdown()
    del collector, it
    wall = totals["wall_s"]
    per_s = totals["decision_steps"] / wall
    out = dict(
        workers=n, k=k, contexts=contexts_n, horizon=args.horizon, wall_s=wall,
        wall_per_iter_s=wall / iters, decisions_per_s=per_s, env_steps_per_s=per_s * args.chunk,
        rollouts_per_s=totals["rollouts"] / wall, bytes_per_rollout=batch.bytes() / batch.numel(),
        policy_s=totals["policy_s"], env_s=totals["env_s"], bookkeeping_s=totals["bookkeeping_s"],
        reset_s=totals["reset_s"],
        other_s=wall - totals["policy_s"] - totals["env_s"],
        main_peak_rss_mb=_vm("self", "VmHWM") / 2**20,
        worker_peak_rss_mb=max(workers_rss, default=0) / 2**20, load=_load(),
    )
    if prof:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(35)
        out["profile"] = s.getvalue()
    return out


# -- driver -------------------------------------------------------------------------
def worker_counts(max_workers: int) -> list[int]:
    counts, w = [], 1
    while w < max_workers:
        counts.append(w)
        w *= 2
    counts.append(max_workers)
    return counts


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--env", default="metaworld", choices=["metaworld"])
    p.add_argument("--task", default="reach-v3")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--cameras", nargs="+", default=["corner2"])
    p.add_argument("--k", type=int, default=4, help="rollouts per context (group size)")
    p.add_argument("--contexts", type=int, default=2, help="contexts per GroupCollector batch")
    p.add_argument("--horizon", type=int, default=25, help="decisions per rollout")
    p.add_argument("--chunk", type=int, default=8, help="raw env steps per decision")
    p.add_argument("--policy", default="small", choices=sorted(POLICY_SIZES))
    p.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 16))
    p.add_argument("--iters", type=int, default=2, help="timed GroupCollector batches")
    p.add_argument("--limit-s", type=float, default=8.0, help="seconds each limit process runs")
    p.add_argument("--no-sweep", action="store_true", help="skip the 1, 2, 4, ... worker sweep")
    p.add_argument("--growth", action="store_true", help="sweep K, contexts and horizon")
    p.add_argument("--profile", action="store_true", help="cProfile the GroupCollector main process")
    p.add_argument("--quick", action="store_true", help="tiny images, short horizons (< 1 min)")
    p.add_argument("--out", default=DEFAULT_OUT)
    args = p.parse_args(argv)
    if args.quick:
        args.image_size, args.horizon, args.chunk = 32, 6, 4
        args.k, args.contexts, args.iters, args.policy = 2, 2, 3, "tiny"
        args.limit_s = 1.5
    return args


def _row(name, r, limit):
    return (f"{name:<22}{r['workers']:>8}{r['decisions_per_s']:>12.1f}{r['env_steps_per_s']:>12.1f}"
            f"{r['rollouts_per_s']:>11.2f}{r['decisions_per_s'] / limit:>10.2f}")


def main(argv=None) -> dict:
    args = parse(argv)
    if START_METHOD == "forkserver":
        mp.set_forkserver_preload(PRELOAD)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    t_start = time.perf_counter()
    load_start = _load()
    n = args.workers
    group_rollouts = args.k * args.contexts * args.iters
    _, n_params = make_policy(args)
    sweep = worker_counts(n) if not args.no_sweep else [n]

    scaling = []
    limits, groups = {}, {}
    for w in sweep:
        # the limit is measured right before and (unless --quick) right after
        # the GroupCollector run and averaged: other load on the machine drifts
        before = measure_limit(args, w, args.limit_s)
        groups[w] = measure_group(args, w, profile=args.profile and w == n)
        runs = [before] if args.quick else [before, measure_limit(args, w, args.limit_s)]
        limits[w] = _mean_limit(runs)
        scaling.append(dict(workers=w, limit_decisions_per_s=limits[w]["decisions_per_s"],
                            group_decisions_per_s=groups[w]["decisions_per_s"],
                            group_vs_limit=groups[w]["decisions_per_s"] / limits[w]["decisions_per_s"],
                            load=groups[w]["load"]))
    limit, group = limits[n], groups[n]
    single = limits.get(1) or measure_limit(args, 1, args.limit_s)
    limit_single_x_n = single["decisions_per_s"] * n
    stock = measure_stock(args, n, group_rollouts)
    stock_patient = None if args.quick else measure_stock(args, n, group_rollouts, patient_wait=True)
    sequential = measure_sequential(args, args.contexts * args.iters)

    # where GroupCollector's time goes: sim and render from the limit run's
    # per-decision split (done in the workers, in parallel), the rest measured
    lim_ms = limit["per_decision_ms"]
    decisions = group["decisions_per_s"] * group["wall_s"]
    sim_worker_s = decisions * lim_ms["sim"] / 1e3 / n
    render_worker_s = decisions * lim_ms["render"] / 1e3 / n
    breakdown = dict(
        wall_s=group["wall_s"], policy_s=group["policy_s"], env_step_s=group["env_s"],
        sim_s_est=sim_worker_s, render_s_est=render_worker_s,
        transfer_and_wait_s_est=group["env_s"] - sim_worker_s - render_worker_s,
        context_reset_s=group["reset_s"], record_and_finish_s=group["bookkeeping_s"],
        other_s=group["other_s"] - group["reset_s"] - group["bookkeeping_s"],
    )

    growth = []
    if args.growth:
        base = dict(k=args.k, contexts=args.contexts, horizon=args.horizon)
        for name, values in (("k", [2, 4, 8]), ("contexts", [1, 2, 4]), ("horizon", [args.horizon // 2, args.horizon, 2 * args.horizon])):
            for v in values:
                cfg = {**base, name: v}
                r = measure_group(args, n, k=cfg["k"], contexts_n=cfg["contexts"], horizon=cfg["horizon"], iters=1)
                growth.append(dict(vary=name, **cfg, wall_per_batch_s=r["wall_per_iter_s"],
                                   decisions=r["decisions_per_s"] * r["wall_s"],
                                   decisions_per_s=r["decisions_per_s"], load=r["load"]))

    result = dict(
        benchmark="collector_throughput",
        config=dict(env=args.env, task=args.task, image_size=args.image_size, cameras=args.cameras,
                    k=args.k, contexts=args.contexts, horizon=args.horizon, chunk=args.chunk,
                    policy=args.policy, policy_params=n_params, workers=n, iters=args.iters,
                    quick=args.quick, torch_threads=torch.get_num_threads()),
        machine=dict(cpus=os.cpu_count(), platform=platform.platform(), load_start=load_start, load_end=_load()),
        env_steps_per_s=group["env_steps_per_s"],
        decisions_per_s=group["decisions_per_s"],
        rollouts_per_s=group["rollouts_per_s"],
        group_vs_limit=group["decisions_per_s"] / limit["decisions_per_s"],
        group_vs_limit_single_x_n=group["decisions_per_s"] / limit_single_x_n,
        group_vs_stock=group["decisions_per_s"] / stock["decisions_per_s"],
        group_vs_sequential=group["decisions_per_s"] / sequential["decisions_per_s"],
        limit=limit, limit_single_x_n=dict(decisions_per_s=limit_single_x_n, env_steps_per_s=limit_single_x_n * args.chunk),
        stock=stock, stock_with_patient_wait=stock_patient, sequential=sequential, group={k: v for k, v in group.items() if k != "profile"},
        bytes_per_rollout=dict(group=group["bytes_per_rollout"], stock=stock["bytes_per_rollout"]),
        peak_rss_mb=dict(main_group=group["main_peak_rss_mb"], worker_group=group["worker_peak_rss_mb"],
                         main_stock=stock["main_peak_rss_mb"], worker_stock=stock["worker_peak_rss_mb"],
                         worker_limit=limit["worker_peak_rss_mb"]),
        group_time_breakdown=breakdown, scaling=scaling, growth=growth,
        total_wall_s=time.perf_counter() - t_start,
    )

    lim = limit["decisions_per_s"]
    print(f"workload: {args.task}, {len(args.cameras)} cam x {args.image_size}px, K={args.k}, "
          f"{args.contexts} contexts/batch, horizon {args.horizon} x chunk {args.chunk}, "
          f"policy {args.policy} ({n_params} params), {n} workers; load {load_start} -> {_load()}")
    print(f"{'path':<22}{'workers':>8}{'decisions/s':>12}{'env_steps/s':>12}{'rollouts/s':>11}{'vs limit':>10}")
    print(_row("limit (concurrent)", limit, lim))
    print(f"{'limit (1 proc x N)':<22}{n:>8}{limit_single_x_n:>12.1f}{limit_single_x_n * args.chunk:>12.1f}"
          f"{limit_single_x_n / args.horizon:>11.2f}{limit_single_x_n / lim:>10.2f}")
    print(_row("torchrl stock", stock, lim))
    if stock_patient:
        print(_row("stock + patient wait", stock_patient, lim))
    print(_row(f"sequential (K={args.k} envs)", sequential, lim))
    print(_row("GroupCollector", group, lim))
    print(f"group/limit {result['group_vs_limit']:.2f}  group/stock {result['group_vs_stock']:.2f}  "
          f"group/sequential {result['group_vs_sequential']:.2f}")
    print("scaling: " + ", ".join(f"{s['workers']}w group {s['group_decisions_per_s']:.1f} / limit "
                                   f"{s['limit_decisions_per_s']:.1f} = {s['group_vs_limit']:.2f}" for s in scaling))
    print("group time (s): " + ", ".join(f"{k} {v:.2f}" for k, v in breakdown.items()))
    print(f"bytes/rollout: group {group['bytes_per_rollout']:.0f}, stock {stock['bytes_per_rollout']:.0f}; "
          f"peak RSS MB: main {group['main_peak_rss_mb']:.0f}, worker {group['worker_peak_rss_mb']:.0f}")
    for g in growth:
        print(f"growth {g['vary']:<9} K={g['k']} contexts={g['contexts']} horizon={g['horizon']}: "
              f"{g['wall_per_batch_s']:.2f} s/batch, {g['decisions_per_s']:.1f} decisions/s")
    if args.profile and "profile" in group:
        print(group["profile"])
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
