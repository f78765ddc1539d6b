"""The signal audit's math and its two updates (torchrl_ript.trainers.audit).

Each test checks what a wrong audit would get wrong: band edges, the KL
estimators, the variance decomposition, an update that is not restored (the
null run starting where the real one ended), the loss's own log-prob path.
"""
import math

import pytest
import torch
from torchrl.envs import SerialEnv

from torchrl_ript import ContextDataset, ContextToyVLAEnv, GroupCollector
from torchrl_ript.objectives import RIPTClipPPOLoss
from torchrl_ript.trainers import RIPTTrainer, make_optimizer
from torchrl_ript.trainers.audit import (
    clip_band,
    collect_one_batch,
    decision_log_probs,
    log_ratio_variance_shares,
    ratio_statistics,
    scale_statistics,
    signal_audit,
)
from torchrl_ript.transforms import random_sign_advantages

from toy_helpers import laplace_actor, token_policy


# -- the math, on hand-made cases ---------------------------------------------------------
def test_ratio_statistics_exact_values():
    old = torch.tensor([-1.0, -2.0, -0.5, -3.0, -1.0])
    # ratios 1, 1.2 (on the edge: inside), 0.7, e, 0.9
    new = old + torch.tensor([0.0, math.log(1.2), math.log(0.7), 1.0, math.log(0.9)])
    stats = ratio_statistics(new, old, clip_epsilon=0.2)
    log_r = torch.tensor([0.0, math.log(1.2), math.log(0.7), 1.0, math.log(0.9)], dtype=torch.float64)
    assert stats["out_of_band"] == pytest.approx(2 / 5)  # 0.7 and e
    assert stats["k1"] == pytest.approx(float((-log_r).mean()))
    assert stats["k3"] == pytest.approx(float((log_r.exp() - 1 - log_r).mean()))
    assert stats["max_abs_log_ratio"] == pytest.approx(1.0)
    assert stats["support_exit"] == 0.0 and stats["n"] == 5
    # an asymmetric clip: [0.65, 1.25] keeps 0.7 inside
    assert ratio_statistics(new, old, clip_epsilon=(0.35, 0.25))["out_of_band"] == pytest.approx(1 / 5)


def test_ratio_statistics_support_exit():
    old = torch.tensor([-1.0, -1.0, -1.0, -1.0])
    new = torch.tensor([-1.0, float("-inf"), -1.5, -1.0])
    stats = ratio_statistics(new, old, clip_epsilon=0.2)
    assert stats["support_exit"] == 0.25
    assert stats["out_of_band"] == 0.5  # the exit and exp(-0.5) = 0.61
    assert stats["k1"] == pytest.approx(0.5 / 3)  # over the 3 finite decisions
    assert stats["k3"] == pytest.approx((math.exp(-0.5) - 1 + 0.5) / 3)
    with pytest.raises(ValueError, match="non-finite"):
        ratio_statistics(old, new, clip_epsilon=0.2)
    with pytest.raises(ValueError, match="empty batch"):
        ratio_statistics(torch.zeros(0), torch.zeros(0), clip_epsilon=0.2)


def test_zero_update_is_in_band_with_zero_kl():
    logp = torch.randn(50) - 3
    stats = ratio_statistics(logp, logp.clone(), clip_epsilon=0.1)
    assert stats["out_of_band"] == 0.0 and stats["k1"] == 0.0 and stats["k3"] == 0.0
    assert log_ratio_variance_shares(torch.zeros(50, 3)) is None  # nothing varies


def test_k3_is_nonnegative_and_matches_kl_of_a_shifted_gaussian():
    # KL(N(0,1) || N(0.1,1)) = 0.005: both estimators converge to it on samples of the old policy
    torch.manual_seed(0)
    x = torch.randn(400_000, dtype=torch.float64)
    old = torch.distributions.Normal(0.0, 1.0).log_prob(x)
    new = torch.distributions.Normal(0.1, 1.0).log_prob(x)
    stats = ratio_statistics(new, old, clip_epsilon=0.2)
    assert stats["k3"] == pytest.approx(0.005, rel=0.05)
    assert stats["k1"] == pytest.approx(0.005, rel=0.1)
    per_decision = ratio_statistics(new[:1], old[:1], clip_epsilon=0.2)["k3"]
    assert per_decision >= 0


def test_variance_shares_add_up_and_split_correlated_dims():
    x = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    assert log_ratio_variance_shares(x) == pytest.approx([0.8, 0.2])
    # perfectly anti-correlated dims: one carries more than all the variance, the other offsets it
    y = torch.tensor([[2.0, -1.0], [-2.0, 1.0], [4.0, -2.0]])
    shares = log_ratio_variance_shares(y)
    assert sum(shares) == pytest.approx(1.0)
    assert shares == pytest.approx([2.0, -1.0])
    torch.manual_seed(0)
    z = torch.randn(1000, 7) * torch.arange(1, 8)
    assert sum(log_ratio_variance_shares(z)) == pytest.approx(1.0)


def test_scale_statistics_and_band():
    stats = scale_statistics(torch.tensor([[[0.1, 1.0], [0.3, 2.0]], [[0.2, 3.0], [0.2, 2.0]]]))
    assert stats["mean"] == pytest.approx([0.2, 2.0]) and stats["min"] == pytest.approx([0.1, 1.0])
    assert clip_band(0.1) == pytest.approx((0.9, 1.1))
    assert clip_band(RIPTClipPPOLoss(laplace_actor()[0], clip_epsilon=0.3)) == pytest.approx((0.7, 1.3))


def test_random_signs_keep_magnitudes_and_depend_on_the_seed():
    a = torch.arange(1.0, 65.0).reshape(64, 1)
    null = random_sign_advantages(a, seed=3)
    assert torch.equal(null.abs(), a) and torch.equal(null, random_sign_advantages(a, seed=3))
    assert not torch.equal(null, random_sign_advantages(a, seed=4))
    assert 0 < int((null < 0).sum()) < 64


# -- the two updates on a toy trainer -----------------------------------------------------------
def make_env():
    return ContextToyVLAEnv(action_dim=2, max_steps=4, success_tol=0.15)


def toy_trainer(kind="laplace", *, lr=3e-2, ratio="step", epochs=2, null_advantages=False):
    torch.manual_seed(0)
    if kind == "laplace":
        actor, _ = laplace_actor(init_scale=0.3)
        policy, sampled = actor, "action"
    else:
        actor, policy = token_policy(bins=7)
        sampled = "action_tokens"
    contexts = ContextDataset(torch.rand(32, 2) - 0.5, [0] * 32, ["track"], seed=0)
    collector = GroupCollector(SerialEnv(4, make_env), policy, context_dataset=contexts, group_size=4,
                               trajs_per_batch=16, max_frames_per_traj=4, seed=0, lockstep=True,
                               dynamic_sampling=False).set_keys(sampled_action=sampled)
    loss = RIPTClipPPOLoss(actor, clip_epsilon=0.2, ratio=ratio)
    loss.set_keys(action=sampled)
    return RIPTTrainer(collector=collector, loss=loss, optimizer=make_optimizer(actor, lr=lr), num_steps=1,
                       ppo_epochs=epochs, minibatch_size=4, null_advantages=null_advantages, progress=False,
                       seed=0), actor


@pytest.fixture(scope="module")
def laplace_audit():
    trainer, actor = toy_trainer()
    batch, stats = collect_one_batch(trainer)
    start = [p.detach().clone() for p in actor.parameters()]
    first = signal_audit(trainer, batch, seed=0)
    after = [p.detach().clone() for p in actor.parameters()]
    second = signal_audit(trainer, batch, seed=0)
    trainer.collector.shutdown()
    return dict(batch=batch, stats=stats, first=first, second=second, start=start, after=after)


def test_real_and_null_start_from_the_same_weights(laplace_audit):
    first = laplace_audit["first"]
    assert first["same_start"]
    assert first["real"]["logp_before_sum"] == first["null"]["logp_before_sum"]
    assert first["real"]["logp_check_max_abs_diff"] < 1e-5  # the loss scores what the collector sampled
    # the trainer is left as found: the same weights, so a second audit repeats the first exactly
    assert all(torch.equal(a, b) for a, b in zip(laplace_audit["start"], laplace_audit["after"]))
    second = laplace_audit["second"]
    for key in ("out_of_band_real", "out_of_band_null", "k1_real", "k3_null", "grad_norm_real"):
        assert first[key] == second[key], key


def test_audit_numbers_are_consistent(laplace_audit):
    audit, batch = laplace_audit["first"], laplace_audit["batch"]
    assert audit["n_trajectories"] == batch.shape[0] == 16
    assert audit["n_decisions"] == int(batch["steps", "mask"].sum())
    assert audit["kl_real"] == audit["k3_real"] and audit["kl_null"] == audit["k3_null"]
    # the advantage as a per-decision loss weighs it: by each trajectory's decisions
    steps = batch["steps", "mask"].sum(-1).double()
    advantage = batch["advantage"].reshape(-1).double()
    assert audit["advantage_decision_mean_real"] == pytest.approx(float((steps * advantage).sum() / steps.sum()))
    assert audit["real"]["negative_advantage_decision_share"] == pytest.approx(
        float(steps[advantage < 0].sum() / steps.sum()))
    for run in ("real", "null"):
        r = audit[run]
        assert 0.0 <= r["out_of_band"] <= 1.0 and r["k3"] >= 0.0
        assert r["grad_norm"] is not None and r["grad_norm"] > 0
        assert r["gradient_steps"] == 2 * 4  # 2 epochs of 16 / 4 minibatches
        # a Laplace policy: the scale per action dim and the variance shares (they add up to 1)
        assert len(r["scale_before"]["mean"]) == 2 and len(r["scale_after"]["min"]) == 2
        assert min(r["scale_after"]["min"]) > 0
        assert sum(r["log_ratio_variance_share"]) == pytest.approx(1.0)
    assert audit["real"]["scale_before"] == audit["null"]["scale_before"]
    # the two updates went different ways (different advantages, same magnitudes)
    assert audit["real"]["k1"] != audit["null"]["k1"]
    # mixed outcomes: RLOO advantages are not all zero, so both updates moved the policy
    assert audit["advantage_abs_mean"] > 0 and audit["k3_real"] > 0 and audit["k3_null"] > 0


def test_out_of_band_matches_the_loss_after_the_update(laplace_audit):
    """The audit's rescoring is the loss's: its clip fraction on the new weights equals out_of_band."""
    trainer, _ = toy_trainer()
    batch = laplace_audit["batch"]
    trainer.update(batch)
    scored = decision_log_probs(trainer.loss, batch)
    stats = ratio_statistics(scored.log_prob, scored.stored, clip_epsilon=trainer.loss)
    with torch.no_grad():
        out = trainer.loss(batch)
    assert stats["out_of_band"] == pytest.approx(float(out["clip_fraction"]))
    assert stats["k1"] == pytest.approx(float(out["kl_approx"]), abs=1e-6)
    assert stats["out_of_band"] == pytest.approx(laplace_audit["first"]["out_of_band_real"])
    trainer.collector.shutdown()


@pytest.mark.parametrize("zero", ["advantages", "lr"])
def test_zero_update_gives_no_movement(zero):
    """Zero advantages (e.g. uniform groups kept) or a zero step size: nothing moves, in band, KL 0."""
    trainer, _ = toy_trainer()
    batch, _ = collect_one_batch(trainer)
    trainer.collector.shutdown()
    if zero == "advantages":
        batch["advantage"] = torch.zeros_like(batch["advantage"])
    else:
        for group in trainer.optimizer.param_groups:
            group["lr"] = 0.0
    audit = signal_audit(trainer, batch, seed=0)
    for run in ("real", "null"):
        assert audit[f"out_of_band_{run}"] == 0.0
        assert abs(audit[f"k1_{run}"]) < 1e-6 and audit[f"k3_{run}"] < 1e-10
        assert audit[run]["scale_after"] == audit[run]["scale_before"]
    if zero == "advantages":  # the loss's gradient is exactly 0 (the KL above may keep
        # float noise of ~1e-14: CI measured 1.9e-14 where this machine measures 0)
        assert audit["grad_norm_real"] == audit["grad_norm_null"] == 0.0


def test_token_policy_trajectory_ratio():
    """A token policy under Eq. 8: per-decision statistics still, no scale statistics."""
    trainer, _ = toy_trainer("tokens", ratio="trajectory", lr=1e-1)
    batch, _ = collect_one_batch(trainer)
    audit = signal_audit(trainer, batch, seed=1)
    trainer.collector.shutdown()
    assert audit["same_start"] and audit["real"]["logp_check_max_abs_diff"] < 1e-5
    assert audit["n_decisions"] == int(batch["steps", "mask"].sum())
    assert "scale_before" not in audit["real"]
    assert 0 <= audit["out_of_band_null"] <= 1 and audit["k3_null"] >= 0


def test_empty_batch_names_the_fix():
    trainer, _ = toy_trainer()
    batch, _ = collect_one_batch(trainer)
    trainer.collector.shutdown()
    with pytest.raises(ValueError, match="dynamic_sampling=false"):
        signal_audit(trainer, batch[:0], seed=0)


def test_audit_refuses_a_control_run_trainer():
    # its "real" update would train on random signs too, and the audit would compare two nulls
    trainer, _ = toy_trainer(null_advantages=True)
    batch, _ = collect_one_batch(trainer)
    trainer.collector.shutdown()
    with pytest.raises(ValueError, match="null_advantages=false"):
        signal_audit(trainer, batch, seed=0)
