"""Context samplers: the adaptive sampler's statistics on a synthetic dataset, persistence, feeding."""
import pickle

import numpy as np
import pytest
import torch

from torchrl_ript.data import AdaptiveSampler, ContextDataset, UniformSampler
from torchrl_ript.data.samplers import make_sampler

K = 8


def synthetic(sampler, *, seed=0):
    # 60 contexts of known success probability: 36 never solved, 12 always, 12 half the time
    p = torch.tensor([0.0] * 36 + [1.0] * 12 + [0.5] * 12)
    return ContextDataset(torch.arange(60.0)[:, None], [0] * 60, ["t"], sampler=sampler, seed=seed), p


def run_groups(ds, p, groups, *, seed=0):
    """Draw ``groups`` contexts, roll K Bernoulli(p) outcomes from each, feed them back."""
    rng = torch.Generator().manual_seed(seed)
    informative, drawn = 0, torch.zeros(len(ds), dtype=torch.int64)
    for _ in range(groups):
        c = int(ds.sample(1)["context_id"][0])
        drawn[c] += 1
        outcomes = torch.rand(K, generator=rng) < p[c]
        informative += int(0 < int(outcomes.sum()) < K)
        ds.record_outcomes(torch.full((K,), c), outcomes)
    return informative / groups, drawn


def test_adaptive_raises_the_informative_group_rate_and_starves_nobody():
    uniform_rate, _ = run_groups(*synthetic("uniform"), 1200)
    sampler = AdaptiveSampler(group_size=K, explore=0.2)
    adaptive_rate, drawn = run_groups(*synthetic(sampler), 1200)
    # uniform: only the 12 p=0.5 contexts are informative (each 1 - 2/2^8 of the time): ~0.2
    assert 0.14 < uniform_rate < 0.26, uniform_rate
    assert adaptive_rate > 2 * uniform_rate, (adaptive_rate, uniform_rate)
    # every context keeps at least about explore/N of the draws (0.2 * 1200 / 60 = 4 expected)
    assert int(drawn.min()) >= 1, drawn
    assert float(drawn[:36].float().mean()) >= 2.0
    # the estimates learned the truth: solved ~1, never solved ~0, mixed in between
    est = sampler.estimates(60)
    assert float(est[36:48].min()) > 0.8 and float(est[:36].max()) < 0.2
    assert 0.2 < float(est[48:].mean()) < 0.8
    # draw probabilities: each at least explore / N, and they sum to one
    probs = sampler.probabilities(60)
    assert float(probs.min()) >= 0.2 / 60 - 1e-12 and abs(float(probs.sum()) - 1) < 1e-9
    assert float(probs[48:].sum()) > 0.5  # most of the mass on the informative contexts


def test_task_pooling_stops_drawing_unseen_starts_of_a_solved_task():
    # the main job's regime: 100 starts, far fewer groups than needed to visit each start often;
    # task "a" is solved from every start, task "b" has never-solved and mixed starts
    p = torch.tensor([1.0] * 50 + [0.0] * 25 + [0.5] * 25)

    def run(sampler, seed):
        ds = ContextDataset(torch.arange(100.0)[:, None], [0] * 50 + [1] * 50, ["a", "b"], sampler=sampler, seed=seed)
        rng = torch.Generator().manual_seed(seed)
        informative = solved_task = 0
        for _ in range(150):
            c = int(ds.sample(1)["context_id"][0])
            outcomes = torch.rand(K, generator=rng) < p[c]
            informative += int(0 < int(outcomes.sum()) < K)
            solved_task += int(c < 50)
            ds.record_outcomes(torch.full((K,), c), outcomes)
        return informative / 150, solved_task / 150

    for seed in range(2):
        flat_rate, flat_share = run(AdaptiveSampler(group_size=K), seed)
        pooled_rate, pooled_share = run(AdaptiveSampler(group_size=K, task_pooling=4.0), seed)
        # without pooling each unseen start of "a" scores as high as any: ~40% of the draws go there
        assert flat_share > 0.3 and pooled_share < 0.2, (flat_share, pooled_share)
        assert pooled_rate > flat_rate + 0.08, (pooled_rate, flat_rate)
    with pytest.raises(ValueError, match="task_ids must give the task of each"):
        AdaptiveSampler(task_pooling=1.0).scores(3, task_ids=torch.zeros(2))
    with pytest.raises(ValueError, match="task_pooling must be >= 0"):
        AdaptiveSampler(task_pooling=-1.0)


def test_adaptive_forgets_so_a_context_that_became_solvable_comes_back():
    ds = ContextDataset(torch.zeros(2, 1), [0, 0], ["t"], sampler=AdaptiveSampler(group_size=K, memory=8))
    ds.record_outcomes(torch.zeros(40, dtype=torch.int64), torch.zeros(40))  # context 0 always failed
    low = float(ds.context_sampler.scores(2)[0])
    ds.record_outcomes(torch.zeros(8, dtype=torch.int64), torch.tensor([1, 0] * 4))  # now mixed
    assert float(ds.context_sampler.scores(2)[0]) > 2 * low


def test_sampler_state_survives_pickle_save_load_and_subset(tmp_path):
    ds, p = synthetic(AdaptiveSampler(group_size=K, explore=0.1), seed=3)
    run_groups(ds, p, 200)
    probs = ds.context_sampler.probabilities(60)
    back = pickle.loads(pickle.dumps(ds))  # what a spawned collector worker receives
    assert back.sampler == "adaptive" and torch.equal(back.context_sampler.probabilities(60), probs)
    assert torch.equal(back.sample(20)["context_id"], ds.sample(20)["context_id"])  # same generator state
    ds.save(tmp_path / "ctx.pt")
    loaded = ContextDataset.load(tmp_path / "ctx.pt")
    assert loaded.context_sampler.config() == ds.context_sampler.config()
    assert torch.equal(loaded.context_sampler.probabilities(60), ds.context_sampler.probabilities(60))
    assert torch.equal(loaded.sample(20)["context_id"], ds.sample(20)["context_id"])
    sub = ds.subset(torch.arange(10))  # row ids change: a fresh sampler of the same kind
    assert isinstance(sub.context_sampler, AdaptiveSampler) and sub.context_sampler.successes.numel() == 0
    assert sub.context_sampler.explore == 0.1


def test_custom_sampler_object_and_bad_names():
    class First(UniformSampler):
        name = "first"

        def draw(self, dataset, n, generator):
            return torch.zeros(n, dtype=torch.int64)

    ds = ContextDataset(torch.zeros(3, 1), [0, 0, 0], ["t"], sampler=First())
    assert ds.sample(4)["context_id"].tolist() == [0, 0, 0, 0] and ds.sampler == "first"
    with pytest.raises(ValueError, match="sampler must be one of"):
        make_sampler("weighted")
    with pytest.raises(ValueError, match="explore must be in"):
        AdaptiveSampler(explore=1.5)
    with pytest.raises(ValueError, match="group_size"):
        AdaptiveSampler(group_size=1)


def test_jitter_makes_fixed_valid_variants():
    ds = ContextDataset([[0.0, 0.0], [1.0, 1.0]], [0, 1], ["a", "b"], seed=0)
    more = ds.jitter(5, 0.1, seed=0)
    assert len(more) == 10 and more.task_ids.tolist() == [0] * 5 + [1] * 5
    assert torch.equal(more.states[0], ds.states[0]) and torch.equal(more.states[5], ds.states[1])
    assert more.states[:5].unique(dim=0).shape[0] == 5  # distinct variants
    assert torch.equal(ds.jitter(5, 0.1, seed=0).states, more.states)  # seeded
    # a projection sees the noisy and exact states and the task ids
    calls = []

    def clip(noisy, exact, task_ids):
        calls.append(task_ids.tolist())
        return noisy.clamp(-0.05, 0.05)

    ds_p = ContextDataset([[0.0, 0.0]], [0], ["a"], project=clip)
    clipped = ds_p.jitter(50, 1.0, seed=1)
    assert float(clipped.states.abs().max()) <= 0.05 and calls == [[0] * 50]
    with pytest.raises(ValueError, match="copies"):
        ds.jitter(0, 0.1)


def test_matches_finds_shared_contexts():
    a = ContextDataset(np.array([[0.0, 1.0], [2.0, 3.0]]), [0, 1], ["x", "y"])
    b = ContextDataset(np.array([[2.0, 3.0], [0.0, 1.0]]), [0, 0], ["y", "z"])
    assert a.matches(b).tolist() == [False, True]  # same state under task "x" vs "z" does not count
