"""A seeded RIPT run must raise the held-out success rate clearly (toy env)."""

import pytest
import torch
from torchrl.envs import SerialEnv

from torchrl_ript import ContextDataset, ContextToyVLAEnv, GroupCollector
from torchrl_ript.objectives import RIPTClipPPOLoss
from torchrl_ript.trainers import RIPTTrainer, evaluate_success, make_optimizer

from toy_helpers import laplace_actor, token_policy


def make_env():
    return ContextToyVLAEnv(action_dim=2, max_steps=4, success_tol=0.15)


def run(kind, steps, tmp_path=None, resume=False, lr=1e-2, lockstep=False):
    torch.manual_seed(0)
    if kind == "laplace":
        actor, _ = laplace_actor(init_scale=0.3)
        policy, sampled = actor, "action"
    else:
        actor, policy = token_policy(bins=7)
        sampled = "action_tokens"
    g = torch.Generator().manual_seed(0)
    contexts = ContextDataset(torch.rand(96, 2, generator=g) - 0.5, [0] * 96, ["track"], seed=0)
    train, held_out = contexts.split(32, seed=0)
    collector = GroupCollector(
        SerialEnv(8, make_env), policy, context_dataset=train, group_size=8,
        trajs_per_batch=32, max_frames_per_traj=4, seed=0, lockstep=lockstep,
    ).set_keys(sampled_action=sampled)
    loss = RIPTClipPPOLoss(actor, clip_epsilon=0.2)
    loss.set_keys(action=sampled)
    eval_env = SerialEnv(8, make_env)
    trainer = RIPTTrainer(
        collector=collector, loss=loss, optimizer=make_optimizer(actor, lr=lr),
        num_steps=steps, ppo_epochs=4, minibatch_size=8, eval_every=4,
        evaluate=lambda: evaluate_success(eval_env, policy, held_out, horizon=4, progress=False),
        checkpoint_dir=tmp_path, progress=False, seed=0,
    )
    if resume:
        assert trainer.resume(tmp_path / "latest.pt")
    trainer.train()
    collector.shutdown()
    return trainer


@pytest.mark.slow  # learning runs (~25 s); the README snippet test learns in the default run
@pytest.mark.parametrize("kind, steps", [("laplace", 12), ("tokens", 20)])
def test_ript_raises_success_rate(kind, steps):
    # lockstep: the same numbers on any machine load (free-running slots draw
    # their random actions in timing-dependent order). Over seeds 0-4 the token
    # run's last three evaluations average 0.22-0.48 from 0.0, the Laplace run
    # ends at 0.44-0.88 from 0.03; without learning both stay at their start.
    trainer = run(kind, steps=steps, lockstep=True)
    rates = [e["success_rate"] for e in trainer.eval_history]
    start = rates[0]
    assert start <= 0.1, rates
    if kind == "laplace":
        assert rates[-1] >= start + 0.4, rates
    else:  # 32 held-out contexts: single evaluations swing by ~0.1
        assert sum(rates[-3:]) / 3 >= start + 0.15 and max(rates) >= start + 0.25, rates
    # the stats the loop logs are there and consistent
    record = trainer.history[-1]
    assert record["collect/rollouts_kept"] == record["train/batch"] == 32
    assert trainer.env_steps == sum(r["collect/env_steps"] for r in trainer.history)


def test_checkpoint_resume_continues_identically(tmp_path):
    # lockstep: a stochastic policy draws its random numbers in the same order
    straight = run("laplace", steps=4, tmp_path=tmp_path / "a", lockstep=True)
    first = run("laplace", steps=2, tmp_path=tmp_path / "b", lockstep=True)
    resumed = run("laplace", steps=4, tmp_path=tmp_path / "b", resume=True, lockstep=True)
    assert resumed.step == 4 and len(resumed.history) == 4
    assert [r["collect/success_rate"] for r in resumed.history] == [
        r["collect/success_rate"] for r in straight.history
    ]
    for key, value in straight.loss.actor_network.state_dict().items():
        torch.testing.assert_close(resumed.loss.actor_network.state_dict()[key], value)
    assert first.step == 2


@pytest.mark.parametrize("target_kl, epochs", [(None, 4), (1e3, 4), (1e-12, 1)])
def test_target_kl_stops_the_epochs_of_a_step(target_kl, epochs):
    torch.manual_seed(0)
    actor, _ = laplace_actor(init_scale=0.3)
    contexts = ContextDataset(torch.rand(32, 2) - 0.5, [0] * 32, ["track"], seed=0)
    collector = GroupCollector(SerialEnv(4, make_env), actor, context_dataset=contexts, group_size=4,
                               trajs_per_batch=8, max_frames_per_traj=4, seed=0)
    trainer = RIPTTrainer(collector=collector, loss=RIPTClipPPOLoss(actor, ratio="step"),
                          optimizer=make_optimizer(actor, lr=1e-2), num_steps=2, ppo_epochs=4, minibatch_size=4,
                          target_kl=target_kl, progress=False, seed=0)
    history = trainer.train()
    collector.shutdown()
    # the first epoch always runs: its first gradient step sees the collecting policy itself (KL 0).
    # Informative groups only (dynamic sampling): a batch of zero advantages would not move the
    # policy, and its KL of 0 would never pass the target.
    assert [r["train/epochs"] for r in history] == [epochs, epochs]
    assert all(r["train/kl_k3"] >= 0 for r in history)
    with pytest.raises(ValueError, match="target_kl must be > 0"):
        RIPTTrainer(collector=collector, loss=RIPTClipPPOLoss(actor), optimizer=make_optimizer(actor, lr=1e-2),
                    num_steps=1, ppo_epochs=1, minibatch_size=4, target_kl=0.0)


class _RecordingLoss(RIPTClipPPOLoss):
    """Records the advantages each gradient step trained on."""

    def forward(self, tensordict):
        self.seen.append(tensordict.get(self.tensor_keys.advantage).clone())
        return super().forward(tensordict)


def one_batch(loss_class, *, trajs_per_batch, **trainer_kwargs):
    """A trainer with a recording loss (``ratio="step"``) and one collected toy batch."""
    torch.manual_seed(0)
    actor, _ = laplace_actor(init_scale=0.3)
    contexts = ContextDataset(torch.rand(32, 2) - 0.5, [0] * 32, ["track"], seed=0)
    collector = GroupCollector(SerialEnv(4, make_env), actor, context_dataset=contexts, group_size=4,
                               trajs_per_batch=trajs_per_batch, max_frames_per_traj=4, seed=0)
    loss = loss_class(actor, ratio="step")
    trainer = RIPTTrainer(collector=collector, loss=loss, optimizer=make_optimizer(actor, lr=1e-2), num_steps=1,
                          progress=False, seed=0, **trainer_kwargs)
    batch = next(iter(collector))
    collector.shutdown()
    return trainer, loss, batch


@pytest.mark.parametrize("null", [False, True])
def test_null_advantages_train_on_random_signs_of_the_real_magnitudes(null):
    trainer, loss, batch = one_batch(_RecordingLoss, trajs_per_batch=16, ppo_epochs=1, minibatch_size=16,
                                     null_advantages=null)
    loss.seen = []
    real = batch.get("advantage").clone()
    trainer.update(batch)
    (seen,) = loss.seen  # one epoch, one minibatch of all 16 rows (in shuffled order)
    torch.testing.assert_close(batch.get("advantage"), real)  # the collector's batch is left as it was
    assert torch.equal(seen.abs().sort(0).values, real.abs().sort(0).values)
    # the same multiset of signed values for the real run; signs redrawn for the control
    assert torch.equal(seen.sort(0).values, real.sort(0).values) != null


class _ThreadsLoss(RIPTClipPPOLoss):
    """Records torch's intra-op threads at each gradient step."""

    def forward(self, tensordict):
        self.threads.append(torch.get_num_threads())
        return super().forward(tensordict)


@pytest.mark.parametrize("update_threads", [None, 1, 2])
def test_update_threads_hold_during_the_epochs_only(update_threads):
    trainer, loss, batch = one_batch(_ThreadsLoss, trajs_per_batch=8, ppo_epochs=2, minibatch_size=4,
                                     update_threads=update_threads)
    loss.threads = []
    before = torch.get_num_threads()
    other = 2 if before == 1 else 1  # the process's setting differs from the update's where possible
    torch.set_num_threads(other if update_threads is not None else before)
    try:
        outside = torch.get_num_threads()
        trainer.update(batch)
        assert loss.threads == [update_threads or outside] * 4  # 2 epochs x 2 minibatches of 4 rows
        assert torch.get_num_threads() == outside  # restored
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="update_threads must be an integer >= 1"):
        RIPTTrainer(collector=trainer.collector, loss=loss, optimizer=trainer.optimizer,
                    num_steps=1, ppo_epochs=1, minibatch_size=4, update_threads=0)
