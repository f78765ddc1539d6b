"""Parameter counts and CPU latency per decision of the RIPT policies.

One decision = one rollout-policy call on a ``[B]`` batch of observations:
QueST = observation encoders + autoregressive sampling of the L skill tokens
+ decoding the chunk; regression = encoders + mean/scale heads + sampling.

    python benchmarks/model_latency.py [--threads 1] [--repeats 5] [--presets tiny small paper]

Prints a table, then one JSON line (``{"results": [...]}``).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from tensordict import NonTensorStack, TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_ript.models import (
    QuestDecoder,
    QuestPolicy,
    RegressionPolicy,
    count_parameters,
    make_quest_actor,
    make_regression_actor,
    quest_config,
    regression_config,
)
from torchrl_ript.models.common import IMAGE_KEY, WRIST_IMAGE_KEY
from torchrl_ript.modules import make_rollout_policy


def _obs(batch: int, cameras: tuple, size: int, state_dim: int) -> TensorDict:
    td = TensorDict(
        {("observation", "state"): torch.randn(batch, state_dim),
         "language_instruction": NonTensorStack(*["pick up the red block"] * batch)},
        [batch],
    )
    for key in cameras:
        td.set(key, torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8))
    return td


def _time(fn, repeats: int) -> float:
    fn()  # warm-up (also fills the language cache)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--presets", nargs="+", default=["tiny", "small", "paper"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)

    results = []
    for preset in args.presets:
        cams = (IMAGE_KEY, WRIST_IMAGE_KEY) if preset == "paper" else (IMAGE_KEY,)
        builders = {
            "quest": lambda: QuestPolicy(quest_config(preset, action_dim=7, encoder={"image_keys": cams})),
            "regression": lambda: RegressionPolicy(regression_config(preset, action_dim=7, encoder={"image_keys": cams})),
        }
        for kind, build in builders.items():
            policy = build().eval()
            if kind == "quest":
                rollout = make_rollout_policy(make_quest_actor(policy), QuestDecoder(policy))
                chunk, executed = policy.config.chunk_size, policy.config.n_exec
            else:
                rollout = make_regression_actor(policy)
                chunk = executed = policy.config.chunk_size
            enc = policy.config.encoder
            row = {
                "model": kind, "preset": preset, "params": count_parameters(policy),
                "cameras": len(cams), "image": enc.image_size, "language": enc.language,
                "chunk": chunk, "executed": executed, "threads": args.threads,
            }
            for b in args.batches:
                obs = _obs(b, cams, enc.image_size, enc.state_dim)

                def step(obs=obs):
                    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
                        rollout(obs.clone())

                row[f"ms_b{b}"] = round(_time(step, args.repeats), 2)
            results.append(row)

    cols = ["model", "preset", "params", "cameras", "image", "chunk", "executed"] + [f"ms_b{b}" for b in args.batches]
    print(" | ".join(f"{c:>10}" for c in cols))
    for r in results:
        print(" | ".join(f"{(f'{r[c]/1e6:.2f}M' if c == 'params' else r[c]):>10}" for c in cols))
    print(json.dumps({"results": results}))


if __name__ == "__main__":
    main()
