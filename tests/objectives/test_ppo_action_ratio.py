"""ratio="action": one PPO ratio per action of a continuous chunk, on ClipPPOLoss's own path."""
import pytest
import torch
from tensordict import TensorDict
from torch import nn
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_ript.collectors.layout import trajectory_row
from torchrl_ript.config import ConfigError, RIPTConfig, validate_ript_config
from torchrl_ript.modules import make_continuous_actor, score_per_action
from torchrl_ript.objectives import RIPTClipPPOLoss

from toy_helpers import laplace_actor

CHUNK, A = 3, 2


class ChunkNet(nn.Module):
    """state [.., 4] -> Laplace loc / scale [.., CHUNK, A]."""

    def __init__(self):
        super().__init__()
        self.mean = nn.Linear(4, CHUNK * A)
        self.log_scale = nn.Parameter(torch.full((CHUNK, A), -1.0))

    def forward(self, state):
        loc = self.mean(state).unflatten(-1, (CHUNK, A))
        return loc, self.log_scale.exp().expand_as(loc)


def chunk_actor():
    torch.manual_seed(0)
    return make_continuous_actor(ChunkNet(), in_keys=[("observation", "state")])


def trajectories(actor, n=4, horizon=5, lengths=(5, 3, 2, 4)):
    state = torch.randn(n, horizon, 4)
    mask = torch.arange(horizon).expand(n, horizon) < torch.tensor(lengths).unsqueeze(-1)
    flat = TensorDict({("observation", "state"): state.reshape(-1, 4)}, batch_size=[n * horizon])
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        flat = actor(flat)
    steps = flat.reshape(n, horizon)
    steps["mask"] = mask
    return TensorDict(steps=steps.select(("observation", "state"), "action", "action_log_prob", "mask"),
                      advantage=torch.tensor([[1.0], [-1.0], [0.5], [-0.5]]), batch_size=[n])


def test_the_loss_switches_its_actor_to_per_action_log_probs():
    actor = chunk_actor()
    assert trajectories(actor)["steps", "action_log_prob"].shape == (4, 5)
    RIPTClipPPOLoss(actor, ratio="action")
    batch = trajectories(actor)
    assert batch["steps", "action_log_prob"].shape == (4, 5, CHUNK)
    score_per_action(actor)  # idempotent
    assert actor[-1].distribution_kwargs["event_dims"] == 1
    # the per-action log-probs add up to the decision's
    steps = batch["steps"].reshape(-1)
    dist = actor.get_dist(steps.clone())
    per_dim = dist.elementwise_log_prob(steps["action"])
    torch.testing.assert_close(dist.log_prob(steps["action"]), per_dim.sum(-1))


def test_action_ratios_clip_each_action_and_weigh_decisions_by_their_advantage():
    actor = chunk_actor()
    loss = RIPTClipPPOLoss(actor, ratio="action", clip_epsilon=0.2)
    batch = trajectories(actor)
    out = loss(batch)
    assert float(out["clip_fraction"]) == 0.0 and float(out["mean_ratio"]) == pytest.approx(1.0)
    # shift the stored log-prob of ONE action of every real decision: only those ratios leave the band
    batch["steps", "action_log_prob"][..., 0] -= 1.0
    out = loss(batch)
    assert float(out["clip_fraction"]) == pytest.approx(1 / CHUNK)
    # the objective: mean over the real decisions' actions of min(r A, clip(r) A)
    mask = batch["steps", "mask"]
    r = torch.ones(4, 5, CHUNK)
    r[..., 0] = torch.e
    adv = batch["advantage"].reshape(4, 1, 1).expand(4, 5, CHUNK)
    gain = torch.minimum(r * adv, r.clamp(0.8, 1.2) * adv)[mask]
    torch.testing.assert_close(out["loss_objective"].detach(), -gain.mean(), rtol=1e-4, atol=1e-5)
    # one step follows the advantage's sign per trajectory
    batch = trajectories(actor)
    before = batch["steps", "action_log_prob"].clone()
    optimizer = torch.optim.SGD(actor.parameters(), lr=0.05)
    loss(batch)["loss_objective"].backward()
    optimizer.step()
    with torch.no_grad():
        steps = batch["steps"].reshape(-1)
        after = actor.get_dist(steps.clone()).log_prob(steps["action"]).reshape(4, 5, CHUNK)
    delta = ((after - before) * mask[..., None]).sum((1, 2))
    assert delta[0] > 0 and delta[1] < 0, delta


def test_action_ratio_with_the_trajectory_reduction_weighs_trajectories_alike():
    actor = chunk_actor()
    loss = RIPTClipPPOLoss(actor, ratio="action", loss_reduction="trajectory")
    batch = trajectories(actor)
    batch["steps", "action_log_prob"] -= 0.05  # every ratio exp(0.05): inside the band
    out = loss(batch)
    per_traj = -torch.exp(torch.tensor(0.05)) * batch["advantage"].reshape(-1)
    torch.testing.assert_close(out["loss_objective"].detach(), per_traj.mean(), rtol=1e-4, atol=1e-6)


def test_decision_log_probs_are_refused_and_single_actions_cannot_be_split():
    actor = chunk_actor()
    batch = trajectories(actor)  # collected before the switch: one log-prob per decision
    loss = RIPTClipPPOLoss(actor, ratio="action")
    with pytest.raises(ValueError, match="one collected log-prob per action"):
        loss(batch)
    single, _ = laplace_actor()  # event_dims=1: one action per decision
    with pytest.raises(ValueError, match="chunk actor"):
        RIPTClipPPOLoss(single, ratio="action")


def test_trajectory_row_sums_per_action_log_probs_over_real_decisions():
    steps = TensorDict(action_log_prob=torch.ones(3, CHUNK), batch_size=[3])
    row = trajectory_row(steps, length=2, group_id=0, context_id=0, task_id=0, success=True, env_steps=2,
                         traj_id=0, policy_version=0, instruction="x")
    assert float(row["action_log_prob"]) == 2 * CHUNK


def test_config_accepts_the_action_ratio():
    validate_ript_config(RIPTConfig(group_size=2, trajs_per_batch=4, minibatch_size=2, ratio="action"))
    with pytest.raises(ConfigError, match="'action'"):
        validate_ript_config(RIPTConfig(group_size=2, trajs_per_batch=4, minibatch_size=2, ratio="actions"))
