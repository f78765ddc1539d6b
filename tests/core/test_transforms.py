import pytest
import torch
from tensordict import TensorDict
from torchrl.data import LazyTensorStorage, ReplayBuffer

from torchrl_ript import RLOOAdvantage, ZeroAdvantageFilter


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


@pytest.mark.parametrize("rloo_first", [True, False])
def test_append_order_gives_same_buffer(rloo_first):
    def build(rloo_first):
        rb = ReplayBuffer(storage=LazyTensorStorage(32))
        transforms = [RLOOAdvantage(2), ZeroAdvantageFilter()]
        for t in transforms if rloo_first else transforms[::-1]:
            rb.append_transform(t)
        # group 0 informative, 1 all-success, 2 all-failure, 3 split over writes
        rb.extend(rows([0, 1, 3, 1, 2], [1, 1, 1, 1, 0]))
        rb.extend(rows([2, 0, 3], [0, 0, 0]))
        return rb

    rb = build(rloo_first)
    reference = build(True)
    assert len(rb) == len(reference) == 4
    got, ref = rb[:4], reference[:4]
    assert got["group_id"].tolist() == ref["group_id"].tolist() == [0, 0, 3, 3]
    torch.testing.assert_close(got["advantage"], ref["advantage"])
    torch.testing.assert_close(got["payload"], ref["payload"])
    torch.testing.assert_close(got["advantage"].squeeze(-1), torch.tensor([1.0, -1.0, 1.0, -1.0]))


def test_all_filtered_write_does_not_crash_the_buffer():
    rb = ReplayBuffer(storage=LazyTensorStorage(8))
    rb.append_transform(RLOOAdvantage(2))
    rb.append_transform(ZeroAdvantageFilter())
    rb.extend(rows([0, 0], [1, 1]))
    assert len(rb) == 0
    rb.extend(rows([1, 1], [1, 0]))
    assert len(rb) == 2


def test_filter_without_group_size_names_the_fix():
    with pytest.raises(RuntimeError, match="RLOOAdvantage"):
        ZeroAdvantageFilter().inv(rows([0, 0], [1, 0]))
    kept = ZeroAdvantageFilter(group_size=2).inv(rows([0, 0, 1, 1], [1, 0, 0, 0]))
    assert kept["group_id"].tolist() == [0, 0]


def test_bad_inputs():
    with pytest.raises(ValueError, match=">= 2"):
        RLOOAdvantage(1)
    with pytest.raises(ValueError, match="more than group_size"):
        RLOOAdvantage(2).inv(rows([0, 0, 0], [1, 0, 1]))
    with pytest.raises(KeyError, match="group_id"):
        RLOOAdvantage(2).inv(TensorDict(reward=torch.ones(2, 1), batch_size=[2]))
