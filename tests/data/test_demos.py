"""HDF5 demo format: write/read round trip, contexts, BC chunks, MetaWorld recording."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from torchrl_ript.data.context import ContextDataset
from torchrl_ript.data.demos import (
    LIBERO_KEY_MAP,
    DemoWriter,
    demos_to_bc_dataset,
    read_demos,
)


def _fake_demo(length, seed):
    rng = np.random.default_rng(seed)
    return dict(
        obs={
            "agentview_rgb": rng.integers(0, 256, (length, 6, 5, 3), dtype=np.uint8),
            "eye_in_hand_rgb": rng.integers(0, 256, (length, 6, 5, 3), dtype=np.uint8),
            "joint_states": rng.standard_normal((length, 7)),
            "gripper_states": rng.standard_normal((length, 2)),
        },
        actions=rng.standard_normal((length, 7)),
        states=rng.standard_normal((length, 10)),
        context_state=rng.standard_normal(10),
    )


@pytest.fixture
def demo_file(tmp_path):
    path = tmp_path / "sub" / "open_drawer_demo.hdf5"
    demos = [_fake_demo(4, 0), _fake_demo(3, 1)]
    with DemoWriter(path, task_name="open_drawer", language_instruction="open the drawer") as writer:
        for demo in demos:
            writer.add_demo(**demo)
    return path, demos


def test_round_trip_maps_keys_and_converts_images(demo_file):
    path, demos = demo_file
    read = read_demos(path, key_map=LIBERO_KEY_MAP)
    assert len(read) == 2 and read.task_name == "open_drawer"
    assert read.instruction == "open the drawer"
    for got, want in zip(read.demos, demos):
        obs = want["obs"]
        assert got.batch_size == torch.Size([len(want["actions"])])
        image = got["observation", "image"]
        assert image.dtype == torch.uint8 and image.shape[1:] == (3, 6, 5)
        assert torch.equal(image, torch.from_numpy(obs["agentview_rgb"]).permute(0, 3, 1, 2))
        assert torch.equal(
            got["observation", "wrist_image"],
            torch.from_numpy(obs["eye_in_hand_rgb"]).permute(0, 3, 1, 2),
        )
        state = np.concatenate([obs["joint_states"], obs["gripper_states"]], -1)
        assert torch.allclose(got["observation", "state"], torch.from_numpy(state).float())
        assert torch.allclose(got["action"], torch.from_numpy(want["actions"]).float())

        assert torch.equal(got["states"], torch.from_numpy(want["states"]))
        assert got["done"][:, 0].tolist() == [False] * (len(got) - 1) + [True]
        assert got["reward"].sum() == 1.0 and got["reward"][-1] == 1.0
    expected = torch.from_numpy(np.stack([d["context_state"] for d in demos]))
    assert torch.equal(read.contexts, expected)


def test_file_layout_is_robomimic_like(demo_file):
    path, _ = demo_file
    with h5py.File(path, "r") as file:
        data = file["data"]
        assert data.attrs["total"] == 7
        assert '"language_instruction": "open the drawer"' in data.attrs["problem_info"]
        assert data["demo_1/obs/agentview_rgb"].shape == (3, 6, 5, 3)
        assert data["demo_0"].attrs["num_samples"] == 4
        assert set(data["demo_0"]) >= {"obs", "actions", "states", "rewards", "dones", "context_state"}


def test_context_dataset_reads_the_demo_contexts(demo_file):
    path, demos = demo_file
    ds = ContextDataset.from_demonstrations(path)
    assert ds.task_names == ["open_drawer"] and ds.instruction(0) == "open the drawer"
    assert torch.equal(ds.states, torch.from_numpy(np.stack([d["context_state"] for d in demos])))


def test_bc_dataset_chunks_stay_inside_each_demo(demo_file):
    path, demos = demo_file
    bc = demos_to_bc_dataset([read_demos(path, key_map=LIBERO_KEY_MAP)], chunk_size=3)
    assert bc.shape == torch.Size([7])
    chunk, pad = bc["vla_action", "chunk"], bc["action_is_pad"]
    assert chunk.shape == (7, 3, 7) and pad.shape == (7, 3)
    first = torch.from_numpy(demos[0]["actions"]).float()
    assert torch.allclose(chunk[1], first[1:4])
    # Last step of demo 0: the chunk is padded with its own last action, not demo 1's.
    assert pad[3].tolist() == [False, True, True]
    assert torch.allclose(chunk[3], first[3].expand(3, 7))
    assert bc["demo_id"][:, 0].tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert bc[0]["language_instruction"] == "open the drawer"


def test_missing_key_names_the_fix(demo_file):
    path, _ = demo_file
    with pytest.raises(KeyError, match="fix key_map"):
        read_demos(path, key_map={"corner2_rgb": ("observation", "image")})


def test_metaworld_expert_demos_replay_exactly(tmp_path):
    pytest.importorskip("metaworld")
    from torchrl_ript.envs.common import context_reset_td
    from torchrl_ript.envs.metaworld import MetaWorldEnv, metaworld_contexts
    from torchrl_ript.envs.metaworld_demos import main, metaworld_key_map

    (path,) = main(
        ["--tasks", "reach-v3", "--n", "2", "--noise", "0.2", "--seed", "4",
         "--image-size", "32", "--max-steps", "150", "--out", str(tmp_path)]
    )
    demos = read_demos(path, key_map=metaworld_key_map(("corner2",)))
    assert len(demos) == 2 and demos.task_name == "reach-v3"
    with h5py.File(path, "r") as file:
        index = [int(file[f"data/demo_{i}"].attrs["context_index"]) for i in range(2)]
        expert = file["data/demo_0/expert_actions"][()]
    assert not np.allclose(expert, demos.demos[0]["action"].numpy())  # noise was added
    contexts = metaworld_contexts(["reach-v3"], max(index) + 1, seed=4)
    assert torch.equal(demos.contexts, contexts.states[index])
    from_file = ContextDataset.from_demonstrations(path)
    assert torch.equal(from_file.states, demos.contexts)

    # Replaying the recorded actions from the stored context reproduces the demo.
    env = MetaWorldEnv(task_names=["reach-v3"], image_size=32, max_steps=150)
    demo = demos.demos[0]
    td = env.reset(context_reset_td(demos.contexts[:1], torch.tensor([0]))[0])
    for t in range(demo.shape[0]):
        assert torch.equal(td["observation", "image"], demo["observation", "image"][t])
        assert torch.equal(td["observation", "state"], demo["observation", "state"][t])
        td = env.step(td.set("action", demo["action"][t]))["next"]
    assert bool(td["success"]) and float(td["reward"]) == 1.0
    env.close()


def test_rotate_images_180_for_libero_files(demo_file):
    path, demos = demo_file
    plain = read_demos(path, key_map=LIBERO_KEY_MAP)
    rotated = read_demos(path, key_map=LIBERO_KEY_MAP, rotate_images_180=True)
    want = torch.from_numpy(demos[0]["obs"]["agentview_rgb"][:, ::-1, ::-1].copy()).permute(0, 3, 1, 2)
    assert torch.equal(rotated.demos[0]["observation", "image"], want)
    assert not torch.equal(rotated.demos[0]["observation", "image"], plain.demos[0]["observation", "image"])
    assert torch.equal(rotated.demos[0]["observation", "state"], plain.demos[0]["observation", "state"])
