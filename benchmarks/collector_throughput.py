"""Rollout-collection throughput: GroupCollector vs the simulator limit and TorchRL's own collectors.

Every path runs the same workload in the same process run (its ``workload``
entry in the JSON is read back from the envs, policy and data it used):

- ``--env metaworld``: ``MetaWorldEnv`` (one task, ``--cameras`` rendered at
  ``--image-size`` once per decision, ``--chunk`` raw physics steps per
  decision, ``--horizon`` decisions per rollout);
- ``--env libero``: ``LiberoContextEnv`` (a LIBERO task, agentview +
  eye-in-hand at ``--image-size``, fast rendering and stepping,
  ``--chunk`` low-level actions per decision); TorchRL's own
  ``LiberoEnv(group_repeats=K)`` runs the same task, cameras, chunk (through
  TorchRL's ``MultiAction`` transform) and time limit as a stock path;

and the same policy: a small conv encoder + MLP with a Laplace head over the
action chunk (:func:`torchrl_ript.make_continuous_actor`, ``--policy
tiny|small``, random weights: it never succeeds, so every rollout runs the
full horizon).

Paths (each swept over ``--slot-counts`` env processes unless said otherwise):

- ``limit``: the simulator alone: ``--slots`` processes (default: one per
  core) step physics, evaluate the task and render the cameras once per
  decision (a context reset per rollout), no policy, no TorchRL, all at once;
  the limit is the sum of their rates, measured at the start and the end of
  each round and averaged; not swept;
- ``collector``: TorchRL's ``ParallelEnv(N)`` + ``Collector`` over the
  workload's env (plain resets, as a stock user would);
- ``collector_libero_env`` (LIBERO only): TorchRL's
  ``LiberoEnv(group_repeats=K)`` + ``MultiAction`` in each ``ParallelEnv``
  worker + ``Collector``: TorchRL's own grouped LIBERO path;
- ``async_batched``: TorchRL's ``AsyncBatchedCollector`` with the settings
  its docs give for process-backed envs: multiprocessing env workers that
  reach a dedicated inference process directly (the
  ``ProcessSlotTransport`` that ``transport="auto"`` derives from one env's
  ``fake_tensordict()`` and one policy pass; built here the same way only to
  pass a ``forkserver`` context, which makes start-up cheap), a
  ``policy_factory``, ``transition_chunk_size="auto"``;
  ``async_batched_driver`` (``--driver``): the same with
  ``transport="driver"`` (policy served from a thread of this process);
- ``sequential``: the official RIPT loop: per context a ``ParallelEnv`` of K
  envs reset to it, one policy call per step until *all* K are done; K
  slots, not swept;
- ``group``: :class:`~torchrl_ript.GroupCollector` on
  ``make_batched_env`` (an ``AsyncEnvPool`` of N processes, the default
  engine: no barrier), no dynamic sampling (fixed work per batch);
  ``group_lockstep``: ``lockstep=True`` (the examples' default);
  ``group_keep``: ``keep_in_flight=True`` (rollouts running when a batch is
  complete carry into the next one instead of being dropped: the setting for
  more slots than cores).

Slot counts: every swept path runs at each of ``--slot-counts`` (default
cores, 2 x cores and 3 x cores; LIBERO and ``--quick``: cores and 2 x cores),
so that each path is compared at the slot count that suits it (the stock
``Collector`` and ``AsyncBatchedCollector`` batch more envs per policy call
with more slots, GroupCollector hides the policy call and the exchange behind
other slots' simulation). A path's headline figure is that of its **best slot
count** (the highest median rate over rounds); ``paths[name]["by_slots"]``
keeps every slot count measured. **GroupCollector's best** is the best of
``group``, ``group_lockstep`` and ``group_keep`` at their best slot counts
(``best_group_path``); the **best TorchRL path** the best of the stock paths
above (``collector``, ``collector_libero_env``, ``async_batched``,
``async_batched_driver``) at theirs (``best_stock_path``).

The **bound** is what the cores could deliver if every core-second went to
simulation and policy inference, nothing to collection::

    bound decisions/s = cores * 1000 / (sim_cpu_ms_per_decision + policy_cpu_ms_per_decision)

- ``cores``: the CPUs this process may run on (``os.sched_getaffinity``);
- ``sim_cpu_ms_per_decision``: the ``limit`` path's CPU time per decision
  (user + system time of its simulator processes over their timed loop:
  physics, task check, rendering, the reset of every rollout), the median
  over rounds of the mean of each round's two limit measurements;
- ``policy_cpu_ms_per_decision``: the benchmark's policy alone, timed in a
  fresh process with ``--policy-threads`` torch threads (process CPU time:
  every thread of it) on an observation from the workload's env, expanded to
  every batch size the paths can form (1 .. the largest slot count, and K),
  ``--policy-s`` seconds each, once per round (median over rounds); the bound
  takes the cheapest batch size's CPU per decision, so it is an upper bound
  for every path and slot count.

The JSON's ``bound`` object stores these components, the per-batch-size
policy table and the formula; ``group_vs_bound`` is GroupCollector's best
over the bound, ``group_vs_stock`` over the best TorchRL path,
``group_vs_limit`` over the limit. ``cpu_accounting`` splits each path's
core time per delivered decision at its best slot count (``cores * 1000 /
rate`` ms) into idle cores, this process's CPU and the child processes' CPU,
with the simulator's share (the limit's CPU per decision, times the simulated
over the delivered decisions for GroupCollector) and the policy's share (the
policy table at the batch sizes the path's policy calls actually had,
counted with a forward pre-hook; unknown for ``async_batched``, whose policy
runs in TorchRL's inference process) taken out: what is left is the
collection's own cost (exchange, TensorDict work, bookkeeping) per decision.

``--instruction dropped`` (default) runs every path on the env without its
per-step string ``language_instruction`` (as ``make_batched_env`` does: the
policy gets the instruction from the context), so process pools, ours and
TorchRL's, exchange steps through shared memory; ``--instruction kept``
measures the env as it is (queue exchange, pickled steps).

Rates: ``decisions/s`` (policy decisions = env ``step`` calls, summed over
envs; for GroupCollector only the decisions of the trajectories it
*delivered*: rollouts it simulated and dropped do not count),
``env_steps/s`` (raw simulator steps, as counted by the env), ``rollouts/s``.
Each path is measured for ``--measure-s`` seconds (whole batches, at least
two) after a warm-up batch, in ``--rounds`` rounds whose path order rotates;
a path's figure at a slot count is its median over the rounds and the ratios
are those of the medians (the per-round ratios, each round's best against
each round's best, give the spread).

Usage::

    python benchmarks/collector_throughput.py --quick             # < 3 min, MetaWorld, slots 2 and 4 on 2 cores
    python benchmarks/collector_throughput.py                     # default MetaWorld workload
    python benchmarks/collector_throughput.py --slot-counts 2 4 8 # other slot counts for every swept path
    python benchmarks/collector_throughput.py --env libero        # LIBERO workload
    python benchmarks/collector_throughput.py --growth            # + K / B / horizon / slots growth
    python benchmarks/collector_throughput.py --in-flight         # + keep_in_flight waste (K=8, B=32/64)
    python benchmarks/collector_throughput.py --profile           # + cProfile of GroupCollector
    python benchmarks/collector_throughput.py --sweeps-only --sim-sweep   # the simulator alone at every slot count

Prints a table; the LAST stdout line is one JSON object (also written to
``--out``).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import multiprocessing as mp
import os
import platform
import pstats
import statistics
import sys
import time
from functools import partial

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch import nn  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
POLICY_SIZES = {"tiny": dict(channels=8, hidden=64), "small": dict(channels=32, hidden=256)}
IMAGE_KEYS = (("observation", "image"), ("observation", "wrist_image"))
STATE_KEY = ("observation", "state")
# Action and proprio sizes of each simulator (MetaWorld: xyz + gripper, hand
# pos + gripper; LIBERO: OSC pose + gripper, 7 joints + 2 gripper qpos).
ENV_DIMS = {"metaworld": dict(action=4, state=4), "libero": dict(action=7, state=9)}
# forkserver: workers fork from a server that imported torch/torchrl/metaworld
# once (no GL context in it), so starting N workers costs ~0.1-1 s instead of
# N fresh interpreters importing everything (~5-25 s on a busy 2-core box).
# Plain fork is unsafe once this process holds a GL context. Start-up is
# never inside a timed window; this only keeps the benchmark short.
START_METHOD = "forkserver"
PRELOAD = ["torch", "torchrl", "torchrl.envs", "torchrl.collectors", "tensordict", "torchrl_ript",
           "torchrl_ript.envs.metaworld", "metaworld", "mujoco"]
STOCK_PATHS = ("collector", "collector_libero_env", "async_batched", "async_batched_driver")
GROUP_PATHS = ("group", "group_lockstep", "group_keep")
SWEPT_PATHS = (*STOCK_PATHS, *GROUP_PATHS)  # measured at every --slot-counts


# -- machine ----------------------------------------------------------------------
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


def _children():
    import psutil

    return psutil.Process().children(recursive=True)


def _children_peak_rss_mb() -> float:
    return max((_vm(p.pid, "VmHWM") for p in _children()), default=0) / 2**20


def _cores() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _steal_s() -> float:
    """Machine-wide CPU time stolen by the hypervisor so far (all CPUs; 0 where not reported)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class CpuMeter:
    """CPU seconds used by this process and its child processes over a window."""

    def __init__(self):
        import psutil

        self._me = psutil.Process()
        self._kids = {p.pid: p for p in _children()}
        self._t0 = time.perf_counter()
        self._steal0 = _steal_s()
        self._main0 = self._cpu(self._me)
        self._kids0 = {pid: self._cpu(p) for pid, p in self._kids.items()}

    @staticmethod
    def _cpu(p) -> float:
        try:
            t = p.cpu_times()
            return t.user + t.system
        except Exception:  # a process that exited
            return float("nan")

    def stop(self) -> dict:
        wall = time.perf_counter() - self._t0
        kids = [self._cpu(p) - self._kids0[pid] for pid, p in self._kids.items()]
        kids = [k for k in kids if math.isfinite(k)]
        return dict(wall_s=wall, main_cpu_s=self._cpu(self._me) - self._main0, children_cpu_s=sum(kids),
                    busiest_child_cpu_s=max(kids, default=0.0),
                    # the machine's, not this benchmark's: a VM's cores taken by its host meanwhile
                    steal_s=_steal_s() - self._steal0)


# -- workload ---------------------------------------------------------------------
class ConvLaplaceNet(nn.Module):
    """Small conv encoder (per camera, shared) + MLP -> Laplace mean and scale of a chunk."""

    def __init__(self, *, n_cameras: int, chunk: int, action_dim: int, state_dim: int, channels: int,
                 hidden: int):
        super().__init__()
        from torchrl_ript import ScaleHead

        self.chunk, self.action_dim = chunk, action_dim
        self.encoder = nn.Sequential(
            nn.Conv2d(3, channels, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * channels, 2 * channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        )
        features = n_cameras * 8 * channels + state_dim
        self.trunk = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.mean = nn.Linear(hidden, chunk * action_dim)
        self.scale = ScaleHead(hidden, (chunk, action_dim), hidden=hidden // 2, init_scale=0.3)

    def forward(self, *inputs):
        *images, state = inputs
        feats = [self.encoder(img.float().div(255.0)) for img in images]
        h = self.trunk(torch.cat([*feats, state], -1))
        return torch.tanh(self.mean(h)).unflatten(-1, (self.chunk, self.action_dim)), self.scale(h)


def make_policy(args):
    """The workload's actor (seeded: every path gets the same weights)."""
    from torchrl_ript import make_continuous_actor

    torch.manual_seed(0)
    dims = ENV_DIMS[args.env]
    n_cams = len(args.cameras)
    net = ConvLaplaceNet(n_cameras=n_cams, chunk=args.chunk, action_dim=dims["action"], state_dim=dims["state"],
                         **POLICY_SIZES[args.policy])
    return make_continuous_actor(net, in_keys=[*IMAGE_KEYS[:n_cams], STATE_KEY], event_dims=2)


def n_params(policy) -> int:
    return sum(p.numel() for p in policy.parameters())


def env_fn(args):
    """A picklable maker of the workload's env (the one GroupCollector and the stock paths use).

    ``--instruction dropped`` (default): without the per-step string
    ``language_instruction`` output, as :func:`~torchrl_ript.trainers.factory.make_batched_env`
    runs envs (the policy gets the instruction from the context), so process
    pools exchange through shared memory; ``kept``: the env as it is.
    """
    maker = _env_maker(args)
    return partial(_without_instruction, maker) if args.instruction == "dropped" else maker


def _env_maker(args):
    if args.env == "libero":
        from torchrl_ript.envs.libero import LiberoContextEnv

        return partial(LiberoContextEnv, args.suite, args.task_id, camera_size=args.image_size,
                       wrist_camera=len(args.cameras) == 2, max_episode_steps=args.horizon * args.chunk,
                       action_chunk=args.chunk, render_quality="fast", fast_step=True, seed=0)
    from torchrl_ript.envs.metaworld import MetaWorldEnv

    return partial(MetaWorldEnv, task_names=[args.task], camera_names=tuple(args.cameras),
                   image_size=args.image_size, max_steps=args.horizon * args.chunk, action_chunk=args.chunk,
                   render_quality="fast", seed=0)


def make_stock_libero_env(suite: str, task_id: int, *, image_size: int, wrist: bool, group_repeats: int,
                          max_steps: int, group_id_offset: int = 0):
    """TorchRL's own ``LiberoEnv`` in grouped mode, chunked with TorchRL's ``MultiAction``.

    Everything else is TorchRL's default (rendering quality, observables,
    reset); only the workload's cameras, time limit and group size are set.
    """
    from torchrl.envs import TransformedEnv
    from torchrl.envs.libs.libero import LiberoEnv
    from torchrl.envs.transforms import MultiAction

    from torchrl_ript.envs.libero.setup import ensure_libero

    ensure_libero()  # LIBERO's config file and assets (installation, not speed)
    env = LiberoEnv(suite, task_id, camera_height=image_size, camera_width=image_size,
                    wrist_camera="robot0_eye_in_hand" if wrist else None, group_repeats=group_repeats,
                    group_id_offset=group_id_offset, max_episode_steps=max_steps)
    return TransformedEnv(env, MultiAction(stack_rewards=False))


def make_contexts(args, n: int):
    if args.env == "libero":
        from torchrl_ript.envs.libero.contexts import libero_contexts

        return libero_contexts(args.suite, task_ids=[args.task_id], seed=0)
    from torchrl_ript.envs.metaworld import metaworld_contexts

    return metaworld_contexts([args.task], n, seed=0)


def observed_workload(td, args, *, policy_params: int, horizon: int) -> dict:
    """What a path actually ran, read from its data (not from the command line)."""
    images = {}
    for key in IMAGE_KEYS:
        value = td.get(key, None)
        if value is not None:
            images["/".join(key)] = list(value.shape[-3:])
    action = td.get("action")
    state = td.get(STATE_KEY)
    return dict(env=args.env, task=task_name(args), images=images, action_shape=list(action.shape[-2:]),
                state_dim=int(state.shape[-1]), horizon=int(horizon), policy_params=int(policy_params))


def task_name(args) -> str:
    return f"{args.suite}/{args.task_id}" if args.env == "libero" else args.task


def _result(name, *, slots, decisions, env_steps, rollouts, successes, wall_s, cpu, load, workload, **extra):
    cpu_s = cpu["main_cpu_s"] + cpu["children_cpu_s"]
    out = dict(
        path=name, slots=slots, decisions=int(decisions), env_steps=int(env_steps), rollouts=int(rollouts),
        successes=int(successes), wall_s=wall_s, decisions_per_s=decisions / wall_s,
        env_steps_per_s=env_steps / wall_s, rollouts_per_s=rollouts / wall_s, cpu=cpu,
        load_avg=load, workload=workload,
        # CPU seconds (this process + its children) per decision: unlike a rate,
        # it hardly depends on how much CPU the other jobs on the machine leave
        cpu_ms_per_decision=1e3 * cpu_s / max(decisions, 1),
    )
    out.update(extra)
    return out


def _timed_batches(next_batch, *, measure_s: float, min_batches: int):
    """Whole batches for at least ``measure_s`` seconds (and ``min_batches``)."""
    batches = []
    start = time.perf_counter()
    while len(batches) < min_batches or time.perf_counter() - start < measure_s:
        batches.append(next_batch())
    return batches, time.perf_counter() - start


# -- limit: the simulator alone -----------------------------------------------------
def _results(queue, procs) -> list:
    """One result per process; raises (instead of waiting forever) once a process died without sending one."""
    import queue as queue_mod

    out = []
    while len(out) < len(procs):
        try:
            out.append(queue.get(timeout=5.0))
        except queue_mod.Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"{len(dead)} measurement process(es) died (exit codes "
                                   f"{[p.exitcode for p in dead]}) before sending a result") from None
    return out


def _limit_worker(args, duration: float, barrier, queue) -> None:
    import numpy as np

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    dims = ENV_DIMS[args.env]
    actions = rng.uniform(-1, 1, size=(args.horizon, args.chunk, dims["action"]))
    env = env_fn(args)()
    if args.env == "libero":
        state = make_contexts(args, 1).states[0].numpy()
        sim = env._env

        def reset():
            env.reset_to_state(state)  # placement, state, settle steps, first render

        def act(a):
            env._act(a)  # physics + controller (robosuite's step without observables)
            sim.check_success()  # the task predicate, evaluated per action as the env does

        def render():
            obs = env._observe()  # robosuite observables incl. both cameras
            for cam in sim.env.camera_names:
                np.ascontiguousarray(obs[f"{cam}_image"][::-1, ::-1].transpose(2, 0, 1))
    else:
        from torchrl_ript.envs.metaworld import _ROTATED_CAMERAS, _context_reset, rand_vec_dim, sample_rand_vecs

        raw, renderer = env._sim(0)
        shapes = {}
        vec = sample_rand_vecs(args.task, 1, seed=0)[0][: rand_vec_dim(args.task)]

        def render():
            for cam in args.cameras:
                renderer.update_scene(raw.data, camera=cam)
                img = renderer.render()
                if cam in _ROTATED_CAMERAS:
                    img = img[::-1, ::-1]
                shapes[cam] = list(np.ascontiguousarray(img.transpose(2, 0, 1)).shape)

        def reset():
            _context_reset(raw, vec)
            render()

        def act(a):
            raw.step(a)

    reset()  # warm-up (GL context, first render)
    barrier.wait()
    sim_s = render_s = reset_s = 0.0
    rollouts = 0
    start = time.perf_counter()
    cpu0 = time.process_time()
    while time.perf_counter() - start < duration:  # whole rollouts for ~duration seconds
        t0 = time.perf_counter()
        reset()
        reset_s += time.perf_counter() - t0
        for t in range(args.horizon):
            t0 = time.perf_counter()
            for a in actions[t]:
                act(a)
            t1 = time.perf_counter()
            render()
            sim_s += t1 - t0
            render_s += time.perf_counter() - t1
        rollouts += 1
    wall = time.perf_counter() - start
    if args.env == "libero":
        image = [list(env._read_image(env._observe()[f"{c}_image"]).shape) for c in sim.env.camera_names]
    else:
        image = [shapes[c] for c in args.cameras]
    queue.put(dict(wall_s=wall, cpu_s=time.process_time() - cpu0, sim_s=sim_s, render_s=render_s,
                   reset_s=reset_s, rollouts=rollouts, decisions=rollouts * args.horizon,
                   peak_rss=_vm("self", "VmHWM"), images=image))


def measure_limit(args, n: int, duration: float, policy_params: int) -> dict:
    """N simulator processes at once, each for ~``duration`` s; the limit is the sum of their rates."""
    ctx = mp.get_context(START_METHOD)
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    load0, steal0 = _load(), _steal_s()
    procs = [ctx.Process(target=_limit_worker, args=(args, duration, barrier, queue)) for _ in range(n)]
    for p in procs:
        p.start()
    results = _results(queue, procs)
    for p in procs:
        p.join()
    decisions = sum(r["decisions"] for r in results)
    per_s = sum(r["decisions"] / r["wall_s"] for r in results)
    wall = statistics.mean(r["wall_s"] for r in results)
    per_decision = {k[:-2]: 1e3 * sum(r[k] for r in results) / decisions for k in ("sim_s", "render_s", "reset_s")}
    dims = ENV_DIMS[args.env]
    images = {"/".join(k): s for k, s in zip(IMAGE_KEYS, results[0]["images"])}  # rendered, as read back
    workload = dict(env=args.env, task=task_name(args), images=images, action_shape=[args.chunk, dims["action"]],
                    state_dim=dims["state"], horizon=args.horizon, policy_params=policy_params)
    # the sum of per-process rates (each ran ~duration s at the same time)
    out = _result("limit", slots=n, decisions=per_s * wall, env_steps=per_s * wall * args.chunk,
                  rollouts=per_s * wall / args.horizon, successes=0, wall_s=wall,
                  cpu=dict(wall_s=wall, children_cpu_s=sum(r["cpu_s"] for r in results),
                           busiest_child_cpu_s=max(r["cpu_s"] for r in results), main_cpu_s=0.0,
                           steal_s=_steal_s() - steal0),  # over the workers' start-up too
                  load=[load0, _load()], workload=workload,
                  per_decision_ms=per_decision, worker_peak_rss_mb=max(r["peak_rss"] for r in results) / 2**20,
                  counted_decisions=decisions, counted_rollouts=sum(r["rollouts"] for r in results))
    out["decisions_per_s"] = per_s
    out["cpu_ms_per_decision"] = 1e3 * out["cpu"]["children_cpu_s"] / decisions
    out["env_steps_per_s"] = per_s * args.chunk
    out["rollouts_per_s"] = per_s / args.horizon
    return out


def _mean_limit(runs: list[dict]) -> dict:
    out = dict(runs[0])
    for key in ("decisions_per_s", "env_steps_per_s", "rollouts_per_s"):
        out[key] = sum(r[key] for r in runs) / len(runs)
    out["per_decision_ms"] = {k: sum(r["per_decision_ms"][k] for r in runs) / len(runs)
                              for k in runs[0]["per_decision_ms"]}
    out["runs_decisions_per_s"] = [r["decisions_per_s"] for r in runs]
    out["cpu_ms_per_decision"] = statistics.mean(r["cpu_ms_per_decision"] for r in runs)
    out["load_avg"] = [runs[0]["load_avg"][0], runs[-1]["load_avg"][-1]]
    return out


# -- the policy alone (the bound's second component) ------------------------------------
def _policy_worker(args, batch_sizes: list[int], seconds: float, queue) -> None:
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    try:
        torch.set_num_threads(args.policy_threads)  # as in the process that runs it in every path
        policy = make_policy(args)
        env = env_fn(args)()
        try:  # a real observation of the workload (keys, dtypes, shapes)
            obs = env.reset().select(*policy.in_keys, strict=True)
        finally:
            env.close()
        rows = {}
        with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):  # sampling, as the paths run it
            for b in batch_sizes:
                td = obs.expand(b).clone()
                for _ in range(3):  # warm-up (allocator, first-call paths)
                    policy(td)
                calls = 0
                w0, c0 = time.perf_counter(), time.process_time()
                while calls < 5 or time.perf_counter() - w0 < seconds:
                    policy(td)
                    calls += 1
                cpu, wall = time.process_time() - c0, time.perf_counter() - w0
                rows[str(b)] = dict(batch=b, calls=calls, cpu_ms_per_call=1e3 * cpu / calls,
                                    cpu_ms_per_decision=1e3 * cpu / (calls * b), wall_ms_per_call=1e3 * wall / calls)
        queue.put(rows)
    except Exception as err:  # reported by the parent
        queue.put(f"{type(err).__name__}: {err}")


def policy_batch_sizes(args) -> list[int]:
    """Every batch size a path's policy call can have: 1 .. the largest slot count, and K (sequential)."""
    return sorted(set(range(1, max(args.slot_counts) + 1)) | {args.k})


def measure_policy(args) -> dict:
    """CPU time of the workload's policy alone per call and per decision, at every batch size the paths form.

    A fresh process (nothing else of this benchmark running in it) with the
    paths' torch threads; process CPU time, so every thread the policy uses
    counts. Returns ``{str(batch): row}``.
    """
    ctx = mp.get_context(START_METHOD)
    queue = ctx.Queue()
    proc = ctx.Process(target=_policy_worker, args=(args, policy_batch_sizes(args), args.policy_s, queue))
    proc.start()
    (rows,) = _results(queue, [proc])
    proc.join()
    if isinstance(rows, str):
        raise RuntimeError(f"policy timing failed: {rows}")
    return rows


def _count_policy_calls(policy) -> dict:
    """Batch size -> number of calls of ``policy`` from now on (a forward pre-hook; a dict add per call)."""
    calls: dict[str, int] = {}

    def hook(module, args, kwargs):
        td = args[0] if args else kwargs.get("tensordict")
        if td is not None:
            b = str(td.batch_size.numel())
            calls[b] = calls.get(b, 0) + 1

    policy.register_forward_pre_hook(hook, with_kwargs=True)
    return calls


def _calls_since(calls: dict, before: dict) -> dict:
    out = {b: n - before.get(b, 0) for b, n in calls.items()}
    return {b: n for b, n in sorted(out.items(), key=lambda x: int(x[0])) if n}


# -- TorchRL: ParallelEnv + Collector ---------------------------------------------------
def _stock_env(args, n: int, libero_env: bool):
    from torchrl.envs import ParallelEnv

    if libero_env:
        makers = [partial(make_stock_libero_env, args.suite, args.task_id, image_size=args.image_size,
                          wrist=len(args.cameras) == 2, group_repeats=args.k, max_steps=args.horizon * args.chunk,
                          group_id_offset=i * 10**6) for i in range(n)]
        return ParallelEnv(n, makers, mp_start_method=START_METHOD)
    return ParallelEnv(n, env_fn(args), mp_start_method=START_METHOD)


def _count(batch, args) -> dict:
    """Decisions, rollouts (done flags), env steps (as the env counted them) and successes of a batch."""
    nxt = batch.get("next")
    done = nxt.get("done")
    env_steps = nxt.get("env_steps", None)
    return dict(decisions=batch.numel(), rollouts=int(done.sum()),
                env_steps=int(env_steps.sum()) if env_steps is not None else batch.numel() * args.chunk,
                env_steps_from_env=env_steps is not None,
                successes=int(nxt.get("success", torch.zeros(1, dtype=torch.bool)).sum()))


def _sum_counts(counts: list[dict]) -> dict:
    out = {k: sum(c[k] for c in counts) for k in ("decisions", "rollouts", "env_steps", "successes")}
    out["env_steps_from_env"] = all(c["env_steps_from_env"] for c in counts)
    return out


def measure_collector(args, n: int, *, libero_env: bool = False) -> dict:
    """TorchRL's stock path: ``ParallelEnv(n)`` + ``Collector`` (one rollout per env per batch)."""
    from torchrl.collectors import Collector

    policy = make_policy(args)
    calls = _count_policy_calls(policy)
    _reset_peak_rss()
    env = _stock_env(args, n, libero_env)
    # use_buffers=False: TorchRL's default preallocated buffers fail to stack this
    # workload's rollouts (a non-tensor language_instruction, or, without it, a
    # TypeError in Collector.rollout's torch.stack on torchrl 0.14.1)
    collector = Collector(env, policy, frames_per_batch=n * args.horizon, total_frames=-1,
                          use_buffers=False, auto_register_policy_transforms=False)
    it = iter(collector)
    next(it)  # warm-up: workers start, first resets
    load0, cpu, calls0 = _load(), CpuMeter(), dict(calls)
    batches, wall = _timed_batches(lambda: next(it), measure_s=args.measure_s, min_batches=args.min_batches)  # noqa: F821 (a closure over a name del'd after use)
    cpu = cpu.stop()
    counts = _sum_counts([_count(b, args) for b in batches])
    last = batches[-1]
    out = _result("collector_libero_env" if libero_env else "collector", slots=n, wall_s=wall, cpu=cpu,
                  load=[load0, _load()], **{k: v for k, v in counts.items() if k != "env_steps_from_env"},
                  workload=observed_workload(last, args, policy_params=n_params(policy), horizon=args.horizon),
                  env_steps_from_env=counts["env_steps_from_env"], batches=len(batches),
                  policy_calls=_calls_since(calls, calls0),
                  bytes_per_rollout=last.bytes() / max(last.numel() / args.horizon, 1),
                  main_peak_rss_mb=_vm("self", "VmHWM") / 2**20, worker_peak_rss_mb=_children_peak_rss_mb())
    collector.shutdown()
    del collector, it
    return out


# -- TorchRL: AsyncBatchedCollector ------------------------------------------------------
def _policy_factory(args):
    # runs in AsyncBatchedCollector's inference process: same threads as our main process
    torch.set_num_threads(args.policy_threads)
    return make_policy(args)


def _process_slot_transport(args, n: int, policy):
    """The transport ``transport="auto"`` derives, with a forkserver context (see the module doc)."""
    from torchrl.modules.inference_server import ProcessSlotTransport

    env = env_fn(args)()
    try:
        fake = env.fake_tensordict()
    finally:
        env.close()
    request = fake.select(*policy.in_keys, strict=True).cpu()
    with torch.no_grad():
        output = policy(request.clone().unsqueeze(0)).squeeze(0)
    response = output.select(*policy.out_keys, strict=True).cpu()
    response.set("policy_version", torch.zeros(response.batch_size, dtype=torch.long))
    return ProcessSlotTransport(request, response, num_slots=n, ctx=mp.get_context(START_METHOD))


def measure_async_batched(args, n: int, *, driver: bool = False) -> dict:
    from torchrl.collectors import AsyncBatchedCollector

    policy = make_policy(args)
    calls = _count_policy_calls(policy)  # only this process's calls: the driver transport's
    _reset_peak_rss()
    kwargs = dict(transport="driver", policy=policy) if driver else dict(
        transport=_process_slot_transport(args, n, policy), policy_factory=partial(_policy_factory, args))
    collector = AsyncBatchedCollector([env_fn(args)] * n, frames_per_batch=n * args.horizon,
                                      env_backend="multiprocessing", transition_chunk_size="auto", **kwargs)
    it = iter(collector)
    next(it)  # warm-up: workers and the inference server start
    load0, cpu, calls0 = _load(), CpuMeter(), dict(calls)
    batches, wall = _timed_batches(lambda: next(it), measure_s=args.measure_s, min_batches=args.min_batches)  # noqa: F821 (a closure over a name del'd after use)
    cpu = cpu.stop()
    counts = _sum_counts([_count(b, args) for b in batches])
    last = batches[-1]
    out = _result("async_batched_driver" if driver else "async_batched", slots=n, wall_s=wall, cpu=cpu,
                  load=[load0, _load()], **{k: v for k, v in counts.items() if k != "env_steps_from_env"},
                  workload=observed_workload(last, args, policy_params=n_params(policy), horizon=args.horizon),
                  env_steps_from_env=counts["env_steps_from_env"], batches=len(batches),
                  transport="driver" if driver else "process_slots",
                  # process slots: the policy runs in TorchRL's inference process, its calls are not counted
                  policy_calls=_calls_since(calls, calls0) if driver else None,
                  transition_chunk_size=collector._transition_chunk_size,
                  bytes_per_rollout=last.bytes() / max(last.numel() / args.horizon, 1),
                  main_peak_rss_mb=_vm("self", "VmHWM") / 2**20, worker_peak_rss_mb=_children_peak_rss_mb())
    collector.shutdown()
    del collector, it
    return out


# -- RIPT-style sequential waves ------------------------------------------------------
def measure_sequential(args) -> dict:
    from torchrl.envs import ParallelEnv
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    from torchrl_ript.envs.common import context_reset_td

    policy = make_policy(args)
    calls = _count_policy_calls(policy)
    contexts = make_contexts(args, 64)
    k = args.k
    _reset_peak_rss()
    env = ParallelEnv(k, env_fn(args), mp_start_method=START_METHOD)
    env.reset()  # warm-up: workers start
    counts = dict(decisions=0, rollouts=0, env_steps=0, successes=0)
    last = None

    def one_context():
        nonlocal last
        ids = torch.full((k,), counts["rollouts"] // k % len(contexts))
        td = env.reset(context_reset_td(contexts.initial_states(ids), contexts.task_ids[ids]))
        done = torch.zeros(k, dtype=torch.bool)
        trajectory = []
        for _ in range(args.horizon):
            td = policy(td)
            active = ~done
            td.set("_step", active.unsqueeze(-1))
            td = env.step(td)
            trajectory.append(td.exclude("next").clone())  # what the RIPT loop keeps per step
            nxt = td.get("next")
            counts["decisions"] += int(active.sum())
            counts["env_steps"] += int(nxt.get("env_steps").reshape(k)[active].sum())
            counts["successes"] += int(nxt.get("success").reshape(k)[active].sum())
            done = done | nxt.get("done").reshape(k)
            td = nxt.exclude("_step")
            if bool(done.all()):
                break
        counts["rollouts"] += k
        last = trajectory[-1]

    load0, cpu, calls0 = _load(), CpuMeter(), dict(calls)
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        _, wall = _timed_batches(one_context, measure_s=args.measure_s, min_batches=args.min_batches)
    cpu = cpu.stop()
    out = _result("sequential", slots=k, wall_s=wall, cpu=cpu, load=[load0, _load()], **counts,
                  workload=observed_workload(last, args, policy_params=n_params(policy), horizon=args.horizon),
                  policy_calls=_calls_since(calls, calls0),
                  main_peak_rss_mb=_vm("self", "VmHWM") / 2**20, worker_peak_rss_mb=_children_peak_rss_mb())
    env.close()
    return out


def _without_instruction(maker):
    """The env without its per-step non-tensor ``language_instruction``."""
    from torchrl.envs import ExcludeTransform, TransformedEnv

    return TransformedEnv(maker(), ExcludeTransform("language_instruction"))


# -- GroupCollector ---------------------------------------------------------------------
def measure_group(args, slots: int, *, name: str = "group", lockstep: bool = False, keep_in_flight: bool = False,
                  k: int | None = None, contexts_n: int | None = None, horizon: int | None = None,
                  measure_s: float | None = None, min_batches: int | None = None, profile: bool = False,
                  ) -> dict:
    from torchrl_ript import GroupCollector
    from torchrl_ript.trainers.factory import make_batched_env

    k = k or args.k
    contexts_n = contexts_n or args.contexts
    if horizon is not None and horizon != args.horizon:
        args = argparse.Namespace(**{**vars(args), "horizon": horizon})
    policy = make_policy(args)
    calls = _count_policy_calls(policy)
    contexts = make_contexts(args, 64)
    _reset_peak_rss()
    rss_start = _vm("self", "VmRSS") / 2**20
    # the library's pool; env_fn already dropped (or kept) the instruction
    pool = make_batched_env(env_fn(args), slots, instruction_key=None)
    collector = GroupCollector(
        pool, policy, context_dataset=contexts, group_size=k, trajs_per_batch=k * contexts_n,
        max_frames_per_traj=args.horizon, dynamic_sampling=False, keep_in_flight=keep_in_flight,
        lockstep=lockstep, seed=0, observation_keys=[*IMAGE_KEYS[: len(args.cameras)], STATE_KEY],
    )
    it = iter(collector)
    next(it)  # warm-up: workers start
    stats = []

    def next_batch():
        batch = next(it)  # noqa: F821 (a closure over a name del'd after use)
        stats.append(collector.last_stats)  # noqa: F821 (a closure over a name del'd after use)
        return batch

    prof = cProfile.Profile() if profile else None
    if prof:
        prof.enable()
    load0, cpu, calls0 = _load(), CpuMeter(), dict(calls)
    batches, wall = _timed_batches(next_batch, measure_s=measure_s or args.measure_s,
                                   min_batches=min_batches or args.min_batches)
    cpu = cpu.stop()
    if prof:
        prof.disable()
    worker_rss = _children_peak_rss_mb()
    main_rss = _vm("self", "VmHWM") / 2**20
    exchange = pool.resolved_exchange if hasattr(pool, "resolved_exchange") else None
    collector.shutdown()
    del collector, it

    def total(field):
        return sum(getattr(s, field) for s in stats)

    last = batches[-1]
    delivered = sum(int(b.get("length").sum()) for b in batches)
    times = {f: total(f) for f in ("policy_s", "env_wait_s", "reset_s", "bookkeeping_s")}
    stats_wall = total("wall_s")
    out = _result(
        name, slots=slots, wall_s=wall, cpu=cpu, load=[load0, _load()],
        decisions=delivered, env_steps=sum(int(b.get("env_steps").sum()) for b in batches),
        rollouts=sum(b.numel() for b in batches), successes=sum(int(b.get("success").sum()) for b in batches),
        workload=observed_workload(last.get("steps")[0], args, policy_params=n_params(policy),
                                   horizon=int(last.get("length").max())),
        k=k, contexts=contexts_n, trajs_per_batch=k * contexts_n, lockstep=lockstep, keep_in_flight=keep_in_flight,
        exchange=exchange, batches=len(batches), wall_per_batch_s=wall / len(batches),
        policy_calls=_calls_since(calls, calls0),
        simulated_decisions=total("decision_steps"), simulated_env_steps=total("env_steps"),
        rollouts_finished=total("rollouts_finished"), rollouts_discarded=total("rollouts_discarded"),
        rollouts_carried=[s.rollouts_carried for s in stats], max_staleness=max(s.max_staleness for s in stats),
        time_breakdown=dict(stats_wall_s=stats_wall, **times, other_s=stats_wall - sum(times.values())),
        bytes_per_rollout=last.bytes() / last.numel(), batch_bytes=last.bytes(),
        main_peak_rss_mb=main_rss, main_rss_start_mb=rss_start, worker_peak_rss_mb=worker_rss,
    )
    if prof:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(30)
        out["profile"] = s.getvalue()
    return out


# -- driver ---------------------------------------------------------------------------------
def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--env", default="metaworld", choices=["metaworld", "libero"])
    p.add_argument("--task", default="reach-v3", help="MetaWorld task")
    p.add_argument("--suite", default="libero_spatial", help="LIBERO suite")
    p.add_argument("--task-id", type=int, default=0, help="LIBERO task id in the suite")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--cameras", nargs="+", default=None,
                   help="MetaWorld cameras (default corner2); LIBERO: 2 = agentview + eye-in-hand (default)")
    p.add_argument("--k", type=int, default=None, help="rollouts per context (group size); default 4 (LIBERO 2)")
    p.add_argument("--contexts", type=int, default=2, help="contexts per GroupCollector batch")
    p.add_argument("--horizon", type=int, default=None, help="decisions per rollout; default 25 (LIBERO 12)")
    p.add_argument("--chunk", type=int, default=8, help="raw env steps per decision")
    p.add_argument("--policy", default="small", choices=sorted(POLICY_SIZES))
    p.add_argument("--slots", "--workers", dest="slots", type=int, default=min(_cores(), 16),
                   help="simulator processes of the limit, env processes of the growth / in-flight sweeps and "
                        "the base of the default --slot-counts (default: the number of cores)")
    p.add_argument("--slot-counts", type=int, nargs="+", default=None,
                   help="env slots every swept path runs at (default: --slots x 1 2 3; LIBERO and --quick x 1 2)")
    p.add_argument("--rounds", type=int, default=3, help="rounds over all paths (order rotates)")
    p.add_argument("--measure-s", type=float, default=12.0, help="seconds each path is timed per round")
    p.add_argument("--min-batches", type=int, default=2)
    p.add_argument("--limit-s", type=float, default=8.0, help="seconds each limit measurement runs")
    p.add_argument("--policy-s", type=float, default=1.0,
                   help="seconds the policy alone is timed per batch size, once per round (the bound)")
    p.add_argument("--policy-threads", type=int, default=1,
                   help="torch threads of the process running the policy (all paths)")
    p.add_argument("--driver", action="store_true", help="also AsyncBatchedCollector(transport='driver')")
    p.add_argument("--no-sequential", action="store_true", help="skip the sequential RIPT loop")
    p.add_argument("--instruction", choices=["dropped", "kept"], default="dropped",
                   help="every path's env without (default, as make_batched_env runs envs: shared-memory "
                        "exchange) or with its per-step string language_instruction (queue exchange)")
    p.add_argument("--growth", action="store_true", help="sweep K, B, horizon and slots")
    p.add_argument("--in-flight", action="store_true", help="keep_in_flight off/on at K=8, B=32/64")
    p.add_argument("--in-flight-slots", type=int, nargs="*", default=None,
                   help="slot counts of the --in-flight sweep (default: --slots)")
    p.add_argument("--sim-sweep", action="store_true",
                   help="the simulator alone at every --slot-counts (diagnostic: what over-subscription costs "
                        "the simulation; the limit itself stays at --slots)")
    p.add_argument("--sweeps-only", action="store_true",
                   help="only --growth / --in-flight / --sim-sweep / --profile")
    p.add_argument("--profile", action="store_true", help="cProfile GroupCollector's main process")
    p.add_argument("--quick", action="store_true",
                   help="tiny images, short horizons, one round, slots x 1 2 (< 3 min on 2 cores)")
    p.add_argument("--out", default=None,
                   help="JSON output (default results/collector_throughput[_libero][_quick][_sweeps].json)")
    if "--quick" in (sys.argv[1:] if argv is None else argv):
        # the quick workload; options given on the command line still win
        p.set_defaults(image_size=32, horizon=6, chunk=4, k=2, contexts=2, policy="tiny", rounds=1, measure_s=2.5,
                       min_batches=2, limit_s=2.0, policy_s=0.3)
    args = p.parse_args(argv)
    libero = args.env == "libero"
    if args.cameras is None:
        args.cameras = ["agentview", "robot0_eye_in_hand"] if libero else ["corner2"]
    if libero and len(args.cameras) not in (1, 2):
        p.error("--env libero renders agentview (+ eye-in-hand): give 1 or 2 camera names")
    if args.k is None:
        args.k = 2 if libero else 4
    if args.horizon is None:
        args.horizon = 12 if libero else 25
    if args.slot_counts is None:
        args.slot_counts = [m * args.slots for m in ((1, 2) if libero or args.quick else (1, 2, 3))]
    if min(args.slot_counts) < 1:
        p.error("--slot-counts: at least one env slot")
    args.slot_counts = sorted(set(args.slot_counts))
    if args.out is None:
        args.out = os.path.join(RESULTS, "collector_throughput" + ("_libero" if libero else "")
                                + ("_quick" if args.quick else "") + ("_sweeps" if args.sweeps_only else "") + ".json")
    return args


def _median_path(runs: list[dict]) -> dict:
    """A path over rounds: the median round's figures, each round's rate and load."""
    rates = [r["decisions_per_s"] for r in runs]
    med = statistics.median(rates)
    out = dict(min(runs, key=lambda r: abs(r["decisions_per_s"] - med)))
    for key in ("decisions_per_s", "env_steps_per_s", "rollouts_per_s", "cpu_ms_per_decision"):
        out[key] = statistics.median(r[key] for r in runs)
    out["rounds_decisions_per_s"] = rates
    out["rounds_load_avg"] = [r["load_avg"] for r in runs]
    for key in ("decisions", "env_steps", "rollouts", "successes", "wall_s"):
        out["total_" + key] = sum(r[key] for r in runs)
    return out


def _plan(args) -> list[tuple[str, int, object]]:
    """(path, slots, measure) for every measurement of a round: swept paths at every slot count."""
    measures = {
        "collector": lambda n: measure_collector(args, n),
        "collector_libero_env": lambda n: measure_collector(args, n, libero_env=True),
        "async_batched": lambda n: measure_async_batched(args, n),
        "async_batched_driver": lambda n: measure_async_batched(args, n, driver=True),
        "group": lambda n: measure_group(args, n),
        "group_lockstep": lambda n: measure_group(args, n, name="group_lockstep", lockstep=True),
        # with more slots than a batch's last groups need, keep_in_flight=False drops
        # up to (slots - 1) rollouts per batch; this one carries them over instead
        "group_keep": lambda n: measure_group(args, n, name="group_keep", keep_in_flight=True),
    }
    names = ["collector", *(["collector_libero_env"] if args.env == "libero" else []), "async_batched",
             *(["async_batched_driver"] if args.driver else []), "group", "group_lockstep", "group_keep"]
    plan = [(name, n, partial(measures[name], n)) for name in names for n in args.slot_counts]
    if not args.no_sequential:
        plan.insert(len(plan) - 3 * len(args.slot_counts), ("sequential", args.k, partial(measure_sequential, args)))
    return plan


def run_paths(args, policy_params: int) -> tuple[dict, dict, list[dict]]:
    """Every (path, slot count) in ``--rounds`` rounds; medians over rounds, each swept path at its best slot count.

    Returns the paths, the policy table (median over rounds) and the rounds.
    """
    n = args.slots
    plan = _plan(args)
    runs: dict[tuple[str, int], list[dict]] = {(name, slots): [] for name, slots, _ in plan}
    rounds = []
    for r in range(args.rounds):
        shift = r * len(plan) // args.rounds  # rotate: each round starts at another point of the plan
        order = plan[shift:] + plan[:shift]
        limits = [measure_limit(args, n, args.limit_s, policy_params)]
        policy = measure_policy(args)
        print(f"  round {r + 1}/{args.rounds} policy alone, CPU ms per decision by batch: "
              + ", ".join(f"{b}: {row['cpu_ms_per_decision']:.2f}" for b, row in policy.items()),
              file=sys.stderr, flush=True)
        this = {}
        for name, slots, fn in order:
            rec = this[(name, slots)] = fn()
            runs[(name, slots)].append(rec)
            print(f"  round {r + 1}/{args.rounds} {name:<22}{slots:>3} slots {rec['decisions_per_s']:8.1f} decisions/s "
                  f"(load {rec['load_avg']})", file=sys.stderr, flush=True)
        if args.rounds > 1 or not args.quick:
            limits.append(measure_limit(args, n, args.limit_s, policy_params))
        rounds.append(dict(limit=_mean_limit(limits), policy=policy, paths=this))
    paths = {"limit": _median_path([t["limit"] for t in rounds])}
    medians = {key: _median_path(rs) for key, rs in runs.items()}
    for name in dict.fromkeys(name for name, _, _ in plan):
        by_slots = {slots: rec for (p, slots), rec in medians.items() if p == name}
        if name in SWEPT_PATHS:
            best = max(sorted(by_slots), key=lambda s: by_slots[s]["decisions_per_s"])  # ties: fewer slots
            paths[name] = dict(by_slots[best], best_slots=best,
                               by_slots={str(s): by_slots[s] for s in sorted(by_slots)})
        else:
            (paths[name],) = by_slots.values()
    return paths, _median_policy([t["policy"] for t in rounds]), rounds


def _median_policy(runs: list[dict]) -> dict:
    """The policy table over rounds: per batch size, the median of each figure and every round's CPU per decision."""
    out = {}
    for b in runs[0]:
        rows = [r[b] for r in runs]
        out[b] = dict(batch=rows[0]["batch"], calls=sum(r["calls"] for r in rows),
                      **{k: statistics.median(r[k] for r in rows)
                         for k in ("cpu_ms_per_call", "cpu_ms_per_decision", "wall_ms_per_call")},
                      rounds_cpu_ms_per_decision=[r["cpu_ms_per_decision"] for r in rows])
    return out


def _bound(sim_cpu_ms: float, policy: dict, cores: int) -> dict:
    """The bound: ``cores`` fully busy with simulation and the cheapest policy batch, nothing else."""
    cheapest = min(policy.values(), key=lambda row: row["cpu_ms_per_decision"])
    policy_ms = cheapest["cpu_ms_per_decision"]
    return dict(
        cores=cores, sim_cpu_ms_per_decision=sim_cpu_ms, policy_cpu_ms_per_decision=policy_ms,
        bound_decisions_per_s=cores * 1e3 / (sim_cpu_ms + policy_ms),
        formula="cores * 1000 / (sim_cpu_ms_per_decision + policy_cpu_ms_per_decision)",
        sim_from="limit: its simulator processes' CPU time per decision (median over rounds)",
        policy_from="the policy alone in a fresh process, process CPU time per decision at its cheapest batch "
                    "size (median over rounds)",
        policy_batch=cheapest["batch"],
        policy_cpu_ms_per_decision_by_batch={b: row["cpu_ms_per_decision"] for b, row in policy.items()},
        policy_by_batch=policy,
    )


def _best(paths: dict, names) -> str:
    rates = {p: paths[p]["decisions_per_s"] for p in names if p in paths}
    return max(rates, key=rates.get)


def _ratios(paths: dict, bound: dict) -> dict:
    best_group = _best(paths, GROUP_PATHS)
    best_stock = _best(paths, STOCK_PATHS)
    group = paths[best_group]["decisions_per_s"]
    out = dict(group_vs_bound=group / bound["bound_decisions_per_s"],
               group_vs_stock=group / paths[best_stock]["decisions_per_s"],
               group_vs_limit=group / paths["limit"]["decisions_per_s"],
               best_group_path=best_group, best_stock_path=best_stock,
               best_slots={p: r["best_slots"] for p, r in paths.items() if "best_slots" in r},
               group_vs_async_batched=group / paths["async_batched"]["decisions_per_s"],
               group_vs_collector=group / paths["collector"]["decisions_per_s"])
    # how much more CPU a delivered decision costs than a bare simulator decision
    out["group_cpu_vs_limit"] = paths[best_group]["cpu_ms_per_decision"] / paths["limit"]["cpu_ms_per_decision"]
    out["stock_vs_bound"] = paths[best_stock]["decisions_per_s"] / bound["bound_decisions_per_s"]
    out["limit_vs_bound"] = paths["limit"]["decisions_per_s"] / bound["bound_decisions_per_s"]
    if "collector_libero_env" in paths:
        out["group_vs_libero_env_collector"] = group / paths["collector_libero_env"]["decisions_per_s"]
    if "sequential" in paths:
        out["group_vs_sequential"] = group / paths["sequential"]["decisions_per_s"]
    return out


def cpu_accounting(rec: dict, *, sim_cpu_ms: float, policy: dict, cores: int) -> dict:
    """A path's core time per delivered decision, split: idle, simulator, policy, the rest (collection).

    From the path's own timed window (wall, CPU of this process and its
    children, delivered decisions): ``core_ms = idle + sim + wasted_sim +
    policy + collection``. ``sim`` is the limit's CPU per decision,
    ``wasted_sim`` the same for the decisions simulated in the window minus
    those delivered (GroupCollector's dropped rollouts; with
    ``keep_in_flight`` the net of rollouts carried out of and into the
    window, so it can be slightly negative), ``policy`` the policy table at the
    batch sizes of the path's own policy calls (None where they were not
    counted: then ``collection`` is None and ``children_other_ms`` includes
    the policy).
    """
    d = rec["decisions"]
    cpu = rec["cpu"]
    main, kids = 1e3 * cpu["main_cpu_s"] / d, 1e3 * cpu["children_cpu_s"] / d
    core = 1e3 * cores * cpu["wall_s"] / d
    wasted = sim_cpu_ms * (rec.get("simulated_decisions", d) - d) / d
    calls = rec.get("policy_calls")
    pol = None
    if calls is not None and all(b in policy for b in calls):
        pol = sum(n * policy[b]["cpu_ms_per_call"] for b, n in calls.items()) / d
    n_calls = sum(calls.values()) if calls else 0
    return dict(
        slots=rec["slots"], core_ms=core, idle_ms=core - main - kids, cpu_ms=main + kids, main_cpu_ms=main,
        children_cpu_ms=kids, sim_ms=sim_cpu_ms, wasted_sim_ms=wasted, policy_ms=pol,
        policy_calls_per_decision=n_calls / d if calls is not None else None,
        policy_mean_batch=sum(int(b) * n for b, n in calls.items()) / n_calls if n_calls else None,
        collection_ms=None if pol is None else main + kids - sim_cpu_ms - wasted - pol,
        main_other_ms=None if pol is None else main - pol,  # the policy runs in this process where counted
        children_other_ms=kids - sim_cpu_ms - wasted,
    )


def sim_sweep(args, policy_params: int) -> dict:
    """The simulator alone (the limit's processes) at every ``--slot-counts``, ``--rounds`` times interleaved.

    A diagnostic, not the limit (that stays at ``--slots``): what running
    more simulator processes than cores costs the simulation itself (CPU per
    decision: context switches, caches), with no policy and no collector.
    """
    runs: dict[int, list[dict]] = {n: [] for n in args.slot_counts}
    for r in range(args.rounds):
        for n in args.slot_counts:
            lim = measure_limit(args, n, args.limit_s, policy_params)
            runs[n].append(lim)
            print(f"  sim-sweep {r + 1}/{args.rounds} {n} processes: {lim['decisions_per_s']:.1f} decisions/s, "
                  f"{lim['cpu_ms_per_decision']:.2f} CPU ms per decision (load {lim['load_avg']})",
                  file=sys.stderr, flush=True)
    out = {}
    for n, rs in runs.items():
        out[str(n)] = dict(
            slots=n, decisions_per_s=statistics.median(x["decisions_per_s"] for x in rs),
            cpu_ms_per_decision=statistics.median(x["cpu_ms_per_decision"] for x in rs),
            rounds_decisions_per_s=[x["decisions_per_s"] for x in rs],
            rounds_cpu_ms_per_decision=[x["cpu_ms_per_decision"] for x in rs],
            rounds_load_avg=[x["load_avg"] for x in rs], rounds_steal_s=[x["cpu"]["steal_s"] for x in rs])
    return out


def _growth_child(args, cfg: dict, queue) -> None:
    try:
        mp.set_forkserver_preload(PRELOAD)
        mp.set_start_method(START_METHOD, force=True)
        torch.set_num_threads(args.policy_threads)
        r = measure_group(args, cfg["slots"], name="growth", k=cfg["k"], contexts_n=cfg["contexts"],
                          horizon=cfg["horizon"], measure_s=0.0, min_batches=2)
        queue.put(r)
    except Exception as err:  # reported by the parent
        queue.put(f"{type(err).__name__}: {err}")


def growth_sweep(args) -> dict:
    """How a GroupCollector batch's time and memory grow with K, B, horizon and slots."""
    n = args.slots
    base = dict(k=args.k, contexts=args.contexts, horizon=args.horizon, slots=n)
    sweeps = dict(k=[2, 4, 8], contexts=[1, 2, 4], horizon=[max(1, args.horizon // 2), args.horizon, 2 * args.horizon],
                  slots=sorted({1, n, 2 * n}))
    rows = []
    for vary, values in sweeps.items():
        for v in values:
            cfg = {**base, vary: v}
            # a fresh process per configuration: its peak RSS is this configuration's
            # alone (memory freed by an earlier one stays in this process's allocator)
            ctx = mp.get_context("spawn")
            queue = ctx.Queue()
            child = ctx.Process(target=_growth_child, args=(args, cfg, queue))
            child.start()
            r = queue.get()
            child.join()
            if isinstance(r, str):
                raise RuntimeError(f"growth configuration {cfg} failed: {r}")
            row = dict(vary=vary, **cfg, trajs_per_batch=cfg["k"] * cfg["contexts"],
                       wall_per_batch_s=r["wall_per_batch_s"], decisions_per_s=r["decisions_per_s"],
                       decisions_per_batch=r["decisions"] / r["batches"], bytes_per_rollout=r["bytes_per_rollout"],
                       batch_mb=r["batch_bytes"] / 2**20, main_peak_rss_mb=r["main_peak_rss_mb"],
                       main_rss_start_mb=r["main_rss_start_mb"],
                       main_peak_growth_mb=r["main_peak_rss_mb"] - r["main_rss_start_mb"],
                       worker_peak_rss_mb=r["worker_peak_rss_mb"], load_avg=r["load_avg"])
            rows.append(row)
            print(f"  growth {vary}={v}: {row['wall_per_batch_s']:.2f} s/batch, main peak {row['main_peak_rss_mb']:.0f} MB "
                  f"(+{row['main_peak_growth_mb']:.0f})", file=sys.stderr, flush=True)
    # memory per stored rollout: least-squares slope over B of the main process's peak RSS
    # above its RSS when the collector was built
    pts = [(r["trajs_per_batch"], r["main_peak_growth_mb"]) for r in rows if r["vary"] in ("k", "contexts")]
    mx = statistics.mean(x for x, _ in pts)
    my = statistics.mean(y for _, y in pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    slope = sum((x - mx) * (y - my) for x, y in pts) / sxx if sxx else float("nan")
    return dict(rows=rows, main_peak_rss_mb_per_rollout=slope,
                stored_mb_per_rollout=statistics.mean(r["bytes_per_rollout"] for r in rows if r["vary"] != "horizon")
                / 2**20)


def in_flight_sweep(args) -> list[dict]:
    """Waste with keep_in_flight off (rollouts simulated then dropped) vs on, at K=8, B=32/64."""
    rows = []
    for slots, b, keep in [(s, b, keep) for s in (args.in_flight_slots or [args.slots]) for b in (32, 64)
                           for keep in (False, True)]:
        r = measure_group(args, slots, name="in_flight", k=8, contexts_n=b // 8, keep_in_flight=keep,
                          measure_s=0.0, min_batches=3)
        rows.append(dict(
            k=8, trajs_per_batch=b, slots=slots, keep_in_flight=keep, batches=r["batches"],
            discarded_per_batch=r["rollouts_discarded"] / r["batches"],
            carried_per_batch=statistics.mean(r["rollouts_carried"]),
            simulated_decisions=r["simulated_decisions"], delivered_decisions=r["decisions"],
            # without carry-over every simulated decision is delivered or dropped within its batch;
            # with it, work crosses batch boundaries and the waste is the discarded (stale) rollouts
            wasted_fraction=None if keep else 1 - r["decisions"] / r["simulated_decisions"],
            decisions_per_s=r["decisions_per_s"], wall_per_batch_s=r["wall_per_batch_s"],
            max_staleness=r["max_staleness"], load_avg=r["load_avg"]))
        print(f"  in-flight B={b} keep={keep}: {rows[-1]['discarded_per_batch']:.2f} discarded/batch, "
              f"{rows[-1]['decisions_per_s']:.1f} decisions/s", file=sys.stderr, flush=True)
    return rows


def _row(name, r, limit, bound, best=False):
    lo, hi = min(r["rounds_decisions_per_s"]), max(r["rounds_decisions_per_s"])
    load = r["rounds_load_avg"]
    return (f"{name:<22}{r['slots']:>5}{'*' if best else ' '}{r['decisions_per_s']:>10.1f}{'':>2}[{lo:6.1f}-{hi:6.1f}]"
            f"{r['env_steps_per_s']:>10.1f}{r['rollouts_per_s']:>9.2f}{r['decisions_per_s'] / limit:>7.2f}"
            f"{r['decisions_per_s'] / bound:>7.2f}{r['cpu_ms_per_decision']:>9.1f}   "
            f"{min(min(x) for x in load):.1f}-{max(max(x) for x in load):.1f}")


def _round_ratios(this: dict, cores: int) -> dict:
    """One round's ratios: its best GroupCollector (path, slots) against its best stock one, its limit, its bound."""
    rate = {key: rec["decisions_per_s"] for key, rec in this["paths"].items()}
    group = max(v for (p, _), v in rate.items() if p in GROUP_PATHS)
    stock = max(v for (p, _), v in rate.items() if p in STOCK_PATHS)
    bound = _bound(this["limit"]["cpu_ms_per_decision"], this["policy"], cores)["bound_decisions_per_s"]
    return dict(group_vs_bound=group / bound, group_vs_stock=group / stock,
                group_vs_limit=group / this["limit"]["decisions_per_s"],
                group_vs_async_batched=group / max(v for (p, _), v in rate.items() if p == "async_batched"),
                bound_decisions_per_s=bound)


def compare(args, policy_params: int) -> tuple[dict, list[str]]:
    """Every path on the workload, in rounds; the JSON fields and the table lines."""
    cores = _cores()
    paths, policy, rounds = run_paths(args, policy_params)
    limit = paths["limit"]
    bound = _bound(limit["cpu_ms_per_decision"], policy, cores)
    ratios = _ratios(paths, bound)
    round_ratios = [_round_ratios(this, cores) for this in rounds]
    group = paths[ratios["best_group_path"]]
    lim_ms = limit["per_decision_ms"]
    breakdown = dict(path=ratios["best_group_path"], slots=group["slots"], **group["time_breakdown"])
    # worker-side estimate from the limit's per-decision split (spread over the slots)
    breakdown["sim_worker_s_est"] = group["simulated_decisions"] * lim_ms["sim"] / 1e3 / group["slots"]
    breakdown["render_worker_s_est"] = group["simulated_decisions"] * lim_ms["render"] / 1e3 / group["slots"]
    cpu = group["cpu"]
    breakdown["worker_busy_fraction"] = cpu["children_cpu_s"] / (cpu["wall_s"] * group["slots"])
    breakdown["main_cpu_fraction"] = cpu["main_cpu_s"] / cpu["wall_s"]
    lcpu = limit["cpu"]
    breakdown["limit_worker_busy_fraction"] = lcpu["children_cpu_s"] / (lcpu["wall_s"] * limit["slots"])
    sim_ms = bound["sim_cpu_ms_per_decision"]
    accounting = {name: cpu_accounting(r, sim_cpu_ms=sim_ms, policy=policy, cores=cores)
                  for name, r in paths.items() if name != "limit"}
    fields = dict(
        env_steps_per_s=group["env_steps_per_s"], decisions_per_s=group["decisions_per_s"],
        rollouts_per_s=group["rollouts_per_s"], **ratios, bound=bound, round_ratios=round_ratios,
        paths={name: {k: v for k, v in r.items() if k != "profile"} for name, r in paths.items()},
        bytes_per_rollout={p: paths[p]["bytes_per_rollout"] for p in paths if "bytes_per_rollout" in paths[p]},
        peak_rss_mb={p: dict(main=paths[p].get("main_peak_rss_mb"), worker=paths[p].get("worker_peak_rss_mb"))
                     for p in paths},
        group_time_breakdown=breakdown, cpu_accounting=accounting,
    )
    lim, bnd = limit["decisions_per_s"], bound["bound_decisions_per_s"]
    lines = [f"{'path':<22}{'slots':>6}{'dec/s':>10}{'  [rounds range]':>17}{'env st/s':>10}{'roll/s':>9}"
             f"{'/limit':>7}{'/bound':>7}{'cpu ms/d':>9}   load   (* best slot count)"]
    for name in ["limit", *[p for p in STOCK_PATHS if p in paths], "sequential", *GROUP_PATHS]:
        if name not in paths:
            continue
        if "by_slots" in paths[name]:
            for slots, r in paths[name]["by_slots"].items():
                lines.append(_row(name, r, lim, bnd, best=int(slots) == paths[name]["best_slots"]))
        else:
            lines.append(_row(name, paths[name], lim, bnd))
    lines.append(f"bound {bnd:.1f} decisions/s = {cores} cores x 1000 / (sim {sim_ms:.2f} + policy "
                 f"{bound['policy_cpu_ms_per_decision']:.2f} CPU ms per decision, batch {bound['policy_batch']}); "
                 "policy CPU ms per decision by batch: "
                 + ", ".join(f"{b}: {v:.2f}" for b, v in bound["policy_cpu_ms_per_decision_by_batch"].items()))
    lines.append("  ".join(f"{k} {v:.2f}" for k, v in ratios.items() if isinstance(v, float))
                 + f"  (best group: {ratios['best_group_path']} at {group['slots']} slots, best stock: "
                 f"{ratios['best_stock_path']} at {paths[ratios['best_stock_path']]['slots']} slots)")
    lines.append("core ms per delivered decision at the best slot count (idle + sim + wasted sim + policy + "
                 "collection; cpu = main + children):")
    for name, acc in accounting.items():
        lines.append(f"  {name:<22}{acc['slots']:>3} slots: " + ", ".join(
            f"{k[:-3]} {v:.2f}" for k, v in acc.items() if k.endswith("_ms") and v is not None)
            + (f", policy batch {acc['policy_mean_batch']:.2f}" if acc["policy_mean_batch"] else ""))
    lines.append("group time (s): " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                                  for k, v in breakdown.items()))
    lines.append("bytes/rollout: " + ", ".join(f"{p} {v / 1e6:.2f} MB" for p, v in fields["bytes_per_rollout"].items()))
    return fields, lines


def main(argv=None) -> dict:
    args = parse(argv)
    mp.set_forkserver_preload(PRELOAD)
    mp.set_start_method(START_METHOD, force=True)  # AsyncEnvPool's worker processes too
    # One intra-op thread: with as many env processes as cores, a second thread
    # mostly waits for a core (measured under load: 2.6 ms per tiny-policy call
    # with 1 thread, 47-130 ms with 2). Same setting for every path.
    torch.set_num_threads(args.policy_threads)
    t_start = time.perf_counter()
    load_start, steal_start = _load(), _steal_s()
    policy_params = n_params(make_policy(args))
    fields, lines = ({}, []) if args.sweeps_only else compare(args, policy_params)
    growth = growth_sweep(args) if args.growth else None
    in_flight = in_flight_sweep(args) if args.in_flight else None
    sim_alone = sim_sweep(args, policy_params) if args.sim_sweep else None
    profile = None
    if args.profile:
        profile = measure_group(args, args.slots, name="group_profiled", profile=True)["profile"]
    load_end = _load()
    result = dict(
        benchmark="collector_throughput", env=args.env,
        config=dict(env=args.env, task=task_name(args), image_size=args.image_size, cameras=args.cameras,
                    k=args.k, contexts=args.contexts, horizon=args.horizon, chunk=args.chunk, policy=args.policy,
                    policy_params=policy_params, slots=args.slots, slot_counts=args.slot_counts,
                    policy_s=args.policy_s,
                    instruction=args.instruction,
                    rounds=args.rounds, measure_s=args.measure_s, quick=args.quick,
                    torch_threads=torch.get_num_threads(), start_method=START_METHOD,
                    command=" ".join(["python", "benchmarks/collector_throughput.py", *(sys.argv[1:] if argv is None
                                                                                       else argv)])),
        machine=dict(cpus=os.cpu_count(), cores=_cores(), platform=platform.platform()),
        load_avg=dict(start=load_start, end=load_end),
        **fields, growth=growth, in_flight=in_flight, sim_alone_by_slots=sim_alone, profile=profile,
        total_wall_s=time.perf_counter() - t_start,
    )
    # core time the machine's host took from this VM during the run (0 where not reported)
    steal = _steal_s() - steal_start
    result["steal"] = dict(s=steal, fraction=steal / (result["total_wall_s"] * _cores()))

    print(f"workload: {args.env} {task_name(args)}, {len(args.cameras)} cam x {args.image_size}px, K={args.k}, "
          f"{args.contexts} contexts/batch, horizon {args.horizon} x chunk {args.chunk}, policy {args.policy} "
          f"({policy_params} params), slots {args.slot_counts} (limit {args.slots}), {args.rounds} round(s) x "
          f"{args.measure_s:g} s; "
          f"load {load_start} -> {load_end}; steal {result['steal']['s']:.1f} s "
          f"({100 * result['steal']['fraction']:.1f}% of the core time)")
    for line in lines:
        print(line)
    if growth:
        for g in growth["rows"]:
            print(f"growth {g['vary']:<9} K={g['k']} B={g['trajs_per_batch']} T={g['horizon']} slots={g['slots']}: "
                  f"{g['wall_per_batch_s']:.2f} s/batch, {g['decisions_per_s']:.1f} dec/s, main peak "
                  f"{g['main_peak_rss_mb']:.0f} MB (+{g['main_peak_growth_mb']:.0f}), worker peak "
                  f"{g['worker_peak_rss_mb']:.0f} MB")
        print(f"memory per stored rollout: {growth['stored_mb_per_rollout']:.2f} MB stored, "
              f"{growth['main_peak_rss_mb_per_rollout']:.2f} MB of the main process's peak RSS (slope over B)")
    for n, row in (sim_alone or {}).items():
        print(f"simulator alone, {n} processes: {row['decisions_per_s']:.1f} decisions/s, "
              f"{row['cpu_ms_per_decision']:.2f} CPU ms per decision (rounds "
              + ", ".join(f"{x:.2f}" for x in row["rounds_cpu_ms_per_decision"]) + ")")
    for row in in_flight or []:
        print(f"in-flight K=8 B={row['trajs_per_batch']} slots={row['slots']} keep={row['keep_in_flight']}: "
              f"{row['discarded_per_batch']:.2f} discarded/batch, {row['carried_per_batch']:.2f} carried/batch, "
              + (f"wasted {100 * row['wasted_fraction']:.1f}% of simulated decisions, "
                 if row["wasted_fraction"] is not None else "")
              + f"{row['decisions_per_s']:.1f} dec/s, staleness {row['max_staleness']}")
    if profile:
        print(profile)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
