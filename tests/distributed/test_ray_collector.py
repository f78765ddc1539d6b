"""RayGroupCollector on a local Ray cluster (``ray.init(num_cpus=2)``), toy env.

Two remote GroupCollectors started through TorchRL's RayCollector must give
batches of exactly B informative, complete, context-pure groups with unique
ids; weights and the policy version must reach the workers; a worker killed
mid-collection must be replaced (with a warning) or reported (an error),
never silently dropped.
"""
from __future__ import annotations

import os
import sys
import warnings
from functools import partial

import pytest
import torch

ray = pytest.importorskip("ray")

from torchrl.envs import SerialEnv  # noqa: E402

from torchrl_ript import ContextDataset, ContextToyVLAEnv  # noqa: E402
from torchrl_ript.collectors import RayGroupCollector, RayWorkerError  # noqa: E402
from torchrl_ript.modules.toy_policies import toy_laplace_actor  # noqa: E402

# Ray workers cannot import this test module: send its functions by value
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

K, B, T = 4, 16, 3


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def contexts():
    return ContextDataset(torch.rand(64, 2, generator=torch.Generator().manual_seed(0)) - 0.5,
                          [0] * 64, ["track"], seed=0)


def toy_env(n=K):
    return SerialEnv(n, partial(ContextToyVLAEnv, action_dim=2, max_steps=T, success_tol=0.15))


def crash_once_env(marker: str, after_steps: int, n=K):
    """A toy env pool whose worker process dies (os._exit) once, mid-rollout."""

    class CrashOnce(ContextToyVLAEnv):
        def _step(self, tensordict):
            self._steps_here = getattr(self, "_steps_here", 0) + 1
            if self._steps_here == after_steps:
                try:  # atomic: exactly one env of one worker crashes
                    os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
                except FileExistsError:
                    pass
                else:
                    os._exit(1)
            return super()._step(tensordict)

    return SerialEnv(n, partial(CrashOnce, action_dim=2, max_steps=T, success_tol=0.15))


def check_batch(batch, version):
    assert batch.shape == (B,)
    ids = batch["group_id"]
    groups = ids.unique()
    assert len(groups) == B // K
    for gid in groups:
        rows = batch[ids == gid]
        assert rows.shape[0] == K  # complete
        assert rows["context_id"].unique().numel() == 1  # context-pure
        rewards = rows["reward"].reshape(-1)
        assert 0 < rewards.sum() < K  # informative: mixed outcomes
        assert torch.allclose(rows["advantage"].sum(), torch.zeros(()), atol=1e-5)  # RLOO
    assert (batch["policy_version"] == version).all()
    assert batch["steps", "mask"].shape == (B, T)


@pytest.mark.timeout(240)
def test_exact_batches_unique_ids_and_weight_sync(ray_cluster):
    torch.manual_seed(0)
    actor, _ = toy_laplace_actor()
    collector = RayGroupCollector(toy_env, actor, context_dataset=contexts(), group_size=K,
                                  trajs_per_batch=B, max_frames_per_traj=T, num_workers=2, seed=0,
                                  worker_timeout_s=120)
    try:
        seen = set()
        workers = set()
        iterator = iter(collector)
        for step in range(3):
            batch = next(iterator)
            check_batch(batch, version=step)
            ids = set(batch["group_id"].unique().tolist())
            assert not ids & seen  # unique across batches and workers
            seen |= ids
            workers |= {gid >> 40 for gid in ids}
            stats = collector.last_stats
            assert stats.rollouts_kept == B and stats.groups_kept == B // K
            assert stats.workers == 2 and stats.reports >= B // K and stats.max_lag == 0
            assert stats.rollouts_finished >= B and stats.env_steps > 0
            # the update reaches every worker through TorchRL's weight sync
            with torch.no_grad():
                for p in actor.parameters():
                    p.add_(0.01 * torch.randn_like(p))
            collector.update_policy_weights_()
            assert collector.policy_version == step + 1
            local = actor.state_dict()
            remote = ray.get([w.policy_state_dict.remote() for w in collector._ray.remote_collectors])
            assert len(remote) == 2
            for state in remote:
                assert state.keys() == local.keys()
                for key, value in local.items():
                    torch.testing.assert_close(state[key], value)
        assert workers == {0, 1}  # both workers contributed
        # checkpoint round trip of the workers' context streams and the version
        state = collector.context_state_dict()
        assert state["policy_version"] == 3 and len(state["workers"]) == 2
        next(iterator)
        collector.load_context_state_dict(state)
        again = collector.context_state_dict()
        for saved, restored in zip(state["workers"], again["workers"]):
            assert torch.equal(saved["generator"], restored["generator"])
            assert saved["next_group"] == restored["next_group"]
    finally:
        collector.shutdown()
    assert ray.is_initialized()  # the test's cluster is not the collector's to stop


@pytest.mark.slow  # two pool start-ups: ~40 s on 2 busy cores
@pytest.mark.timeout(300)
def test_killed_worker_is_replaced(ray_cluster, tmp_path):
    torch.manual_seed(0)
    actor, _ = toy_laplace_actor()
    collector = RayGroupCollector(partial(crash_once_env, str(tmp_path / "crashed"), 2 * T + 1), actor,
                                  context_dataset=contexts(), group_size=K, trajs_per_batch=B,
                                  max_frames_per_traj=T, num_workers=2, seed=0, worker_timeout_s=120)
    try:
        with pytest.warns(RuntimeWarning, match=r"Ray worker \d .* died during collection"):
            batch = next(iter(collector))
        assert (tmp_path / "crashed").exists()
        check_batch(batch, version=0)
        assert collector.last_stats.workers_replaced == 1
        # the new pool has fresh streams: new id ranges, nothing repeated
        assert batch["group_id"].unique().numel() == B // K
        assert {gid >> 40 for gid in batch["group_id"].tolist()} & {2, 3}
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            check_batch(next(iter(collector)), version=0)
    finally:
        collector.shutdown()


@pytest.mark.slow  # ~20 s on 2 busy cores
@pytest.mark.timeout(300)
def test_killed_worker_is_reported(ray_cluster, tmp_path):
    actor, _ = toy_laplace_actor()
    collector = RayGroupCollector(partial(crash_once_env, str(tmp_path / "crashed"), 2 * T + 1), actor,
                                  context_dataset=contexts(), group_size=K, trajs_per_batch=B,
                                  max_frames_per_traj=T, num_workers=2, seed=0, worker_timeout_s=120,
                                  on_worker_failure="raise")
    try:
        with pytest.raises(RayWorkerError, match=r"died during collection .*on_worker_failure='replace'"):
            next(iter(collector))
    finally:
        collector.shutdown()


@pytest.mark.slow  # ~25 s on 2 busy cores
@pytest.mark.timeout(240)
def test_policy_lag_one_keeps_workers_busy(ray_cluster):
    torch.manual_seed(0)
    actor, _ = toy_laplace_actor()
    collector = RayGroupCollector(toy_env, actor, context_dataset=contexts(), group_size=K,
                                  trajs_per_batch=B, max_frames_per_traj=T, num_workers=2, seed=0,
                                  max_policy_lag=1, worker_timeout_s=120)
    try:
        seen, lags = set(), []
        iterator = iter(collector)
        for step in range(4):
            batch = next(iterator)
            assert batch.shape == (B,)
            lag = collector.policy_version - batch["policy_version"]
            assert ((lag >= 0) & (lag <= 1)).all()
            lags.append(int(lag.max()))
            ids = set(batch["group_id"].tolist())
            assert not ids & seen
            seen |= ids
            assert len(collector._pending) > 0  # the workers keep collecting through the update
            collector.update_policy_weights_()
        assert max(lags) == 1  # groups collected before an update were used after it
    finally:
        collector.shutdown()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_workers": 0}, "num_workers must be >= 1"),
        ({"trajs_per_batch": 6}, "multiple of group_size"),
        ({"max_policy_lag": -1}, "max_policy_lag must be >= 0"),
        ({"on_worker_failure": "ignore"}, "on_worker_failure must be"),
    ],
)
def test_bad_arguments_fail_before_ray_starts(kwargs, match):
    actor, _ = toy_laplace_actor()
    options = dict(context_dataset=contexts(), group_size=K, trajs_per_batch=B, max_frames_per_traj=T)
    options.update(kwargs)
    was_up = ray.is_initialized()
    with pytest.raises(ValueError, match=match):
        RayGroupCollector(toy_env, actor, **options)
    assert ray.is_initialized() == was_up


def test_worker_report_without_informative_group_is_empty():
    # a policy that always fails: the worker's report is empty, not a malformed batch
    from torchrl_ript.collectors import RemoteGroupCollector
    from torchrl_ript.collectors.distributed import _split_groups

    actor, _ = toy_laplace_actor(init_scale=2e-3)  # near-deterministic, 5 away from every target
    far = ContextDataset(torch.rand(8, 2) + 5.0, [0] * 8, ["track"], seed=0)
    worker = RemoteGroupCollector(toy_env(), actor, context_dataset=far, group_size=K,
                                  trajs_per_batch=K, max_frames_per_traj=T, seed=0, stream_index=1)
    try:
        rows, stats, version = worker.collect()
    finally:
        worker.shutdown()
    assert rows.batch_size == (0,) and "policy_version" not in rows.keys()
    assert _split_groups(rows, K) == []
    assert stats["hit_draw_limit"] and stats["groups_all_failure"] == stats["contexts_drawn"] == 10
