import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_ript.objectives import RIPTClipPPOLoss

from core_helpers import laplace_actor, token_policy


def trajectories(actor, n=4, horizon=5, lengths=(5, 3, 2, 4), sampled_key="action"):
    """Sample trajectories with the actor and pack them like GroupCollector does."""
    state = torch.randn(n, horizon, 4)
    mask = torch.arange(horizon).expand(n, horizon) < torch.tensor(lengths).unsqueeze(-1)
    steps = TensorDict({("observation", "state"): state, "mask": mask}, batch_size=[n, horizon])
    flat = steps.reshape(-1)
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        flat = actor(flat)
    steps = flat.reshape(n, horizon)
    steps["action_log_prob"] = steps["action_log_prob"] * mask
    return TensorDict(
        steps=steps.select(("observation", "state"), sampled_key, "action_log_prob", "mask"),
        action_log_prob=steps["action_log_prob"].sum(-1),
        batch_size=[n],
    )


def trajectory_log_prob(actor, batch, key="action"):
    steps = batch["steps"]
    dist = actor.get_dist(steps.reshape(-1))
    return (dist.log_prob(steps[key].reshape(-1, *steps[key].shape[2:])).reshape(steps.shape) * steps["mask"]).sum(-1)


@pytest.mark.parametrize("kind", ["laplace", "tokens"])
@pytest.mark.parametrize("ratio", ["trajectory", "step"])
def test_one_step_moves_log_prob_with_the_advantage_sign(kind, ratio):
    if kind == "laplace":
        actor, _ = laplace_actor()
        key = "action"
    else:
        actor, _ = token_policy()
        key = "action_tokens"
    batch = trajectories(actor, sampled_key=key)
    batch["advantage"] = torch.tensor([[1.0], [-1.0], [1.0], [-1.0]])
    loss = RIPTClipPPOLoss(actor, clip_epsilon=0.2, ratio=ratio)
    loss.set_keys(action=key)
    before = trajectory_log_prob(actor, batch, key)
    optimizer = torch.optim.SGD(actor.parameters(), lr=0.05)
    loss(batch)["loss_objective"].backward()
    optimizer.step()
    after = trajectory_log_prob(actor, batch, key)
    delta = after - before
    assert delta[0] > 0 and delta[2] > 0, delta
    assert delta[1] < 0 and delta[3] < 0, delta


def test_stored_log_prob_matches_recomputation():
    actor, _ = laplace_actor()
    batch = trajectories(actor)
    torch.testing.assert_close(trajectory_log_prob(actor, batch), batch["action_log_prob"])
    batch["advantage"] = torch.ones(4, 1)
    out = RIPTClipPPOLoss(actor)(batch)
    assert float(out["mean_ratio"]) == pytest.approx(1.0, abs=1e-5)


def test_clipping_stops_the_gradient_beyond_the_trust_region():
    actor, net = laplace_actor()
    batch = trajectories(actor)
    batch["advantage"] = torch.ones(4, 1)
    # pretend the behaviour policy was far less likely: every ratio is >> 1 + eps
    batch["action_log_prob"] = batch["action_log_prob"] - 5.0
    out = RIPTClipPPOLoss(actor, clip_epsilon=0.2)(batch)
    out["loss_objective"].backward()
    assert float(out["clip_fraction"]) == 1.0
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in actor.parameters())
    # without clipping pressure the same batch does give a gradient
    actor.zero_grad()
    batch["action_log_prob"] = batch["action_log_prob"] + 5.0
    RIPTClipPPOLoss(actor, clip_epsilon=0.2)(batch)["loss_objective"].backward()
    assert any(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in actor.parameters())


def test_advantage_contract_is_n_by_1():
    actor, _ = laplace_actor()
    batch = trajectories(actor)
    batch["advantage"] = torch.ones(4)  # missing the trailing dim
    with pytest.raises(ValueError, match="trailing"):
        RIPTClipPPOLoss(actor)(batch)


def test_loss_options_are_checked():
    actor, _ = laplace_actor()
    with pytest.raises(ValueError, match="critic-free"):
        RIPTClipPPOLoss(actor, critic_network=torch.nn.Linear(1, 1))
    with pytest.raises(ValueError, match="ratio"):
        RIPTClipPPOLoss(actor, ratio="token")


@pytest.mark.parametrize("ratio", ["trajectory", "step"])
def test_token_outside_the_current_top_k_is_counted_not_infinite(ratio):
    # top-2 of 11 bins: replace one stored token by the current least likely one
    actor, _ = token_policy(top_k=2)
    torch.manual_seed(0)
    for param in actor.parameters():  # the toy net starts at zero: all logits tie
        torch.nn.init.normal_(param)
    batch = trajectories(actor, sampled_key="action_tokens")
    batch["advantage"] = torch.tensor([[1.0], [-1.0], [1.0], [-1.0]])
    first = batch["steps"][0:1, 0:1]
    with torch.no_grad():
        logits = actor.module[0](first)["logits"]  # [1, 1, L, V]
    batch["steps", "action_tokens"][0, 0] = logits[0, 0].argmin(-1)
    loss = RIPTClipPPOLoss(actor, ratio=ratio)
    loss.set_keys(action="action_tokens")
    out = loss(batch)
    assert torch.isfinite(out["kl_approx"]) and torch.isfinite(out["loss_objective"])
    assert float(out["support_exit_fraction"]) > 0
    out["loss_objective"].backward()
    assert all(torch.isfinite(p.grad).all() for p in actor.parameters() if p.grad is not None)
