"""Executed-only decoding and the cached prior of the QueST policy."""
import pytest
import torch
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives import ClipPPOLoss

from model_helpers import make_obs
from torchrl_ript.models import QuestDecoder, QuestPolicy, make_quest_actor, quest_config
from torchrl_ript.modules import make_rollout_policy


def quest(seed=0, **overrides):
    """Chunk 16, downsample 2 (8 tokens), 2 prior layers; logits spread by larger weights."""
    torch.manual_seed(seed)
    cfg = dict(chunk_size=16, downsample=2, n_exec=5, prior_layers=2, encoder=dict(state_dim=8))
    cfg.update(overrides)
    policy = QuestPolicy(quest_config("tiny", action_dim=4, **cfg)).eval()
    with torch.no_grad():
        for p in policy.prior.parameters():
            if p.ndim > 1:
                p.mul_(4.0)
    return policy


def test_the_scored_tokens_follow_the_decoders_mask_and_n_exec():
    # token j covers actions <= 2j+1; action t reads token j when 2j+1 <= t (token 0 always)
    for n_exec, tokens in [(1, 1), (3, 1), (4, 2), (5, 2), (16, 8)]:
        policy = quest(n_exec=n_exec)
        assert policy.scored_tokens == tokens
        assert quest(n_exec=n_exec, decode="full").scored_tokens == 8
    policy = quest()
    ids = torch.randint(0, policy.config.vocab_size, (6, 8))
    with torch.no_grad():
        base = policy.decode(ids)[:, :5]
        later = ids.clone()
        later[:, 2:] = (later[:, 2:] + 1) % policy.config.vocab_size  # tokens the 5 actions do not read
        torch.testing.assert_close(policy.decode(later)[:, :5], base, rtol=0, atol=0)
        read = ids.clone()
        read[:, 1] = (read[:, 1] + 1) % policy.config.vocab_size  # the last token they read
        assert not torch.allclose(policy.decode(read)[:, :5], base)


def test_executed_actions_are_the_first_actions_of_the_full_decode():
    policy = quest()
    ids = torch.randint(0, policy.config.vocab_size, (6, 8))
    with torch.no_grad():
        full = policy.decode(ids)
        executed = policy.decode(ids[:, :2], 5)
    assert executed.shape == (6, 5, 4)
    # equal up to float rounding (different matrix shapes): measured max |diff| ~1e-6
    torch.testing.assert_close(executed, full[:, :5], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="needs the first 2 tokens"):
        policy.decode(ids[:, :1], 5)


def test_the_rollout_draws_only_the_executed_tokens_and_acts_like_the_full_decode():
    executed, full = quest(), quest(decode="full")
    full.load_state_dict(executed.state_dict())
    obs = make_obs(6, seed=2)
    outs = {}
    for name, policy in (("executed", executed), ("full", full)):
        rollout = make_rollout_policy(make_quest_actor(policy), QuestDecoder(policy))
        with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
            outs[name] = rollout(obs.clone())
    assert outs["executed"]["action_tokens"].shape == (6, 2)
    assert outs["executed"]["logits"].shape == (6, 2, executed.config.vocab_size)
    assert outs["full"]["action_tokens"].shape == (6, 8)
    # greedy tokens of a causal prior: the executed ones are the full decode's first two
    assert torch.equal(outs["executed"]["action_tokens"], outs["full"]["action_tokens"][:, :2])
    torch.testing.assert_close(outs["executed"]["action"], outs["full"]["action"], rtol=0, atol=1e-5)


def _perturb_later_logits(policy, start):
    """A forward hook on the prior's head: every logit of a token >= ``start`` moves."""
    def hook(module, inputs, output):
        if output.ndim == 3 and output.shape[1] > start:
            output = output.clone()
            output[:, start:] += 3.0 * torch.randn_like(output[:, start:])
        return output
    return policy.prior.head.register_forward_hook(hook)


def _act_score_and_grad(policy, obs, seed):
    actor = make_quest_actor(policy)
    rollout = make_rollout_policy(actor, QuestDecoder(policy))
    torch.manual_seed(seed)
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        td = rollout(obs.clone())
    td = td.exclude("logits")
    td["advantage"] = torch.linspace(-1.0, 1.0, td.shape[0])[:, None]
    loss = ClipPPOLoss(actor, critic_network=None, entropy_bonus=False)
    loss.set_keys(action="action_tokens", sample_log_prob="action_log_prob")
    policy.zero_grad()
    # a changed old log-prob (the sampled one) moves the ratio away from 1 so the gradient is not trivial
    td["action_log_prob"] = td["action_log_prob"] - 0.05
    loss(td.clone())["loss_objective"].backward()
    grads = torch.cat([p.grad.flatten() for p in policy.prior.parameters() if p.grad is not None])
    with torch.no_grad():
        scored = actor.get_dist(td.clone()).log_prob(td["action_tokens"])
    return td["action"], scored, grads


@pytest.mark.parametrize("decode", ["executed", "full"])
def test_a_non_executed_tokens_logits_change_neither_action_nor_log_prob_nor_gradient(decode):
    policy = quest(decode=decode)
    obs = make_obs(8, seed=4)
    action, scored, grads = _act_score_and_grad(policy, obs, seed=7)
    handle = _perturb_later_logits(policy, start=2)  # tokens 2.. are not executed (n_exec 5)
    try:
        action2, scored2, grads2 = _act_score_and_grad(policy, obs, seed=7)
    finally:
        handle.remove()
    if decode == "executed":
        assert torch.equal(action2, action)
        assert torch.equal(scored2, scored)
        assert torch.equal(grads2, grads)
    else:  # the full decode scores those tokens: the same perturbation shows
        assert not torch.allclose(scored2, scored)
        assert not torch.allclose(grads2, grads)


def test_a_policy_executing_the_whole_chunk_scores_every_token():
    policy = quest(n_exec=16)
    actor = make_quest_actor(policy)
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        td = make_rollout_policy(actor, QuestDecoder(policy))(make_obs(4))
        scored = actor.get_dist(td.clone().exclude("logits")).log_prob(td["action_tokens"])
    assert td["action_tokens"].shape == (4, 8) and td["action"].shape == (4, 16, 4)
    torch.testing.assert_close(scored, td["action_log_prob"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("pick", ["greedy", "sampled"])
def test_cached_sampling_gives_the_uncached_logits(pick):
    policy = quest(n_exec=16)
    with torch.no_grad():
        context = policy.context(make_obs(5, seed=3))
        if pick == "greedy":
            def choose(logits):
                return logits.argmax(-1)
        else:
            def choose(logits):
                return torch.multinomial(logits.softmax(-1), 1)[:, 0]
        torch.manual_seed(11)
        cached_tokens, cached = policy.prior.sample(context, 8, choose, cache=True)
        torch.manual_seed(11)
        tokens, uncached = policy.prior.sample(context, 8, choose, cache=False)
        teacher_forced = policy.token_logits(context, cached_tokens)
    assert torch.equal(cached_tokens, tokens)
    assert (cached_tokens != cached_tokens[:, :1]).any()  # not one token repeated
    torch.testing.assert_close(cached, uncached, rtol=0, atol=1e-5)
    torch.testing.assert_close(cached, teacher_forced, rtol=0, atol=1e-5)


def test_sampling_falls_back_to_uncached_passes_while_dropout_is_active():
    policy = quest(n_exec=16, dropout=0.5).train()
    calls = []
    handle = policy.prior.register_forward_hook(lambda *args: calls.append(1))
    try:
        with torch.no_grad():
            policy.prior.sample(policy.context(make_obs(2)), 3, lambda lg: lg.argmax(-1), cache=True)
    finally:
        handle.remove()
    assert len(calls) == 3  # one full pass per token: the cached step has no dropout
    with pytest.raises(ValueError, match="n_tokens must be in"):
        policy.prior.sample(policy.context(make_obs(2)), 9, lambda lg: lg.argmax(-1))


def test_a_bad_decode_option_names_the_choices():
    with pytest.raises(ValueError, match="'executed' or 'full'"):
        quest_config("tiny", decode="all")
