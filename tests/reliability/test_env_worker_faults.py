"""Env worker processes that die or fail while a batch is being collected."""
import os
import signal
import threading
import time

import pytest
import torch
from torchrl.envs import AsyncEnvPool

from torchrl_ript import ContextDataset, GroupCollector
from torchrl_ript.collectors import EnvWorkerError

from toy_helpers import SlowToyEnv, clipped_oracle


def contexts(n=16):
    g = torch.Generator().manual_seed(0)
    return ContextDataset(torch.rand(n, 2, generator=g) - 0.5, [0] * n, ["track"], seed=0, noise_std=0.15)


def collector(makers, **kwargs):
    pool = AsyncEnvPool(makers, backend="multiprocessing", exchange="auto")
    defaults = dict(context_dataset=contexts(), group_size=4, trajs_per_batch=8, max_frames_per_traj=4,
                    seed=0, dynamic_sampling=False)
    defaults.update(kwargs)
    return GroupCollector(pool, clipped_oracle(0.2), **defaults)


def assert_exact_groups(batch, k=4):
    for g in batch["group_id"].unique():
        members = batch["group_id"] == g
        assert int(members.sum()) == k  # complete, never half-filled
        assert batch["context_id"][members].unique().numel() == 1  # one start per group
        assert torch.equal(batch["steps", "mask"][members].sum(-1), batch["length"][members])


def test_a_killed_env_worker_is_replaced_and_the_batch_completes():
    # rollouts run their 4 steps (tiny tolerance: no early success), 0.1 s each
    c = collector([SlowToyEnv(delay=0.1, success_tol=0.01)] * 3)
    victim = c.env.threads[1].pid

    def kill_soon():  # once the batch is under way (>= 3 decisions), well before its end
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            engine = c._engine
            if engine is not None and engine.times.decision_steps >= 3:
                break
            time.sleep(0.01)
        os.kill(victim, signal.SIGKILL)

    killer = threading.Thread(target=kill_soon)
    killer.start()
    try:
        batch = next(iter(c))
    finally:
        killer.join()
    stats = c.last_stats
    new_pids = [p.pid for p in c.env.threads]
    c.shutdown()
    assert stats.env_restarts == 1 and stats.rollouts_lost >= 1
    assert victim not in new_pids
    assert batch.batch_size == (8,) and stats.rollouts_kept == 8
    assert_exact_groups(batch)


def test_env_workers_that_keep_dying_raise_an_error_naming_the_worker():
    c = collector([SlowToyEnv(), SlowToyEnv(die_at_step=2)], max_env_restarts=1)
    start = time.perf_counter()
    with pytest.raises(EnvWorkerError, match=r"env worker 1 \(pid \d+, exit code -9\)"):
        next(iter(c))
    assert time.perf_counter() - start < 300  # bounded: one restart, then the error
    c.shutdown()


def test_an_env_that_raises_is_not_restarted():
    c = collector([SlowToyEnv(raise_at_step=3)] * 2)
    with pytest.raises(RuntimeError, match="simulated physics blow-up"):
        next(iter(c))
    assert c._engine.times.restarts == 0
    c.shutdown()
