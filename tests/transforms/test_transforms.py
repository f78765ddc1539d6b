import pytest
import torch
from tensordict import TensorDict
from torchrl.data import LazyTensorStorage, ReplayBuffer

from torchrl_ript import ContextDataset, ContextOutcomeFeed, RLOOAdvantage, ZeroAdvantageFilter, make_ript_replay_buffer
from torchrl_ript.data import AdaptiveSampler


def rows(groups, rewards, **extra):
    n = len(groups)
    data = {
        "group_id": torch.tensor(groups),
        "reward": torch.tensor(rewards, dtype=torch.float32).unsqueeze(-1),
        "payload": torch.arange(n, dtype=torch.float32),
    }
    data.update(extra)
    return TensorDict(data, batch_size=[n])


def test_rloo_matches_hand_computation():
    out = RLOOAdvantage(4).inv(rows([0] * 4 + [1] * 4, [1, 0, 0, 0, 1, 1, 0, 1]))
    assert out["advantage"].shape == (8, 1)
    by_group = {int(g): out["advantage"][out["group_id"] == g].squeeze(-1) for g in (0, 1)}
    torch.testing.assert_close(by_group[0], torch.tensor([1, -1 / 3, -1 / 3, -1 / 3]))
    # rewards [1,1,0,1]: baselines 2/3, 2/3, 1, 2/3
    torch.testing.assert_close(by_group[1], torch.tensor([1 / 3, 1 / 3, -1.0, 1 / 3]))


def test_rloo_uniform_groups_are_zero_and_filtered():
    scored = RLOOAdvantage(3).inv(rows([0, 0, 0, 1, 1, 1], [1, 1, 1, 0, 0, 0]))
    assert torch.equal(scored["advantage"], torch.zeros(6, 1))
    f = ZeroAdvantageFilter()
    assert f.inv(scored) is None
    assert (f.dropped_all_success, f.dropped_all_failure, f.kept_groups) == (1, 1, 0)


def test_partial_groups_wait_across_writes():
    rloo = RLOOAdvantage(4)
    assert rloo.inv(rows([7, 7, 3], [1, 0, 0])) is None
    assert rloo.num_pending == 3
    out = rloo.inv(rows([3, 7, 7, 3], [1, 0, 0, 0]))
    # group 7 completes on this write, group 3 is still one short
    assert out["group_id"].tolist() == [7, 7, 7, 7]
    torch.testing.assert_close(out["advantage"].squeeze(-1), torch.tensor([1, -1 / 3, -1 / 3, -1 / 3]))
    assert rloo.num_pending == 3
    out = rloo.inv(rows([3], [1]))
    assert out["group_id"].tolist() == [3] * 4 and rloo.num_pending == 0


def ript_buffer(group_size, capacity=32, **kwargs):
    return make_ript_replay_buffer(capacity, group_size, **kwargs)


def test_the_buffer_judges_each_group_once_after_its_advantages():
    rb = ript_buffer(2)
    # group 0 informative, 1 all-success, 2 all-failure, 3 split over writes
    rb.extend(rows([0, 1, 3, 1, 2], [1, 1, 1, 1, 0]))
    rb.extend(rows([2, 0, 3], [0, 0, 0]))
    assert len(rb) == 4
    got = rb[:4]
    assert got["group_id"].tolist() == [0, 0, 3, 3]
    torch.testing.assert_close(got["advantage"].squeeze(-1), torch.tensor([1.0, -1.0, 1.0, -1.0]))
    torch.testing.assert_close(got["payload"], torch.tensor([0.0, 1.0, 2.0, 2.0]))
    judge = rb.transform[0]
    assert (judge.kept_groups, judge.dropped_all_success, judge.dropped_all_failure) == (2, 1, 1)


def test_without_dynamic_sampling_the_filter_counts_and_keeps_every_group():
    rb = ript_buffer(2, dynamic_sampling=False)
    rb.extend(rows([0, 0, 1, 1, 2, 2], [1, 0, 1, 1, 0, 0]))
    assert len(rb) == 6
    judge = rb.transform[0]
    assert (judge.kept_groups, judge.dropped_all_success, judge.dropped_all_failure) == (1, 1, 1)


def test_all_filtered_write_does_not_crash_the_buffer():
    rb = ript_buffer(2, capacity=8)
    rb.extend(rows([0, 0], [1, 1]))
    assert len(rb) == 0
    rb.extend(rows([1, 1], [1, 0]))
    assert len(rb) == 2


def test_a_filter_that_runs_before_the_advantage_names_the_fix():
    with pytest.raises(KeyError, match="append ZeroAdvantageFilter \\*before\\* RLOOAdvantage"):
        ZeroAdvantageFilter().inv(rows([0, 0], [1, 0]))
    rb = ReplayBuffer(storage=LazyTensorStorage(8))
    rb.append_transform(RLOOAdvantage(2))
    rb.append_transform(ZeroAdvantageFilter())  # runs first on write: no advantages yet
    with pytest.raises(KeyError, match="reverse order of appending"):
        rb.extend(rows([0, 0], [1, 0]))


def test_the_filter_judges_groups_not_rows():
    # rewards [1, 0, 2]: the middle row's leave-one-out advantage is 0 in an informative group
    scored = RLOOAdvantage(3).inv(rows([5, 5, 5], [1, 0, 2]))
    assert float(scored["advantage"][0]) == 0.0
    assert ZeroAdvantageFilter().inv(scored)["group_id"].tolist() == [5, 5, 5]


def test_outcome_feed_sees_rows_before_dynamic_sampling_drops_them():
    ds = ContextDataset(torch.zeros(3, 1), [0, 0, 0], ["t"], sampler=AdaptiveSampler(group_size=2))
    rb = make_ript_replay_buffer(4, 2, outcome_feed=ds)
    assert isinstance(rb.transform[-1], ContextOutcomeFeed)
    # group 0 (context 2) fails twice: uniform, dropped; group 1 (context 1) is mixed: kept
    for group, context, reward in [(0, 2, 0.0), (0, 2, 0.0), (1, 1, 1.0), (1, 1, 0.0)]:
        rb.extend(TensorDict(group_id=torch.tensor([group]), context_id=torch.tensor([context]),
                             reward=torch.tensor([[reward]]), batch_size=[1]))
    assert len(rb) == 2  # only the mixed group was kept...
    sampler = ds.context_sampler
    assert sampler.failures[2] > 1.5 and sampler.successes[2] == 0  # ...but the sampler saw both
    assert sampler.successes[1] > 0 and sampler.failures[1] > 0


def test_transforms_honour_their_keys():
    data = TensorDict(gid=torch.tensor([0, 0, 1, 1]), R=torch.tensor([[1.0], [0.0], [1.0], [1.0]]),
                      batch_size=[4])
    rb = make_ript_replay_buffer(4, 2, group_key="gid", reward_key="R")
    rb.extend(data)
    assert len(rb) == 2 and rb[:2]["gid"].tolist() == [0, 0]
    torch.testing.assert_close(rb[:2]["advantage"].squeeze(-1), torch.tensor([1.0, -1.0]))


def test_bad_inputs():
    with pytest.raises(ValueError, match=">= 2"):
        RLOOAdvantage(1)
    with pytest.raises(ValueError, match="more than group_size"):
        RLOOAdvantage(2).inv(rows([0, 0, 0], [1, 0, 1]))
    with pytest.raises(KeyError, match="group_id"):
        RLOOAdvantage(2).inv(TensorDict(reward=torch.ones(2, 1), batch_size=[2]))
