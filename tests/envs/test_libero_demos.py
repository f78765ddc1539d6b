"""Scripted LIBERO experts on the real simulator: success, files in LIBERO's layout, bitwise replay.

One ``libero_object`` env (~10 s to build) shared by the module; an expert
episode takes ~3 s without rendering, its rendered replay at 32 px a few more.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from torchrl_ript.envs.libero.setup import libero_available

pytestmark = pytest.mark.skipif(
    not libero_available(),
    reason="LIBERO is not installed: run `bash scripts/install_libero.sh`.",
)

SUITE, TASK, START = "libero_object", 0, 49  # alphabet soup -> basket; the expert takes ~125 actions


@pytest.fixture(scope="module")
def env():
    from torchrl_ript.envs.libero import LiberoContextEnv

    env = LiberoContextEnv(SUITE, TASK, camera_size=32)
    yield env
    env.close()


@pytest.fixture(scope="module")
def start_state():
    from torchrl_ript.envs.libero.contexts import libero_contexts

    contexts = libero_contexts(SUITE, task_ids=[TASK])
    return contexts.states[contexts.task_contexts(TASK)[START]]


def test_expert_succeeds_within_time_budget(env, start_state):
    from torchrl_ript.envs.libero.experts import LiberoScriptedExpert, run_expert_episode

    expert = LiberoScriptedExpert(env)
    assert (expert.pick, expert.target) == ("alphabet_soup_1", "basket_1_contain_region")
    episode = run_expert_episode(env, start_state, expert=expert)
    assert episode.success
    # well inside the suite's 280-action limit, and not by luck at the first steps
    assert 60 < episode.steps < 0.7 * env.max_episode_steps
    assert episode.actions.shape == (episode.steps, 7) and np.abs(episode.actions).max() <= 1.0
    # the gripper closed (grasp) and opened again (release) on the way
    assert (episode.actions[:, -1] > 0).any() and episode.actions[0, -1] < 0
    # seeded and closed-loop on an exact context: the same start gives the same actions
    again = run_expert_episode(env, start_state, expert=expert)
    np.testing.assert_array_equal(again.actions, episode.actions)


def test_noisy_expert_differs_and_still_succeeds(env, start_state):
    from torchrl_ript.envs.libero.experts import run_expert_episode

    clean = run_expert_episode(env, start_state)
    noisy = run_expert_episode(env, start_state, noise=0.1, rng=np.random.default_rng(0))
    assert noisy.success
    assert not np.array_equal(noisy.actions[:10], clean.actions[:10])
    np.testing.assert_array_equal(noisy.expert_actions[0], clean.expert_actions[0])


def test_demo_file_reads_back_and_replays_bitwise(env, tmp_path):
    from torchrl_ript.data.demos import LIBERO_KEY_MAP, read_demos
    from torchrl_ript.envs.common import context_reset_td
    from torchrl_ript.envs.libero import pad_state
    from torchrl_ript.envs.libero.contexts import libero_contexts
    from torchrl_ript.envs.libero.experts import record_libero_demos

    path = record_libero_demos(SUITE, TASK, 1, out=tmp_path, starts=[START], noise=0.05, progress=False, env=env)
    assert path.name == "pick_up_the_alphabet_soup_and_place_it_in_the_basket_demo.hdf5"
    demos = read_demos(path, key_map=LIBERO_KEY_MAP, rotate_images_180=True)
    assert len(demos) == 1 and demos.instruction == "pick up the alphabet soup and place it in the basket"
    assert demos.env_args["expert"].endswith("LiberoScriptedExpert") and demos.env_args["noise"] == 0.05
    demo = demos.demos[0]
    T = demo.shape[0]
    assert demo["observation", "image"].shape == (T, 3, 32, 32)
    assert demo["observation", "wrist_image"].shape == (T, 3, 32, 32)
    assert demo["observation", "state"].shape == (T, 9)
    assert demo["reward"][-1].item() == 1.0 and demo["reward"][:-1].sum() == 0  # ends at the first success
    import h5py

    with h5py.File(path, "r") as file:
        group = file["data/demo_0"]
        assert int(group.attrs["init_state_index"]) == START
        assert set(group["obs"]) >= {"agentview_rgb", "eye_in_hand_rgb", "joint_states", "gripper_states",
                                     "ee_pos", "ee_ori", "ee_states"}
        actions = group["actions"][()]
        states = group["states"][()]
        context = group["context_state"][()]
        assert json.loads(file["data"].attrs["problem_info"])["language_instruction"] == demos.instruction
    # the stored context is the benchmark init state it started from
    inits = libero_contexts(SUITE, task_ids=[TASK])
    np.testing.assert_array_equal(
        pad_state(context, inits.state_dim).numpy(), inits.states[inits.task_contexts(TASK)[START]].numpy()
    )
    # replay from the stored context: a context reset gives the stored first image, and the
    # stored actions give every stored state bitwise and succeed at the last one (the recorder
    # already replayed through env.step; the physics path is the same without rendering)
    td = env.reset(context_reset_td(pad_state(context, env.context_state_dim)[None], torch.tensor([TASK]))[0])
    assert torch.equal(td["observation", "image"], demo["observation", "image"][0])
    for t in range(T):
        np.testing.assert_array_equal(env.get_sim_state(), states[t])
        assert env.step_physics(actions[t]) == (t == T - 1)
    # and the context datasets take these files like LIBERO's own
    from_demos = libero_contexts(SUITE, task_ids=[TASK], source="demos", demo_paths=[path])
    torch.testing.assert_close(from_demos.states[0], inits.states[inits.task_contexts(TASK)[START]], rtol=0, atol=0)


def test_uncovered_task_raises_clear_error():
    from torchrl_ript.envs.libero import LiberoContextEnv
    from torchrl_ript.envs.libero.experts import LiberoScriptedExpert, expert_supports

    env = LiberoContextEnv("libero_goal", 0, camera_size=32, wrist_camera=False)  # open the middle drawer
    try:
        assert not expert_supports(env)
        with pytest.raises(ValueError, match="pick and place"):
            LiberoScriptedExpert(env)
    finally:
        env.close()


def test_fresh_starts_seeded_new_and_fixture_checked(env):
    from torchrl_ript.envs.libero import LiberoContextEnv
    from torchrl_ript.envs.libero.contexts import libero_contexts, sample_libero_starts
    from torchrl_ript.envs.libero.experts import run_expert_episode

    a, b = sample_libero_starts(SUITE, TASK, 2, seed=0, env=env)
    again = sample_libero_starts(SUITE, TASK, 1, seed=0, env=env)[0]
    np.testing.assert_array_equal(a, again)  # seeded
    assert not np.array_equal(a, b)
    inits = libero_contexts(SUITE, task_ids=[TASK]).states[:, : a.size].numpy()
    assert np.abs(inits - a).max(1).min() > 1e-3  # not one of the benchmark's init states
    assert run_expert_episode(env, a).success  # a valid scene
    # a scene with fixtures: a fresh draw would move them, which a context cannot hold
    spatial = LiberoContextEnv("libero_spatial", 0, camera_size=32, wrist_camera=False)
    try:
        with pytest.raises(ValueError, match="move the fixtures"):
            spatial.sample_start(5)
    finally:
        spatial.close()
