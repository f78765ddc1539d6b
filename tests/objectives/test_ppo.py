import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_ript.objectives import RIPTClipPPOLoss

from toy_helpers import laplace_actor, token_policy


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


def _pad(batch, extra):
    """The same trajectories with ``extra`` more padded decision slots."""
    steps = batch["steps"]
    pad = steps[:, :1].clone().zero_().expand(steps.shape[0], extra).clone()
    out = batch.clone()
    out["steps"] = torch.cat([steps, pad], 1)
    return out


def test_per_decision_statistics_are_means_over_real_decisions():
    # every real decision's ratio is e (stored log-prob lowered by 1): all are clipped
    actor, _ = laplace_actor()
    batch = trajectories(actor)  # lengths 5, 3, 2, 4 out of T=5: 14 real decisions of 20
    batch["advantage"] = torch.tensor([[1.0], [-1.0], [1.0], [-1.0]])
    mask = batch["steps", "mask"]
    batch["steps", "action_log_prob"] = batch["steps", "action_log_prob"] - mask.float()
    out = RIPTClipPPOLoss(actor, ratio="step")(batch)
    assert float(out["clip_fraction"]) == 1.0
    assert float(out["kl_approx"]) == pytest.approx(-1.0, abs=1e-5)
    assert float(out["mean_ratio"]) == pytest.approx(torch.e, rel=1e-5)
    assert out["ESS"].shape == torch.Size([]) and float(out["ESS"]) == pytest.approx(1.0, rel=1e-5)
    # the objective is the mean over the 14 decisions of min(r A, clip(r) A)
    adv = batch["advantage"].squeeze(-1)[mask.nonzero(as_tuple=True)[0]]
    expected = -torch.minimum(torch.e * adv, 1.2 * adv).mean()
    assert float(out["loss_objective"]) == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("ratio", ["trajectory", "step"])
def test_padding_changes_neither_the_loss_nor_its_gradient(ratio):
    actor, _ = laplace_actor()
    batch = trajectories(actor)
    batch["advantage"] = torch.tensor([[1.0], [-1.0], [0.5], [-0.5]])
    batch["steps", "action_log_prob"] = batch["steps", "action_log_prob"] - 0.1 * batch["steps", "mask"].float()
    batch["action_log_prob"] = batch["steps", "action_log_prob"].sum(-1)
    loss = RIPTClipPPOLoss(actor, ratio=ratio)
    results = []
    for data in (batch, _pad(batch, 7)):
        actor.zero_grad()
        out = loss(data)
        out["loss_objective"].backward()
        grads = torch.cat([p.grad.reshape(-1) for p in actor.parameters() if p.grad is not None])
        results.append((out, grads))
    (a, ga), (b, gb) = results
    for key in ("loss_objective", "clip_fraction", "kl_approx", "mean_ratio", "ESS"):
        torch.testing.assert_close(a[key], b[key])
    torch.testing.assert_close(ga, gb)


def test_installed_torchrl_is_in_the_tested_range():
    # pyproject pins torchrl to the range whose ClipPPOLoss hooks the loss relies on
    import importlib.metadata as md
    import re

    from packaging.requirements import Requirement

    text = open(__file__.rsplit("/tests/", 1)[0] + "/pyproject.toml").read()
    spec = next(Requirement(r) for r in re.findall(r'"(torchrl[<>=!~][^"]*)"', text))
    assert spec.specifier.contains(md.version("torchrl")), (spec, md.version("torchrl"))
    assert not spec.specifier.contains("0.14.0")


@pytest.mark.parametrize("ratio", ["trajectory", "step"])
def test_the_log_prob_hook_takes_the_params_argument_or_none(ratio):
    # TorchRL 0.14.x calls the hook with params= (a delayed actor's target weights); newer
    # TorchRL with the tensordict alone: the override must answer the same to both
    actor, _ = laplace_actor()
    batch = trajectories(actor)
    batch["advantage"] = torch.ones(4, 1)
    loss = RIPTClipPPOLoss(actor, ratio=ratio)
    data = loss._decisions(batch) if ratio == "step" else batch
    plain = loss._get_cur_log_prob(data)[0]
    by_keyword = loss._get_cur_log_prob(data, params=loss.actor_network_params)[0]
    by_position = loss._get_cur_log_prob(data, loss.actor_network_params)[0]
    torch.testing.assert_close(plain, by_keyword)
    torch.testing.assert_close(plain, by_position)
    expected = batch["action_log_prob"] if ratio == "trajectory" else data["action_log_prob"]
    torch.testing.assert_close(plain.detach(), expected.reshape(plain.shape))


def test_trajectory_reduction_weighs_every_trajectory_alike():
    actor, _ = laplace_actor()
    batch = trajectories(actor, lengths=(5, 1, 2, 4))
    batch["steps", "action_log_prob"] = batch["steps", "action_log_prob"] - 0.1 * batch["steps", "mask"]
    batch["advantage"] = torch.tensor([[1.0], [-1.0], [0.5], [0.0]])
    per_decision = RIPTClipPPOLoss(actor, ratio="step", reduction="none")(batch)["loss_objective"]
    mask = batch["steps", "mask"]
    rows = mask.nonzero(as_tuple=True)[0]
    lengths = mask.sum(-1)
    by_decision = RIPTClipPPOLoss(actor, ratio="step")(batch)
    by_trajectory = RIPTClipPPOLoss(actor, ratio="step", loss_reduction="trajectory")(batch)
    torch.testing.assert_close(by_decision["loss_objective"], per_decision.mean())
    expected = torch.stack([per_decision[rows == r].mean() for r in range(4)]).mean()
    torch.testing.assert_close(by_trajectory["loss_objective"], expected)
    assert not torch.allclose(by_trajectory["loss_objective"], by_decision["loss_objective"])
    assert lengths.tolist() == [5, 1, 2, 4]
    # the statistics stay means over decisions
    for key in ("clip_fraction", "kl_approx", "kl_k3"):
        torch.testing.assert_close(by_trajectory[key], by_decision[key])
    with pytest.raises(ValueError, match="loss_reduction must be one of"):
        RIPTClipPPOLoss(actor, ratio="step", loss_reduction="rollout")


def test_kl_k3_is_the_nonnegative_estimate_of_the_ratios():
    actor, _ = laplace_actor()
    batch = trajectories(actor)
    shift = torch.linspace(-0.3, 0.3, batch["steps"].shape[1])
    batch["steps", "action_log_prob"] = batch["steps", "action_log_prob"] + shift * batch["steps", "mask"]
    batch["advantage"] = torch.ones(4, 1)
    out = RIPTClipPPOLoss(actor, ratio="step")(batch)
    log_r = -shift.expand_as(batch["steps", "mask"])[batch["steps", "mask"]]
    torch.testing.assert_close(out["kl_k3"], (log_r.exp() - 1 - log_r).mean())
    torch.testing.assert_close(out["kl_approx"], (-log_r).mean())
    assert out["kl_k3"] > 0
