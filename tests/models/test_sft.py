import pytest
import torch
from torchrl.envs.utils import ExplorationType, set_exploration_type

from model_helpers import make_obs, toy_demos
from torchrl_ript.models import (
    QuestPolicy, RegressionPolicy, load_policy, make_quest_actor, make_regression_actor,
    quest_config, regression_config, save_policy,
)
from torchrl_ript.modules import chunk_nll
from torchrl_ript.trainers.sft import (
    batch_iterator, fit_regression_scale, make_chunk_dataset, quest_prior_loss,
    train_quest_autoencoder, train_quest_prior, train_regression,
)


def _old_chunk_rows(demo, chunk):
    """The rows of the deleted ``chunk_demo`` (pad="last"), written out: row t holds
    actions t..t+chunk-1, the last action repeated past the end, masked False there."""
    T = demo.batch_size[0]
    idx = torch.arange(T)[:, None] + torch.arange(chunk)[None, :]
    return demo["action"][idx.clamp(max=T - 1)], idx < T


def test_chunk_rows_pad_and_mask_as_before():
    demo = toy_demos(1, T=5)[0]
    rows = make_chunk_dataset([demo], 4)  # TorchRL's ActionChunkTransform path
    assert rows.batch_size == (5,)
    assert rows["action"].shape == (5, 4, 4) and rows["action_mask"].shape == (5, 4)
    actions, mask = _old_chunk_rows(demo, 4)
    assert torch.equal(rows["action"], actions) and torch.equal(rows["action_mask"], mask)
    torch.testing.assert_close(rows["action"][1], demo["action"][1:5])
    assert rows["action_mask"][3].tolist() == [True, True, False, False]
    torch.testing.assert_close(rows["action"][3, 2], demo["action"][4])  # last action repeated
    assert torch.equal(rows["observation", "state"], demo["observation", "state"])
    assert torch.equal(rows["observation", "image"], demo["observation", "image"])
    assert "next" not in rows.keys() and set(rows.keys()) == {"observation", "action", "action_mask", "demo_id", "demo_count",
                                                              "language_instruction"}
    ds = make_chunk_dataset(toy_demos(2, T=5), 4)
    assert ds.batch_size == (10,)
    assert ds[torch.tensor([0, 9])].get("language_instruction").tolist() == ["open the drawer", "close the drawer"]
    # a demo shorter than the chunk: every row padded with its last action
    short = toy_demos(1, T=2)[0]
    actions, mask = _old_chunk_rows(short, 4)
    rows = make_chunk_dataset([short], 4)
    assert torch.equal(rows["action"], actions) and torch.equal(rows["action_mask"], mask)


def test_chunk_rows_of_a_recorded_metaworld_demo_equal_the_old_rows(tmp_path):
    """The known demo: a scripted reach-v3 episode, chunked as SFT sees it."""
    pytest.importorskip("metaworld")
    from torchrl_ript.data.demos import read_demos
    from torchrl_ript.envs.metaworld_demos import metaworld_key_map, record_metaworld_demos
    from torchrl_ript.trainers.sft import chunk_demo_files

    path = record_metaworld_demos("reach-v3", 2, out=tmp_path, image_size=32, max_steps=100, progress=False)
    file = read_demos(path, key_map=metaworld_key_map())
    rows = chunk_demo_files([file], 32)
    start = 0
    for demo in file.demos:
        T = demo.batch_size[0]
        actions, mask = _old_chunk_rows(demo, 32)
        assert torch.equal(rows["action"][start : start + T], actions)
        assert torch.equal(rows["action_mask"][start : start + T], mask)
        assert torch.equal(rows["observation", "image"][start : start + T], demo["observation", "image"])
        start += T
    assert start == rows.batch_size[0]


def test_quest_fsq_roundtrip_after_short_fit():
    policy = QuestPolicy(quest_config("tiny", action_dim=4))
    data = make_chunk_dataset(toy_demos(6, T=24), policy.config.chunk_size)
    batches = batch_iterator(data, 32)
    actions = data["action"]
    with torch.no_grad():
        err0 = (policy.autoencoder(actions)[0] - actions).abs().mean()
    hist = train_quest_autoencoder(policy, batches, steps=150, lr=3e-3, progress=False)
    policy.eval()
    with torch.no_grad():
        tokens = policy.autoencoder.encode(actions)
        recon = policy.autoencoder.decode(tokens)
        err = (recon - actions).abs().mean()
        torch.testing.assert_close(recon, policy.autoencoder(actions)[0], atol=1e-5, rtol=0)
    assert tokens.shape == (actions.shape[0], policy.config.n_tokens)
    assert hist[-1] < hist[0]
    assert err < 0.15 and err < 0.25 * err0, (err, err0)


def test_quest_prior_sft_lowers_token_nll():
    policy = QuestPolicy(quest_config("tiny", action_dim=4))
    data = make_chunk_dataset(toy_demos(4, T=16), policy.config.chunk_size)
    train_quest_autoencoder(policy, batch_iterator(data, 32), steps=20, lr=3e-3, progress=False)
    ae_before = {k: v.clone() for k, v in policy.autoencoder.state_dict().items()}
    hist = train_quest_prior(policy, batch_iterator(data, 32), steps=60, lr=3e-3, progress=False)
    assert sum(hist[-5:]) < sum(hist[:5])
    for k, v in policy.autoencoder.state_dict().items():
        assert torch.equal(v, ae_before[k]), k
    assert policy.training  # mode restored
    policy.eval()
    with torch.no_grad():
        assert quest_prior_loss(policy, data) < hist[0]


def test_regression_sft_then_scale_fit():
    policy = RegressionPolicy(regression_config("tiny", action_dim=4))
    actor = make_regression_actor(policy)
    data = make_chunk_dataset(toy_demos(4, T=16), policy.config.chunk_size)
    scale_before = {k: v.clone() for k, v in policy.scale_head.state_dict().items()}
    hist = train_regression(policy, batch_iterator(data, 32), steps=80, lr=3e-3, progress=False)
    assert sum(hist[-5:]) < 0.7 * sum(hist[:5])
    for k, v in policy.scale_head.state_dict().items():
        assert torch.equal(v, scale_before[k])
    trunk_before = {k: v.clone() for k, v in policy.trunk.state_dict().items()}
    policy.eval()
    with torch.no_grad():
        nll0 = chunk_nll(actor, data, mask_key="action_mask")
    nll = fit_regression_scale(policy, batch_iterator(data, 32), steps=60, lr=1e-2, progress=False)
    with torch.no_grad():
        nll1 = chunk_nll(actor, data, mask_key="action_mask")
    assert nll1 < nll0 and nll[-1] < nll[0]
    for k, v in policy.trunk.state_dict().items():
        assert torch.equal(v, trunk_before[k])


def test_checkpoint_round_trip(tmp_path):
    obs = make_obs(3, seed=5)
    q = QuestPolicy(quest_config("tiny", action_dim=4, top_k=4))
    r = RegressionPolicy(regression_config("tiny", action_dim=4, loss="mse"))
    for policy, make in [(q, make_quest_actor), (r, make_regression_actor)]:
        with torch.no_grad():  # perturb so defaults cannot pass vacuously
            for p in policy.parameters():
                p.add_(0.01 * torch.randn_like(p))
        policy.eval()
        save_policy(policy, tmp_path / "p.pt", extra={"step": 7})
        loaded, extra = load_policy(tmp_path / "p.pt", return_extra=True)
        assert extra == {"step": 7} and type(loaded) is type(policy)
        assert loaded.config == policy.config
        with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
            a, b = make(policy)(obs.clone()), make(loaded)(obs.clone())
        for key in a.keys(True, True):
            if key != "language_instruction":
                assert torch.equal(a[key], b[key]), key


def test_chunks_from_hdf5_demo_files(tmp_path):
    demos_mod = pytest.importorskip("torchrl_ript.data.demos")
    import numpy as np

    from torchrl_ript.trainers.sft import chunk_demo_files, from_bc_dataset

    path = tmp_path / "reach.hdf5"
    with demos_mod.DemoWriter(path, task_name="reach", language_instruction="reach the goal") as w:
        for T in (5, 3):
            w.add_demo({"rgb": np.zeros((T, 32, 32, 3), np.uint8), "eef": np.zeros((T, 8))},
                       actions=np.arange(T * 4, dtype=np.float32).reshape(T, 4))
    files = [demos_mod.read_demos(path, key_map={"rgb": ("observation", "image"), "eef": ("observation", "state")})]
    rows = chunk_demo_files(files, 8)
    other = from_bc_dataset(demos_mod.demos_to_bc_dataset(files, chunk_size=8))
    assert rows.batch_size == other.batch_size == (8,)
    torch.testing.assert_close(rows["action"], other["action"])
    assert torch.equal(rows["action_mask"], other["action_mask"])
    assert rows.get("language_instruction").tolist() == ["reach the goal"] * 8
    policy = QuestPolicy(quest_config("tiny", action_dim=4))
    with set_exploration_type(ExplorationType.RANDOM), torch.no_grad():
        assert make_quest_actor(policy)(rows[:3].clone())["action_tokens"].shape == (3, policy.scored_tokens)
    assert quest_prior_loss(policy, other[:4]) > 0
