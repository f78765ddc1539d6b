"""Steps per second of one MetaWorldEnv: physics only, default and fast rendering.

Each configuration builds a :class:`~torchrl_ript.envs.metaworld.MetaWorldEnv`,
resets it and times ``step`` with random actions (one raw env step per
``step``, no chunking; renders happen at every step, so this is the worst
case for a VLA that decides at every step). Prints a table and, last, one
JSON line with all rates.

Usage::

    python benchmarks/metaworld_render.py --quick      # < 1 min
    python benchmarks/metaworld_render.py --tasks reach-v3 pick-place-v3 door-open-v3
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from torchrl_ript.envs.rendering import select_gl_backend

CONFIGS = [
    # name, cameras, render_quality
    ("physics", (), "fast"),
    ("default_1cam", ("corner2",), "high"),
    ("fast_1cam", ("corner2",), "fast"),
    ("default_2cam", ("corner2", "gripperPOV"), "high"),
    ("fast_2cam", ("corner2", "gripperPOV"), "fast"),
]


def measure(task: str, cameras, quality: str, *, steps: int, image_size: int) -> float:
    from torchrl_ript.envs.metaworld import MetaWorldEnv

    env = MetaWorldEnv(
        task_names=[task],
        camera_names=cameras,
        image_size=image_size,
        render_quality=quality,
        max_steps=steps + 1,
        seed=0,
    )
    td = env.reset()
    actions = torch.rand(steps, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    start = time.perf_counter()
    for action in actions:
        td = env.step(td.set("action", action))["next"]
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["reach-v3", "pick-place-v3"])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=None, help="steps per rendered config")
    parser.add_argument("--quick", action="store_true", help="one task, few steps (< 1 min)")
    args = parser.parse_args()
    backend = select_gl_backend()
    tasks = args.tasks[:1] if args.quick else args.tasks
    render_steps = args.steps or (20 if args.quick else 200)
    results: dict[str, dict[str, float]] = {}
    for task in tasks:
        results[task] = {}
        for name, cameras, quality in CONFIGS:
            steps = render_steps * (10 if not cameras else 1)
            if quality == "high":
                steps = max(5, steps // 4)  # ~10x slower: keep the run short
            results[task][name] = measure(
                task, cameras, quality, steps=steps, image_size=args.image_size
            )
    header = f"{'task':<16}" + "".join(f"{name:>14}" for name, _, _ in CONFIGS)
    print(f"steps/s per env, {args.image_size}px, MUJOCO_GL={backend}, {platform.machine()}")
    print(header)
    for task, row in results.items():
        print(f"{task:<16}" + "".join(f"{row[name]:>14.1f}" for name, _, _ in CONFIGS))
    print(
        json.dumps(
            {
                "benchmark": "metaworld_render",
                "image_size": args.image_size,
                "gl": backend,
                "quick": args.quick,
                "steps_per_s": results,
            }
        )
    )


if __name__ == "__main__":
    main()
