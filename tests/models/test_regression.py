import pytest
import torch
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives import ClipPPOLoss

from model_helpers import camera_keys, make_obs
from torchrl_ript.models import RegressionPolicy, make_regression_actor, regression_config
from torchrl_ript.modules import IndependentLaplace, IndependentGaussian


def tiny_regression(cameras=1, **kw):
    return RegressionPolicy(regression_config("tiny", action_dim=4, encoder={"image_keys": camera_keys(cameras)}, **kw))


@pytest.mark.parametrize("cameras", [1, 2])
@pytest.mark.parametrize("loss", ["l1", "mse"])
def test_actor_shapes(cameras, loss):
    policy = tiny_regression(cameras, loss=loss)
    actor = make_regression_actor(policy)
    obs = make_obs(5, cameras=cameras)
    with set_exploration_type(ExplorationType.RANDOM), torch.no_grad():
        out = actor(obs.clone())
    c = policy.config
    assert out["action"].shape == (5, c.chunk_size, 4) and out["action"].dtype == torch.float32
    assert out["loc"].shape == out["scale"].shape == (5, c.chunk_size, 4)
    assert (out["scale"] > 0).all()
    assert out["action_log_prob"].shape == (5,)
    assert not torch.allclose(out["action"], out["loc"])
    dist = actor.get_dist(out.clone())
    assert isinstance(dist, IndependentLaplace if loss == "l1" else IndependentGaussian)
    torch.testing.assert_close(dist.log_prob(out["action"]), out["action_log_prob"])
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        det = actor(obs.clone())
    torch.testing.assert_close(det["action"], det["loc"])


@pytest.mark.parametrize("loss", ["l1", "mse"])
def test_ppo_step_raises_log_prob(loss):
    policy = tiny_regression(loss=loss)
    actor = make_regression_actor(policy)
    with set_exploration_type(ExplorationType.RANDOM), torch.no_grad():
        td = actor(make_obs(4, seed=2))
    td = td.exclude("loc", "scale")
    td["advantage"] = torch.tensor([[1.0], [0.0], [0.0], [0.0]])
    loss_mod = ClipPPOLoss(actor, critic_network=None, entropy_bonus=False)
    loss_mod.set_keys(action="action", sample_log_prob="action_log_prob")
    opt = torch.optim.SGD(policy.parameters(), lr=1e-3)
    old = td["action_log_prob"].clone()
    losses = loss_mod(td.clone())
    sum(v for k, v in losses.items() if k.startswith("loss_")).backward()
    opt.step()
    with torch.no_grad():
        new = actor.get_dist(td.clone()).log_prob(td["action"])
    assert new[0] > old[0] + 1e-4
