import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_ript import (
    IndependentLaplace,
    TokenCategorical,
    fit_scale_head,
    make_continuous_actor,
    make_token_actor,
)
from torchrl_ript.modules import chunk_nll

from toy_helpers import LinearLaplace


@pytest.mark.parametrize("options", [{}, {"temperature": 0.5}, {"top_k": 2}, {"temperature": 2.0, "top_k": 3}])
def test_token_sample_frequencies_match_log_prob(options):
    logits = torch.tensor([[0.5, 1.0, -1.0, 0.2], [2.0, 0.0, 0.1, -0.5]])  # L=2 tokens, V=4
    net = lambda x: logits.expand(*x.shape[:-1], 2, 4)  # noqa: E731
    actor = make_token_actor(net, in_keys=["x"], **options)
    n = 40_000
    with set_exploration_type(ExplorationType.RANDOM):
        out = actor(TensorDict(x=torch.zeros(n, 1), batch_size=[n]))
    tokens = out["action_tokens"]
    codes = tokens[:, 0] * 4 + tokens[:, 1]
    freq = torch.bincount(codes, minlength=16).float() / n
    grid = torch.cartesian_prod(torch.arange(4), torch.arange(4))
    prob = TokenCategorical(logits, **options).log_prob(grid).exp()
    assert torch.allclose(freq, prob, atol=0.012), (freq, prob)
    # the log-prob written at sampling time is the scored distribution's
    recomputed = actor.get_dist(out).log_prob(tokens)
    torch.testing.assert_close(out["action_log_prob"], recomputed)
    assert torch.isfinite(out["action_log_prob"]).all()


def test_sequence_log_prob_is_sum_of_token_log_probs():
    logits = torch.randn(5, 3, 7)
    tokens = torch.randint(7, (5, 3))
    manual = torch.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1).sum(-1)
    torch.testing.assert_close(TokenCategorical(logits).log_prob(tokens), manual)


def test_deterministic_mode_is_argmax_and_mean():
    logits = torch.tensor([[[0.0, 3.0, 1.0]]])
    assert TokenCategorical(logits).deterministic_sample.tolist() == [[1]]
    dist = IndependentLaplace(torch.full((1, 2, 3), 0.25), torch.ones(1, 2, 3))
    assert torch.equal(dist.deterministic_sample, torch.full((1, 2, 3), 0.25))


@pytest.mark.parametrize("multiplier", [1.0, 5.0])
def test_laplace_samples_follow_the_scored_density(multiplier):
    actor = make_continuous_actor(
        lambda x: (torch.zeros(*x.shape[:-1], 1), torch.full((*x.shape[:-1], 1), 0.2)),
        in_keys=["x"], scale_multiplier=multiplier, event_dims=1,
    )
    n = 40_000
    with set_exploration_type(ExplorationType.RANDOM):
        out = actor(TensorDict(x=torch.zeros(n, 1), batch_size=[n]))
    samples = out["action"].reshape(-1)
    edges = torch.linspace(-1.0, 1.0, 21)
    counts = torch.histc(samples.clamp(-1.0, 1.0 - 1e-6), bins=20, min=-1.0, max=1.0) / n
    b = 0.2 * multiplier
    cdf = lambda v: torch.where(v < 0, 0.5 * torch.exp(v / b), 1 - 0.5 * torch.exp(-v / b))  # noqa: E731
    expected = cdf(edges[1:]) - cdf(edges[:-1])
    expected[0] += cdf(edges[:1])[0]
    expected[-1] += 1 - cdf(edges[-1:])[0]
    assert torch.allclose(counts, expected, atol=0.01)
    # log_prob is the density with the multiplied scale
    x = torch.tensor([[0.3]])
    torch.testing.assert_close(
        actor.get_dist(TensorDict(x=torch.zeros(1, 1), batch_size=[1])).log_prob(x),
        torch.tensor([-abs(0.3) / b - torch.log(torch.tensor(2 * b))]),
    )


def test_scale_head_fit_lowers_nll_and_freezes_the_rest():
    torch.manual_seed(0)
    net = LinearLaplace(init_scale=1.0)
    actor = make_continuous_actor(net, in_keys=["obs"], event_dims=1)
    obs = torch.randn(256, 4)
    demos = [TensorDict(obs=obs, action=0.05 * torch.randn(256, 2), batch_size=[256])]
    mean_before = net.mean.weight.clone()
    before = float(chunk_nll(actor, demos[0]))
    history = fit_scale_head(actor, net.scale.parameters(), demos, steps=150, lr=1e-2, progress=False)
    after = float(chunk_nll(actor, demos[0]))
    assert after < before - 1.0 and history[-1] < history[0]
    assert torch.equal(net.mean.weight, mean_before)
    assert all(p.requires_grad for p in net.parameters())  # restored after the fit


def test_actor_errors():
    with pytest.raises(ValueError, match="distribution"):
        make_continuous_actor(torch.nn.Linear(2, 2), in_keys=["x"], distribution="beta")
    with pytest.raises(ValueError, match="in_keys"):
        make_token_actor(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="top_k"):
        TokenCategorical(torch.zeros(1, 2, 3), top_k=5)


@pytest.mark.parametrize("distribution", ["laplace", "gaussian"])
def test_fitted_scale_is_the_maximum_likelihood_scale_of_the_residuals(distribution):
    # fixed mean head, known residuals: the NLL-optimal constant scale is the
    # mean absolute residual (Laplace) or the root mean square residual (Gaussian)
    from torchrl_ript import ScaleHead

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mean = torch.nn.Linear(4, 2)
            self.scale = ScaleHead(1, (2,), hidden=8, init_scale=1.0, min_scale=1e-3, max_scale=10.0)

        def forward(self, obs):
            return self.mean(obs), self.scale(torch.ones(*obs.shape[:-1], 1))

    torch.manual_seed(0)
    net = Net()
    actor = make_continuous_actor(net, in_keys=["obs"], event_dims=1, distribution=distribution)
    obs = torch.randn(512, 4)
    with torch.no_grad():
        residual = torch.distributions.Laplace(0.0, torch.tensor([0.05, 0.4])).sample((512,))
        action = net.mean(obs) + residual
    demos = [TensorDict(obs=obs, action=action, batch_size=[512])]
    fit_scale_head(actor, net.scale.parameters(), demos, steps=400, lr=5e-2, progress=False)
    with torch.no_grad():
        fitted = net.scale(torch.ones(1, 1))[0]
    expected = residual.abs().mean(0) if distribution == "laplace" else residual.pow(2).mean(0).sqrt()
    torch.testing.assert_close(fitted, expected, rtol=0.03, atol=1e-3)
