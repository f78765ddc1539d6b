import h5py
import numpy as np
import pytest
import torch

from torchrl_ript import ContextDataset


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match="empty"):
        ContextDataset(np.zeros((0, 3)), [], ["a"])
    with pytest.raises(ValueError, match="inconsistent sizes"):
        ContextDataset.from_list([{"task": "a", "state": [1, 2]}, {"task": "a", "state": [1, 2, 3]}])
    with pytest.raises(ValueError, match="inconsistent sizes"):
        ContextDataset.from_init_states({"a": np.zeros((2, 3)), "b": np.zeros((2, 4))})
    with pytest.raises(ValueError, match="one task id per state"):
        ContextDataset(np.zeros((3, 2)), [0, 0], ["a"])
    with pytest.raises(ValueError, match="task ids must lie"):
        ContextDataset(np.zeros((2, 2)), [0, 1], ["a"])
    with pytest.raises(ValueError, match="sampler"):
        ContextDataset(np.zeros((2, 2)), [0, 0], ["a"], sampler="weighted")


def test_seeded_sampling_is_reproducible_and_per_task_balances():
    states = np.arange(20, dtype=float).reshape(10, 2)
    ids = [0] * 9 + [1]  # task 1 has one context
    a = ContextDataset(states, ids, ["big", "small"], seed=3).sample(400)
    b = ContextDataset(states, ids, ["big", "small"], seed=3).sample(400)
    assert torch.equal(a["context_id"], b["context_id"])
    assert 0.02 < (a["task_id"] == 1).float().mean() < 0.25  # uniform over rows: ~10%
    balanced = ContextDataset(states, ids, ["big", "small"], sampler="per_task", seed=3).sample(400)
    assert 0.4 < (balanced["task_id"] == 1).float().mean() < 0.6
    one_task = ContextDataset(states, ids, ["big", "small"], seed=0).sample(20, task="small")
    assert one_task["context_id"].tolist() == [9] * 20


def test_noise_is_per_draw_and_optional():
    ds = ContextDataset(np.zeros((2, 3)), [0, 0], ["a"], noise_std=[0.0, 0.5, 0.0], seed=0)
    states = ds.initial_states(torch.tensor([0, 0, 0, 0]))
    assert torch.equal(states[:, 0], torch.zeros(4)) and torch.equal(states[:, 2], torch.zeros(4))
    assert states[:, 1].unique().numel() == 4  # every rollout gets its own noise
    exact = ContextDataset(np.ones((2, 3)), [0, 0], ["a"])
    assert torch.equal(exact.initial_states(torch.tensor([1, 1])), torch.ones(2, 3, dtype=torch.float64))


def test_save_load_round_trip(tmp_path):
    ds = ContextDataset(np.random.rand(5, 4), [0, 1, 1, 0, 1], ["a", "b"], ["do a", "do b"],
                        sampler="per_task", noise_std=0.1, seed=1)
    ds.save(tmp_path / "ctx.pt")
    back = ContextDataset.load(tmp_path / "ctx.pt")
    assert torch.equal(back.states, ds.states) and torch.equal(back.task_ids, ds.task_ids)
    assert back.instructions == ["do a", "do b"] and back.sampler == "per_task"
    torch.testing.assert_close(back.noise_std, ds.noise_std)
    assert torch.equal(back.sample(10)["context_id"], ContextDataset.load(tmp_path / "ctx.pt").sample(10)["context_id"])


def test_from_demonstrations_takes_first_states(tmp_path):
    path = tmp_path / "KITCHEN_SCENE1_open_the_drawer_demo.hdf5"
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["problem_info"] = '{"language_instruction": "open the top drawer"}'
        for i in range(3):
            data.create_dataset(f"demo_{i}/states", data=np.full((6, 5), float(i)) + np.arange(6)[:, None])
    ds = ContextDataset.from_demonstrations(path)
    assert len(ds) == 3 and ds.task_names == ["KITCHEN_SCENE1_open_the_drawer"]
    assert ds.instruction(0) == "open the top drawer"
    assert ds.states[:, 0].tolist() == [0.0, 1.0, 2.0]  # row 0 of each demo


def test_split_holds_out_per_task():
    ds = ContextDataset(np.arange(12.0).reshape(12, 1), [0] * 6 + [1] * 6, ["a", "b"])
    train, held = ds.split(2, seed=0)
    assert len(train) == 8 and len(held) == 4
    assert sorted(held.task_ids.tolist()) == [0, 0, 1, 1]
    assert not set(train.states.reshape(-1).tolist()) & set(held.states.reshape(-1).tolist())
