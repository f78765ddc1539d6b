"""MetaWorldEnv: specs, exact context resets, chunked steps, workers (real simulator)."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

pytest.importorskip("metaworld")

from torchrl.envs import ParallelEnv  # noqa: E402
from torchrl.envs.utils import check_env_specs  # noqa: E402

from torchrl_ript.envs.common import context_reset_td  # noqa: E402
from torchrl_ript.envs.metaworld import (  # noqa: E402
    CONTEXT_DIM,
    METAWORLD_INSTRUCTIONS,
    MetaWorldEnv,
    metaworld_contexts,
    metaworld_task_names,
    rand_vec_dim,
    sample_rand_vecs,
)

TASKS = ["reach-v3", "pick-place-v3"]
SMALL = dict(task_names=TASKS, camera_names=("corner2", "gripperPOV"), image_size=32, max_steps=30)


def _obs(td):
    return td.select(
        ("observation", "image"), ("observation", "wrist_image"), ("observation", "state"), strict=False
    )


def _assert_bitwise_equal(a, b):
    for key in a.keys(include_nested=True, leaves_only=True):
        assert torch.equal(a[key], b[key]), key


def _reset_to(env, state, task_id):
    return env.reset(context_reset_td(state.reshape(1, -1), torch.tensor([task_id]))[0])


def test_all_tasks_have_instructions_and_context_fits():
    names = metaworld_task_names()
    assert len(names) == 50
    assert set(METAWORLD_INSTRUCTIONS) == set(names)
    assert max(rand_vec_dim(name) for name in names[:5]) <= CONTEXT_DIM


def test_unknown_task_lists_valid_names():
    with pytest.raises(ValueError, match="reach-v3"):
        MetaWorldEnv(task_names=["reach-v2"])


@pytest.mark.parametrize("action_chunk", [None, 3])
def test_check_env_specs(action_chunk):
    env = MetaWorldEnv(**SMALL, action_chunk=action_chunk, seed=0)
    check_env_specs(env)
    expected = (4,) if action_chunk is None else (action_chunk, 4)
    assert env.action_spec.shape == torch.Size(expected)
    env.close()


def test_context_reset_is_bitwise_exact_and_trajectories_match():
    contexts = metaworld_contexts(TASKS, 2, seed=3)
    env_a = MetaWorldEnv(**SMALL, seed=0)
    env_b = MetaWorldEnv(**SMALL, seed=1)
    env_b.rollout(5)  # a different history must not matter
    row = 3  # pick-place-v3, second context
    first_a = _reset_to(env_a, contexts.states[row], int(contexts.task_ids[row]))
    first_b = _reset_to(env_b, contexts.states[row], int(contexts.task_ids[row]))
    _assert_bitwise_equal(_obs(first_a), _obs(first_b))
    assert first_a["language_instruction"] == METAWORLD_INSTRUCTIONS["pick-place-v3"]
    assert int(first_a["task_id"]) == 1
    assert torch.equal(first_a["context_state"], contexts.states[row])
    # Not vacuous: another context of the same task looks different.
    other = _reset_to(env_a, contexts.states[2], 1)
    assert not torch.equal(other["observation", "image"], first_b["observation", "image"])
    first_a = _reset_to(env_a, contexts.states[row], 1)

    actions = torch.rand(12, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    td_a, td_b = first_a, first_b
    for action in actions:
        td_a = env_a.step(td_a.set("action", action))["next"]
        td_b = env_b.step(td_b.set("action", action))["next"]
        _assert_bitwise_equal(_obs(td_a), _obs(td_b))
    assert not torch.equal(td_a["observation", "state"], first_a["observation", "state"])
    env_a.close()
    env_b.close()


def test_fresh_reset_is_seeded_and_echoes_a_replayable_context():
    env = MetaWorldEnv(**SMALL, seed=5)
    fresh = env.reset()
    assert not bool(fresh["set_state"])
    replay = _reset_to(env, fresh["context_state"], int(fresh["task_id"]))
    _assert_bitwise_equal(_obs(fresh), _obs(replay))
    same_seed = MetaWorldEnv(**SMALL, seed=5).reset()
    assert torch.equal(same_seed["context_state"], fresh["context_state"])
    assert not torch.equal(env.reset()["context_state"], fresh["context_state"])
    env.close()


def test_chunked_step_renders_once_and_matches_single_steps():
    contexts = metaworld_contexts(["reach-v3"], 1, seed=0)
    chunked = MetaWorldEnv(task_names=["reach-v3"], image_size=32, action_chunk=5, max_steps=30)
    single = MetaWorldEnv(task_names=["reach-v3"], image_size=32, max_steps=30)
    td_c = _reset_to(chunked, contexts.states[0], 0)
    td_s = _reset_to(single, contexts.states[0], 0)
    actions = torch.tensor([[0.5, -0.3, 0.2, 1.0]]).expand(5, 4)
    before = chunked.render_count
    td_c = chunked.step(td_c.set("action", actions))["next"]
    assert chunked.render_count - before == 1  # one camera, one render per chunk
    assert int(td_c["env_steps"]) == 5
    for action in actions:
        td_s = single.step(td_s.set("action", action))["next"]
    _assert_bitwise_equal(_obs(td_c), _obs(td_s))
    chunked.close()
    single.close()


def test_truncation_at_max_steps_counts_raw_steps():
    env = MetaWorldEnv(task_names=["reach-v3"], camera_names=(), action_chunk=4, max_steps=10, seed=0)
    rollout = env.rollout(10, break_when_any_done=True)
    assert rollout.shape[0] == 3  # 4 + 4 + 2 raw steps
    assert rollout["next", "truncated"][-1].item() and not rollout["next", "terminated"].any()
    assert rollout["next", "reward"].sum() == 0
    env.close()


def test_scripted_success_gives_reward_once_and_terminates():
    from metaworld.policies import SawyerReachV3Policy

    env = MetaWorldEnv(task_names=["reach-v3"], camera_names=(), max_steps=200, seed=0)
    td = env.reset()
    policy = SawyerReachV3Policy()
    rewards = []
    for _ in range(200):
        # The expert reads MetaWorld's full observation (goal visible).
        action = policy.get_action(env.raw_observation)
        td = env.step(td.set("action", torch.as_tensor(action, dtype=torch.float32)))["next"]
        rewards.append(float(td["reward"]))
        if td["done"]:
            break
    assert bool(td["success"]) and bool(td["terminated"]) and not bool(td["truncated"])
    assert rewards[-1] == 1.0 and sum(rewards) == 1.0
    env.close()


def test_contexts_are_seeded_and_task_independent():
    a = sample_rand_vecs("push-v3", 3, seed=7)
    assert np.array_equal(a, sample_rand_vecs("push-v3", 3, seed=7))
    assert np.array_equal(a[:2], sample_rand_vecs("push-v3", 2, seed=7))
    assert not np.array_equal(a, sample_rand_vecs("push-v3", 3, seed=8))
    ds = metaworld_contexts(["reach-v3", "push-v3"], 3, seed=7)
    assert torch.equal(ds.states[ds.task_contexts("push-v3")], torch.from_numpy(a))
    three = sample_rand_vecs("button-press-v3", 2, seed=0)
    assert rand_vec_dim("button-press-v3") == 3 and (three[:, 3:] == 0).all()


def test_parallel_env_spawn_workers_reset_identically():
    contexts = metaworld_contexts(TASKS, 1, seed=11)
    make = functools.partial(MetaWorldEnv, **SMALL)
    penv = ParallelEnv(2, make, mp_start_method="spawn")
    try:
        states = contexts.states[[1, 1]]
        out = penv.reset(context_reset_td(states, torch.tensor([1, 1])))
        _assert_bitwise_equal(_obs(out[0]), _obs(out[1]))
        local = _reset_to(MetaWorldEnv(**SMALL), contexts.states[1], 1)
        _assert_bitwise_equal(_obs(out[0]), _obs(local))
        assert out["observation", "image"].float().std() > 0
    finally:
        penv.close()


def test_serial_env_partial_context_reset():
    from functools import partial

    from torchrl.envs import SerialEnv

    from torchrl_ript.envs.common import context_reset_td

    env = SerialEnv(2, partial(MetaWorldEnv, task_names=["reach-v3"], image_size=32, max_steps=20, action_chunk=4))
    env.reset()
    contexts = metaworld_contexts(["reach-v3"], 2, seed=0)
    td = env.reset(context_reset_td(contexts.states, contexts.task_ids, reset_mask=torch.tensor([True, False])))
    single = MetaWorldEnv(task_names=["reach-v3"], image_size=32, max_steps=20, action_chunk=4)
    reference = single.reset(context_reset_td(contexts.states[:1], contexts.task_ids[:1])[0])
    assert torch.equal(td["observation", "image"][0], reference["observation", "image"])
    single.close()
    td["action"] = torch.zeros(2, 4, 4)
    assert env.step(td)["next", "env_steps"].reshape(-1).tolist() == [4, 4]
    env.close()


def test_rejected_context_raises_instead_of_hanging():
    from torchrl_ript.envs.metaworld import rand_vec_is_valid

    vec = torch.tensor(sample_rand_vecs("push-v3", 1, seed=0)[0])
    bad = vec.clone()
    bad[3:5] = bad[0:2]  # goal on the puck: push-v3's reset redraws such starts forever
    assert rand_vec_is_valid("push-v3", vec.numpy()) and not rand_vec_is_valid("push-v3", bad.numpy())
    env = MetaWorldEnv(task_names=["push-v3"], camera_names=(), max_steps=10)
    with pytest.raises(ValueError, match="rejected by .*MetaWorldContextProjection"):
        _reset_to(env, bad, 0)
    _assert_bitwise_equal(_obs(_reset_to(env, vec, 0)), _obs(_reset_to(env, vec, 0)))  # still usable
    env.close()


def test_noisy_contexts_are_projected_into_valid_starts():
    from torchrl_ript.data import ContextDataset
    from torchrl_ript.envs.metaworld import MetaWorldContextProjection, _scratch_env, rand_vec_is_valid

    tasks = ["push-v3", "drawer-close-v3"]
    project = MetaWorldContextProjection(tasks)
    demos = metaworld_contexts(tasks, 2, seed=0, project=project)
    variants = demos.jitter(20, 0.05, seed=0)  # 5 cm: many raw draws leave the box or get rejected
    box = {name: _scratch_env(name)._random_reset_space for name in tasks}
    for state, task_id in zip(variants.states, variants.task_ids.tolist()):
        name = tasks[task_id]
        dim = rand_vec_dim(name)
        assert rand_vec_is_valid(name, state.numpy())
        assert np.all(state[:dim].numpy() >= box[name].low - 1e-12) and np.all(state[:dim].numpy() <= box[name].high + 1e-12)
        assert torch.all(state[dim:] == 0)
    assert variants.states[variants.task_ids == 0].unique(dim=0).shape[0] > 20  # varied, not collapsed
    # per-rollout noise goes through the same projection
    noisy = ContextDataset(demos.states, demos.task_ids, tasks, noise_std=0.05, project=project, seed=0)
    starts = noisy.initial_states(torch.tensor([0, 0, 0, 2, 2]))
    assert all(rand_vec_is_valid(tasks[t], s.numpy()) for s, t in zip(starts, [0, 0, 0, 1, 1]))
    env = MetaWorldEnv(task_names=tasks, camera_names=(), max_steps=5)
    for state, task_id in zip(variants.states[::10], variants.task_ids[::10].tolist()):
        td = _reset_to(env, state, task_id)
        assert torch.allclose(td["context_state"], state)  # the env starts exactly there
    env.close()
