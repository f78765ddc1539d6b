"""The bounded scale head, the held-out scale fit, legacy checkpoints, the scale multiplier."""
import math

import pytest
import torch

from model_helpers import make_obs, toy_demos
from torchrl_ript.models import RegressionPolicy, load_policy, regression_config, save_policy, set_sampling, wrap_policy
from torchrl_ript.models.registry import SFTOptions, scale_parameters
from torchrl_ript.models.regression_policy import heldout_demo_ids, legacy_scale_config, regression_sft
from torchrl_ript.modules import ScaleHead
from torchrl_ript.modules.scale_head import OFT_MAX_SCALE, OFT_MIN_SCALE
from torchrl_ript.trainers.sft import batch_iterator, make_chunk_dataset


def test_bounded_scale_stays_in_bounds_and_starts_at_init():
    head = ScaleHead(8, (3,), hidden=4, min_scale=0.1, max_scale=2.0, init_scale=0.5)
    torch.testing.assert_close(head(torch.randn(5, 8)), torch.full((5, 3), 0.5))
    with torch.no_grad():
        head.net[-1].weight.normal_(0, 100.0)
    scale = head(torch.randn(1000, 8))
    assert scale.min() >= 0.1 - 1e-6 and scale.max() <= 2.0 + 1e-6
    assert scale.min() < 0.11 and scale.max() > 1.9  # the bounds are reached, not the inside only
    with pytest.raises(ValueError, match="init_scale"):
        ScaleHead(8, (3,), init_scale=0.1)  # below the OFT floor 0.135
    with pytest.raises(ValueError, match="min_scale < max_scale"):
        ScaleHead(8, (3,), min_scale=1.0, max_scale=0.5, init_scale=0.7)


def test_regression_config_defaults_bound_the_scale():
    config = regression_config("tiny")
    assert config.min_scale == 0.02 and config.max_scale == pytest.approx(math.exp(0.5)) == OFT_MAX_SCALE
    assert OFT_MIN_SCALE == pytest.approx(math.exp(-2))  # the paper's floor, the hf kind's default
    with pytest.raises(ValueError, match="scale_multiplier must be > 0"):
        regression_config("tiny", scale_multiplier=0.0)


def test_legacy_checkpoint_rebuilds_the_unbounded_head(tmp_path):
    """A checkpoint saved before max_scale existed: same outputs after loading."""
    legacy = RegressionPolicy(regression_config("tiny", min_scale=1e-3, max_scale=None, init_scale=0.1))
    with torch.no_grad():
        legacy.scale_head.net[-1].bias.normal_(-3.0, 2.0)  # scales spread below and above the OFT bounds
    save_policy(legacy, tmp_path / "old.pt")
    payload = torch.load(tmp_path / "old.pt", weights_only=False)
    for key in ("max_scale", "scale_multiplier"):
        payload["config"].pop(key)  # what an old checkpoint holds
    torch.save(payload, tmp_path / "old.pt")
    loaded = load_policy(tmp_path / "old.pt")
    assert loaded.config.max_scale is None and loaded.config.min_scale == 1e-3
    obs = make_obs(3)
    legacy.eval()
    torch.testing.assert_close(loaded(obs.clone())["scale"], legacy(obs.clone())["scale"])
    assert legacy_scale_config({"max_scale": 1.0}) == {"max_scale": 1.0}
    # a new checkpoint keeps its bounds
    fresh = RegressionPolicy(regression_config("tiny"))
    save_policy(fresh, tmp_path / "new.pt")
    assert load_policy(tmp_path / "new.pt").config.max_scale == pytest.approx(OFT_MAX_SCALE)


def test_scale_multiplier_is_a_sampling_option_read_live():
    net = RegressionPolicy(regression_config("tiny"))
    bundle = wrap_policy(net)
    obs = make_obs(2)
    base = bundle.actor.get_dist(obs.clone()).base_dist.scale
    set_sampling(net, scale_multiplier=3.0)
    torch.testing.assert_close(bundle.actor.get_dist(obs.clone()).base_dist.scale, 3 * base)
    with pytest.raises(ValueError, match="scale_multiplier must be > 0"):
        set_sampling(net, scale_multiplier=-1.0)
    assert net.config.scale_multiplier == 3.0
    assert len(scale_parameters(bundle.policy)) == len(list(net.scale_head.parameters())) > 0


def test_heldout_demo_ids():
    assert heldout_demo_ids(10, 0.2) == [2, 7]
    assert heldout_demo_ids(2, 0.2) == [1]
    assert heldout_demo_ids(1, 0.2) == []
    assert len(heldout_demo_ids(50, 0.2)) == 10


def _noisy_demos(n, T, seed):
    """Demos whose actions are noise the observation cannot predict: a mean can only memorise them."""
    g = torch.Generator().manual_seed(seed)
    demos = toy_demos(n, T=T, seed=seed)
    for demo in demos:
        demo.set("action", (0.5 * torch.randn(demo["action"].shape, generator=g)).clamp(-1, 1))
        demo.set(("observation", "state"), torch.randn(demo["observation", "state"].shape, generator=g))
    return demos


def _fit(scale_fit, seed=0):
    torch.manual_seed(seed)
    net = RegressionPolicy(regression_config("tiny", action_dim=4, chunk_size=4, min_scale=1e-3,
                                             max_scale=5.0, init_scale=0.3))
    bundle = wrap_policy(net)
    data = make_chunk_dataset(_noisy_demos(10, 12, seed=seed), 4)
    assert data.get("demo_count").unique().tolist() == [10]
    batches = batch_iterator(data, 32, seed=seed)
    options = SFTOptions(steps=150, lr=3e-3, scale_steps=80, scale_fit=scale_fit, progress=False)
    history = regression_sft(bundle, batches, options)
    with torch.no_grad():
        scale = bundle.actor.get_dist(data[:64]).base_dist.scale.mean()
    return float(scale), history


def test_heldout_scale_is_wider_than_the_in_sample_one_when_the_mean_overfits():
    insample, hist_in = _fit("insample")
    heldout, hist_out = _fit("heldout")
    assert set(hist_in) == {"regression", "scale"}
    assert set(hist_out) == {"regression", "regression_all", "scale"}
    assert len(hist_out["regression"]) + len(hist_out["regression_all"]) == len(hist_in["regression"])
    # the mean memorised its demos: in-sample residuals are small, held-out ones are the noise (0.5 * 0.8)
    assert heldout > 1.5 * insample, (heldout, insample)


def test_heldout_falls_back_to_in_sample_with_one_demo():
    net = RegressionPolicy(regression_config("tiny", action_dim=4, chunk_size=4))
    data = make_chunk_dataset(toy_demos(1, T=12), 4)
    with pytest.warns(UserWarning, match="at least 2 demos"):
        history = regression_sft(wrap_policy(net), batch_iterator(data, 8),
                                 SFTOptions(steps=2, scale_steps=2, progress=False))
    assert set(history) == {"regression", "scale"}
