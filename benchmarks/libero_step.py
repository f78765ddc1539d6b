"""LIBERO steps/s per env on this machine: TorchRL's defaults vs RIPT's optimised settings.

Both settings render two 128 px cameras (agentview + eye-in-hand) and run the
same physics; they differ in what RIPT does not need:

- ``default``: LiberoContextEnv(fast_step=False, render_quality="high"),
  i.e. LIBERO/robosuite as shipped (observables sampled, cameras rendered
  with shadows, reflections and 4x MSAA at every action) plus soft resets;
- ``fast``: render_quality="fast" and fast_step=True (observations once per
  step, unused observables off), one action per step;
- ``fast+chunk8``: the same with action_chunk=8 (render once per 8 actions,
  what a chunked VLA such as OpenVLA-OFT does per decision step).

Numbers are low-level actions per second, one process. Usage::

    python benchmarks/libero_step.py            # 60 actions per setting
    python benchmarks/libero_step.py --quick    # 16 actions per setting
    python benchmarks/libero_step.py --profile  # + cProfile of each setting

The last line is a JSON summary.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

SETTINGS = {
    "default": dict(fast_step=False, render_quality="high"),
    "fast": dict(fast_step=True, render_quality="fast"),
    "fast+chunk8": dict(fast_step=True, render_quality="fast", action_chunk=8),
}


def run(name: str, kwargs: dict, *, actions: int, suite: str, task: int, profile: bool) -> dict:
    from torchrl_ript.envs.libero.contexts import libero_contexts
    from torchrl_ript.envs.common import context_reset_td
    from torchrl_ript.envs.libero import LiberoContextEnv

    t0 = time.perf_counter()
    env = LiberoContextEnv(suite, task, **kwargs)
    build_s = time.perf_counter() - t0
    state = libero_contexts(suite, task_ids=[task]).states[0]
    reset = context_reset_td(state[None], torch.tensor([task]))[0]
    env.reset(reset.clone())  # warm-up (first render uploads textures)
    t0 = time.perf_counter()
    td = env.reset(reset.clone())
    reset_s = time.perf_counter() - t0
    chunk = kwargs.get("action_chunk") or 1
    generator = torch.Generator().manual_seed(0)
    n_steps = max(1, actions // chunk)
    profiler = cProfile.Profile() if profile else None
    t0 = time.perf_counter()
    if profiler:
        profiler.enable()
    for _ in range(n_steps):
        action = (torch.rand(chunk, 7, generator=generator) * 0.2 - 0.1)
        td["action"] = action if kwargs.get("action_chunk") else action[0]
        td = env.step(td)["next"]
    if profiler:
        profiler.disable()
    elapsed = time.perf_counter() - t0
    env.close()
    result = {
        "setting": name,
        "actions_per_s": n_steps * chunk / elapsed,
        "decision_steps_per_s": n_steps / elapsed,
        "build_s": build_s,
        "reset_s": reset_s,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
        result["profile"] = out.getvalue()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 actions per setting")
    parser.add_argument("--actions", type=int, default=None)
    parser.add_argument("--suite", default="libero_spatial")
    parser.add_argument("--task", type=int, default=0)
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS))
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    actions = args.actions or (16 if args.quick else 60)
    results = []
    for name in args.settings:
        result = run(name, SETTINGS[name], actions=actions, suite=args.suite, task=args.task, profile=args.profile)
        results.append(result)
        print(
            f"{name:12s} {result['actions_per_s']:7.2f} actions/s  "
            f"{result['decision_steps_per_s']:7.2f} steps/s  build {result['build_s']:.1f}s  "
            f"reset {result['reset_s']:.2f}s  maxRSS {result['max_rss_mb']:.0f} MB",
            flush=True,
        )
        if "profile" in result:
            print(result.pop("profile"))
    summary = {r["setting"]: round(r["actions_per_s"], 2) for r in results}
    base = summary.get("default")
    print(json.dumps({
        "benchmark": "libero_step",
        "suite": args.suite,
        "task": args.task,
        "actions": actions,
        "actions_per_s": summary,
        "speedup_vs_default": {k: round(v / base, 2) for k, v in summary.items()} if base else None,
        "runs": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in results],
        "mujoco_gl": os.environ.get("MUJOCO_GL"),
    }))


if __name__ == "__main__":
    main()
