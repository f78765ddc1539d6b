import pytest
import torch
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives import ClipPPOLoss

from model_helpers import camera_keys, make_obs
from torchrl_ript.models import QuestDecoder, QuestPolicy, make_quest_actor, quest_config
from torchrl_ript.modules import make_rollout_policy


def tiny_quest(cameras=1, **kw):
    return QuestPolicy(quest_config("tiny", action_dim=4, encoder={"image_keys": camera_keys(cameras)}, **kw))


@pytest.mark.parametrize("cameras", [1, 2])
@pytest.mark.parametrize("mode", [ExplorationType.RANDOM, ExplorationType.DETERMINISTIC])
def test_actor_and_rollout_shapes(cameras, mode):
    policy = tiny_quest(cameras)
    c = policy.config
    rollout = make_rollout_policy(make_quest_actor(policy), QuestDecoder(policy))
    with set_exploration_type(mode), torch.no_grad():
        out = rollout(make_obs(5, cameras=cameras))
    n = policy.scored_tokens
    assert out["action_tokens"].shape == (5, n) and out["action_tokens"].dtype == torch.long
    assert out["logits"].shape == (5, n, c.vocab_size) and out["logits"].dtype == torch.float32
    assert out["action_log_prob"].shape == (5,) and torch.isfinite(out["action_log_prob"]).all()
    assert out["action"].shape == (5, c.n_exec, 4) and out["action"].dtype == torch.float32
    assert out["action"].abs().max() <= 1.0
    assert 0 <= out["action_tokens"].min() and out["action_tokens"].max() < c.vocab_size


def test_second_camera_changes_output():
    policy = tiny_quest(2)
    obs = make_obs(3, cameras=2)
    a = policy.context(obs)
    obs2 = obs.clone()
    obs2["observation", "wrist_image"] = 255 - obs2["observation", "wrist_image"]
    assert a.shape[1] == 4  # task, two cameras, proprio
    assert not torch.allclose(a, policy.context(obs2))


@pytest.mark.parametrize("sampling", [{}, {"temperature": 0.7, "top_k": 5}])
def test_sampling_log_prob_is_exact(sampling):
    policy = tiny_quest(**sampling)
    actor = make_quest_actor(policy)
    with set_exploration_type(ExplorationType.RANDOM), torch.no_grad():
        td = actor(make_obs(16, seed=1))
    tokens, stored = td["action_tokens"], td["action_log_prob"]
    # the tokens are not all the argmax: sampling did happen
    assert (tokens != td["logits"].argmax(-1)).any()
    # recomputed by the loss path on the same tensordict (teacher forcing)
    recomputed = actor.get_dist(td.clone().exclude("logits")).log_prob(tokens)
    torch.testing.assert_close(recomputed, stored, rtol=0, atol=1e-5)
    # = manual log-softmax gather of the teacher-forced logits
    logits = policy.token_logits(policy.context(td), tokens)
    logits = logits / policy.config.temperature
    if policy.config.top_k:
        kth = logits.topk(policy.config.top_k, -1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    manual = logits.log_softmax(-1).gather(-1, tokens[..., None]).squeeze(-1).sum(-1)
    torch.testing.assert_close(manual, stored, rtol=0, atol=1e-5)
    assert torch.isfinite(stored).all()


def test_prior_is_causal_so_sampled_conditionals_are_exact():
    """Logits of token i do not depend on tokens >= i: each token was drawn from
    the same conditional the teacher-forced pass scores."""
    policy = tiny_quest()
    obs = make_obs(4)
    ctx = policy.context(obs)
    L, V = policy.config.n_tokens, policy.config.vocab_size
    tokens = torch.randint(0, V, (4, L))
    base = policy.token_logits(ctx, tokens)
    for i in range(L):
        changed = tokens.clone()
        changed[:, i:] = torch.randint(0, V, (4, L - i))
        torch.testing.assert_close(policy.token_logits(ctx, changed)[:, : i + 1], base[:, : i + 1])
        if i + 1 < L:
            assert not torch.allclose(policy.token_logits(ctx, changed)[:, i + 1 :], base[:, i + 1 :])


def test_greedy_eval_and_stale_tokens():
    policy = tiny_quest()
    actor = make_quest_actor(policy)
    obs = make_obs(6)
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        clean = actor(obs.clone())
        stale = obs.clone()
        stale["action_tokens"] = torch.zeros(6, policy.scored_tokens, dtype=torch.long)
        again = actor(stale)
    assert (clean["action_tokens"] == clean["logits"].argmax(-1)).all()
    assert (again["action_tokens"] == clean["action_tokens"]).all()
    assert not (clean["action_tokens"] == 0).all()


def test_ppo_step_raises_log_prob():
    policy = tiny_quest()
    actor = make_quest_actor(policy)
    with set_exploration_type(ExplorationType.RANDOM), torch.no_grad():
        td = actor(make_obs(4, seed=3))
    td = td.exclude("logits")
    td["advantage"] = torch.tensor([[1.0], [0.0], [0.0], [0.0]])
    loss = ClipPPOLoss(actor, critic_network=None, entropy_bonus=False)
    loss.set_keys(action="action_tokens", sample_log_prob="action_log_prob")
    opt = torch.optim.SGD(policy.parameters(), lr=0.05)
    old = td["action_log_prob"].clone()
    losses = loss(td.clone())
    total = sum(v for k, v in losses.items() if k.startswith("loss_"))
    total.backward()
    grads = [p.grad for p in policy.prior.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in policy.autoencoder.parameters())
    opt.step()
    with torch.no_grad():
        new = actor.get_dist(td.clone()).log_prob(td["action_tokens"])
    assert new[0] > old[0] + 1e-3


def test_collector_rollout_resamples_every_step_and_scores_exactly():
    from tensordict.nn import TensorDictModule, TensorDictSequential
    from torchrl.collectors import Collector
    from torchrl.envs.custom.vla import ToyVLAEnv

    env = ToyVLAEnv(action_dim=4, state_dim=8, image_shape=(3, 32, 32))  # unbatched env: batch_size []
    env.set_seed(0)
    policy = tiny_quest().eval()
    actor = make_quest_actor(policy)
    to_single = TensorDictModule(lambda a: a[..., 0, :], in_keys=["action"], out_keys=["action"])
    rollout = TensorDictSequential(actor, QuestDecoder(policy, n_exec=1), to_single)
    collector = Collector(env, rollout, frames_per_batch=6, total_frames=6)
    try:
        batch = next(iter(collector))
    finally:
        collector.shutdown()
        del collector
    tokens = batch["action_tokens"]
    assert tokens.shape == (6, policy.scored_tokens)
    assert len({tuple(t) for t in tokens.tolist()}) > 1  # fresh tokens each step, not carried over
    with torch.no_grad():
        recomputed = actor.get_dist(batch.clone()).log_prob(tokens)
    torch.testing.assert_close(recomputed, batch["action_log_prob"], rtol=0, atol=1e-4)


@pytest.mark.parametrize("order", ["before_wrap", "after_wrap"])
def test_sampling_options_have_one_owner_whatever_the_call_order(order):
    # set_sampling (pipeline) before or after the actor is built: the stored
    # log-prob must be the one of the distribution that sampled the tokens
    from torchrl_ript.trainers.pipeline import set_sampling, wrap_policy

    torch.manual_seed(0)
    net = QuestPolicy(quest_config("tiny", encoder=dict(state_dim=8)))
    for p in net.parameters():  # spread the logits so top-k differs from the full softmax
        torch.nn.init.normal_(p, std=0.5)
    if order == "before_wrap":
        set_sampling(net, top_k=3, temperature=0.7)
    bundle = wrap_policy(net)
    if order == "after_wrap":
        set_sampling(net, top_k=3, temperature=0.7)
    obs = make_obs(6)
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        out = bundle.actor(obs.clone())
        scored = bundle.actor.get_dist(out).log_prob(out["action_tokens"])
    assert bundle.actor[-1].distribution_kwargs["top_k"] == 3
    torch.testing.assert_close(out["action_log_prob"], scored)
    # every sampled token is inside the current top-3 (finite log-prob)
    assert torch.isfinite(scored).all()
