"""Parameter counts and CPU latency per decision of the RIPT policies.

One decision = one rollout-policy call on a ``[B]`` batch of observations:
QueST = observation encoders + autoregressive sampling of the skill tokens
+ decoding the executed actions; regression = encoders + mean/scale heads +
sampling.

QueST decoding, compared on QueST small in the same run (``decode`` x
``kv_cache`` of :class:`~torchrl_ript.models.QuestConfig`):

- ``full``/uncached: every one of the L tokens drawn by a pass over the whole
  prefix (the path before executed-only decoding and the cache);
- ``full``/cached, ``executed``/uncached: one change each;
- ``executed``/cached: the default: only the tokens the ``n_exec`` executed
  actions read, one new position per step.

``speedup_b<B>`` = full/uncached over executed/cached (old path over the
default), ``speedup_executed_b<B>`` = full over executed, both cached (the
executed-only decoding alone), at batch ``B``.

    python benchmarks/model_latency.py --quick     # QueST small decodings, batch 1 and 8 (~1 min)
    python benchmarks/model_latency.py [--threads 1] [--repeats 5] [--presets tiny small paper]

Prints a table, then one JSON line (``{"results": [...], "decoding": {...},
"speedup_b1": ..., ...}``).
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


def _quest(preset: str, cams: tuple, **overrides) -> QuestPolicy:
    return QuestPolicy(quest_config(preset, action_dim=7, encoder={"image_keys": cams}, **overrides))


def _latency(policy, rollout, cams, batches, repeats) -> dict:
    enc = policy.config.encoder
    out = {}
    for b in batches:
        obs = _obs(b, cams, enc.image_size, enc.state_dim)

        def step(obs=obs):
            with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
                rollout(obs.clone())

        out[f"ms_b{b}"] = round(_time(step, repeats), 3)
    return out


def _parts(rollout, obs, repeats) -> dict:
    """Where one decision's time goes: observation encoders, token sampling,
    decoding the executed actions (medians; the rest is the actor's
    log-prob and TensorDict plumbing)."""
    network = rollout[0].module[0]
    parts = {"encoders": [], "tokens": [], "decode": []}
    with torch.no_grad():
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            context = network.context(obs)
            t1 = time.perf_counter()
            tokens, _ = network.generate(context, sample=True)
            t2 = time.perf_counter()
            network.decode(tokens, network.config.n_exec)
            t3 = time.perf_counter()
            if i:
                for name, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2)):
                    parts[name].append(dt)
    return {name: round(statistics.median(ts) * 1e3, 3) for name, ts in parts.items()}


def decoding_comparison(batches, repeats, preset: str = "small") -> dict:
    """QueST ``preset`` per decoding (same weights, same observations).

    The variants take turns within each repeat, so a slow spell of the
    machine hits them alike; each figure is the median over the repeats.
    """
    cams = (IMAGE_KEY,)
    torch.manual_seed(0)
    state = _quest(preset, cams).state_dict()
    variants = [(decode, cache) for decode in ("full", "executed") for cache in (False, True)]
    rows = {}
    for decode, cache in variants:
        policy = _quest(preset, cams, decode=decode, kv_cache=cache).eval()
        policy.load_state_dict(state)
        rows[decode, cache] = dict(
            row={"decode": decode, "kv_cache": cache, "tokens": policy.scored_tokens,
                 "n_tokens": policy.config.n_tokens, "executed": policy.config.n_exec},
            rollout=make_rollout_policy(make_quest_actor(policy), QuestDecoder(policy)),
        )
    enc = rows["full", False]["rollout"][0].module[0].config.encoder
    for b in batches:
        obs = _obs(b, cams, enc.image_size, enc.state_dim)
        times = {v: [] for v in variants}
        for i in range(repeats + 1):
            for v in variants:
                with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
                    t0 = time.perf_counter()
                    rows[v]["rollout"](obs.clone())
                    if i:  # the first round warms up (and fills the language cache)
                        times[v].append(time.perf_counter() - t0)
        for v in variants:
            rows[v]["row"][f"ms_b{b}"] = round(statistics.median(times[v]) * 1e3, 3)
        rows["executed", True]["row"][f"parts_ms_b{b}"] = _parts(rows["executed", True]["rollout"], obs, repeats)
    by = {v: rows[v]["row"] for v in variants}
    out = {"preset": preset, "repeats": repeats, "rows": list(by.values())}
    for b in batches:
        key = f"ms_b{b}"
        out[f"speedup_b{b}"] = round(by["full", False][key] / by["executed", True][key], 2)
        out[f"speedup_executed_b{b}"] = round(by["full", True][key] / by["executed", True][key], 2)
        out[f"speedup_cache_b{b}"] = round(by["full", False][key] / by["full", True][key], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--presets", nargs="+", default=["tiny", "small", "paper"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--quick", action="store_true",
                        help="only the QueST small decoding comparison at batch 1 and 8 (40 repeats)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    load = os.getloadavg()[0]

    decode_batches = [1, 8]
    decoding = decoding_comparison(decode_batches, 40 if args.quick else max(args.repeats, 20))
    results = []
    for preset in [] if args.quick else args.presets:
        torch.manual_seed(0)
        cams = (IMAGE_KEY, WRIST_IMAGE_KEY) if preset == "paper" else (IMAGE_KEY,)
        builders = {
            "quest": lambda: _quest(preset, cams),
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
                **_latency(policy, rollout, cams, args.batches, args.repeats),
            }
            results.append(row)

    if results:
        cols = ["model", "preset", "params", "cameras", "image", "chunk", "executed"] + [f"ms_b{b}" for b in args.batches]
        print(" | ".join(f"{c:>10}" for c in cols))
        for r in results:
            print(" | ".join(f"{(f'{r[c]/1e6:.2f}M' if c == 'params' else r[c]):>10}" for c in cols))
    print(f"\nQueST {decoding['preset']} decoding, ms per decision ({args.threads} thread(s)):")
    cols = ["decode", "kv_cache", "tokens"] + [f"ms_b{b}" for b in decode_batches]
    print(" | ".join(f"{c:>10}" for c in cols))
    for r in decoding["rows"]:
        print(" | ".join(f"{str(r[c]):>10}" for c in cols))
    for b in decode_batches:
        parts = next(r for r in decoding["rows"] if r["decode"] == "executed" and r["kv_cache"])[f"parts_ms_b{b}"]
        print(f"executed/cached at batch {b}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in parts.items()))
    speedups = {k: v for k, v in decoding.items() if k.startswith("speedup")}
    print("  ".join(f"{k} {v:.2f}" for k, v in speedups.items()))
    print(json.dumps({"results": results, "decoding": decoding, **speedups, "threads": args.threads,
                      "load_avg": [round(load, 2), round(os.getloadavg()[0], 2)]}))


if __name__ == "__main__":
    main()
