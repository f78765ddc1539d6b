from functools import partial

import pytest
import torch
from torchrl.envs import ParallelEnv, SerialEnv

from torchrl_ript import ContextDataset, ContextToyVLAEnv, GroupCollector, make_ript_replay_buffer
from torchrl_ript.data import AdaptiveSampler

from toy_helpers import laplace_actor, oracle_policy


def make_env(n, **kwargs):
    return SerialEnv(n, lambda: ContextToyVLAEnv(action_dim=2, max_steps=4, **kwargs))


def contexts(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ContextDataset(torch.rand(n, 2, generator=g) - 0.5, [0] * n, ["track"], seed=seed)


def collector(env, policy, **kwargs):
    defaults = dict(context_dataset=contexts(), group_size=4, trajs_per_batch=8,
                    max_frames_per_traj=4, seed=0)
    defaults.update(kwargs)
    return GroupCollector(env, policy, **defaults)


def test_groups_start_identically_and_differ_across_contexts():
    actor, _ = laplace_actor(init_scale=0.3)
    env = ParallelEnv(3, partial(ContextToyVLAEnv, action_dim=2, max_steps=4), mp_start_method="spawn")
    c = collector(env, actor, dynamic_sampling=False, trajs_per_batch=12,
                  observation_keys=[("observation", "state"), ("observation", "image")])
    try:
        batch = next(iter(c))
    finally:
        c.shutdown()
    assert batch.batch_size == (12,)
    first_images = batch["steps", "observation", "image"][:, 0]
    first_states = batch["steps", "observation", "state"][:, 0]
    assert first_images.dtype == torch.uint8
    groups = batch["group_id"].unique()
    assert groups.numel() == 3
    for g in groups:
        members = batch["group_id"] == g
        assert members.sum() == 4
        assert batch["context_id"][members].unique().numel() == 1
        assert torch.equal(first_images[members], first_images[members][:1].expand(4, -1, -1, -1))
        assert torch.equal(first_states[members], first_states[members][:1].expand(4, -1))
    heads = [first_images[batch["group_id"] == g][0] for g in groups]
    if len(set(batch["context_id"].tolist())) == 3:
        assert not torch.equal(heads[0], heads[1])
    # the stored state holds the context's target
    ctx = contexts()
    torch.testing.assert_close(
        first_states[:, 2:4].double(), ctx.states[batch["context_id"]], atol=1e-6, rtol=0
    )


def test_dynamic_sampling_fills_b_with_informative_groups():
    actor, _ = laplace_actor(init_scale=0.3)
    c = collector(make_env(4), actor, trajs_per_batch=8)
    batch = next(iter(c))
    stats = c.last_stats
    assert batch.batch_size == (8,)
    for g in batch["group_id"].unique():
        rewards = batch["reward"][batch["group_id"] == g]
        assert rewards.min() == 0 and rewards.max() == 1  # mixed outcomes only
    assert (batch["advantage"] != 0).any(-1).all()
    # stats add up
    assert stats.groups_completed == stats.groups_kept + stats.groups_all_success + stats.groups_all_failure
    assert stats.groups_kept == 2 and stats.rollouts_kept == 8
    assert stats.rollouts_finished == 4 * stats.groups_completed + (stats.rollouts_finished % 4)
    assert stats.decision_steps == stats.env_steps >= batch["length"].sum()
    assert stats.contexts_drawn >= stats.groups_completed
    assert 0 < stats.success_rate < 1
    # the task mix (one task here) counts the same groups
    mix = stats.as_dict()["per_task"]
    assert list(mix) == [0]
    assert mix[0]["groups"] == stats.groups_completed and mix[0]["informative"] == stats.groups_kept
    assert mix[0]["kept"] == 8 and mix[0]["batch_share"] == 1.0
    assert mix[0]["informative_rate"] == stats.informative_group_rate
    # the task's success rate: its completed groups' rollouts (unfinished rollouts are not in a group yet)
    assert mix[0]["rollouts"] == 4 * stats.groups_completed and 0 < mix[0]["successes"] <= stats.successes
    assert mix[0]["success_rate"] == mix[0]["successes"] / mix[0]["rollouts"]
    # per-trajectory fields
    assert torch.equal(batch["steps", "mask"].sum(-1), batch["length"])
    torch.testing.assert_close(
        (batch["steps", "action_log_prob"] * batch["steps", "mask"]).sum(-1), batch["action_log_prob"]
    )
    assert list(batch["language_instruction"]) == ["track"] * 8
    c.shutdown()


def test_draw_guard_warns_and_returns_what_it_has():
    c = collector(make_env(4), oracle_policy(), max_context_draws=3)
    with pytest.warns(RuntimeWarning, match="max_context_draws=3"):
        batch = next(iter(c))
    assert batch.batch_size == (0,)
    assert c.last_stats.contexts_drawn == 3 and c.last_stats.groups_all_success == 3
    assert c.last_stats.hit_draw_limit
    c.shutdown()


def test_without_dynamic_sampling_every_group_counts():
    c = collector(make_env(4), oracle_policy(), dynamic_sampling=False)
    batch = next(iter(c))
    assert batch.batch_size == (8,) and bool(batch["success"].all())
    assert torch.equal(batch["advantage"], torch.zeros(8, 1))
    stats = c.last_stats  # kept, and still counted as uniform
    assert stats.groups_kept == 2 and stats.groups_all_success == 2 and stats.groups_all_failure == 0
    # kept but not informative; every rollout of the oracle succeeds
    assert stats.per_task == {0: {"groups": 2, "informative": 0, "kept": 8, "rollouts": 8, "successes": 8}}
    c.shutdown()


def test_user_replay_buffer_is_filled_and_none_is_yielded():
    actor, _ = laplace_actor(init_scale=0.3)
    rb = make_ript_replay_buffer(16, 4)
    c = collector(make_env(4), actor, replay_buffer=rb, trajs_per_batch=8)
    assert next(iter(c)) is None
    assert len(rb) == 8 and "advantage" in rb[:]
    c.shutdown()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(group_size=1), "group_size"),
        (dict(trajs_per_batch=6), "multiple of group_size"),
        (dict(max_frames_per_traj=0), "max_frames_per_traj"),
        (dict(max_context_draws=1), "max_context_draws"),
    ],
)
def test_bad_configs_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        collector(make_env(2), oracle_policy(), **kwargs)


def _serial_toy_env():
    return SerialEnv(4, partial(ContextToyVLAEnv, action_dim=2, max_steps=4))


def test_runs_under_torchrl_multi_process_collector():
    import gc

    from torchrl.collectors import MultiSyncCollector

    actor, _ = laplace_actor(init_scale=0.3)
    group_collector = partial(GroupCollector, context_dataset=contexts(), group_size=4, seed=0,
                              dynamic_sampling=False)
    collector = MultiSyncCollector(
        [_serial_toy_env, _serial_toy_env], actor, frames_per_batch=16, max_frames_per_traj=4,
        collector_class=group_collector, total_frames=32,
    )
    batches = [batch.reshape(-1) for batch in collector]
    collector.shutdown()
    del collector
    gc.collect()
    assert len(batches) == 2
    for batch in batches:
        assert batch.batch_size == (16,)
        # workers draw different contexts and never share a group id
        ids = batch["group_id"].reshape(2, 8)
        assert not set(ids[0].tolist()) & set(ids[1].tolist())
        for g in batch["group_id"].unique():
            assert int((batch["group_id"] == g).sum()) == 4
        assert batch["advantage"].shape == (16, 1)


def test_set_keys_renames_the_row_entries_and_the_buffer_reads_them():
    actor, _ = laplace_actor(init_scale=0.3)
    c = collector(make_env(4), actor, trajs_per_batch=8)
    c.set_keys(reward="R", group_id="gid", context_id="cid", task_id="tid")
    try:
        batch = next(iter(c))
    finally:
        c.shutdown()
    for key in ("R", "gid", "cid", "tid", "advantage"):
        assert key in batch.keys(), key
    assert "reward" not in batch.keys() and "group_id" not in batch.keys()
    for g in batch["gid"].unique():  # RLOO and the filter read the renamed reward and group id
        rewards = batch["R"][batch["gid"] == g]
        assert rewards.min() == 0 and rewards.max() == 1
    stats = c.last_stats
    assert stats.groups_completed == stats.groups_kept + stats.groups_all_success + stats.groups_all_failure


def test_an_adaptive_sampler_is_fed_every_finished_rollout():
    g = torch.Generator().manual_seed(0)
    ds = ContextDataset(torch.rand(16, 2, generator=g) - 0.5, [0] * 16, ["track"], seed=0,
                        sampler=AdaptiveSampler(group_size=4, memory=float("inf")))  # forgets nothing
    # an oracle solves every context: each group is uniform and dropped, yet the sampler hears of it
    c = collector(make_env(4), oracle_policy(), context_dataset=ds, trajs_per_batch=8, max_context_draws=3)
    try:
        with pytest.warns(RuntimeWarning, match="max_context_draws"):
            batch = next(iter(c))
    finally:
        c.shutdown()
    stats = c.last_stats
    assert batch.shape[0] == 0 and stats.groups_all_success == stats.groups_completed == 3
    sampler = ds.context_sampler
    assert float(sampler.successes.sum()) == pytest.approx(12) and float(sampler.failures.sum()) == 0
