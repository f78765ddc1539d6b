"""Sampling options on trained checkpoints, and evaluation in several exploration modes."""
import pytest
import torch
from tensordict.nn import TensorDictModule
from torchrl.envs import SerialEnv
from torchrl.envs.utils import ExplorationType, exploration_type

from torchrl_ript import ContextDataset, ContextToyVLAEnv
from torchrl_ript.models.checkpoint import load_policy, save_policy
from torchrl_ript.models.regression_policy import RegressionPolicy, regression_config
from torchrl_ript.models.quest import QuestPolicy, quest_config
from torchrl_ript.trainers import evaluate_modes, exploration_modes
from torchrl_ript.trainers.pipeline import load_or_train_policy, set_sampling


def test_set_sampling_survives_save_and_load(tmp_path):
    net = QuestPolicy(quest_config("tiny"))
    save_policy(net, tmp_path / "sft.pt")
    bundle, info = load_or_train_policy(tmp_path / "sft.pt", build={}, files_fn=None, sft_options={},
                                        save_to=tmp_path / "unused.pt", sampling={"top_k": 4, "temperature": None})
    assert info["loaded"] and bundle.network.config.top_k == 4
    assert bundle.network.config.temperature == 1.0  # None keeps the saved value
    save_policy(bundle.network, tmp_path / "ript.pt")
    assert load_policy(tmp_path / "ript.pt").config.top_k == 4


@pytest.mark.parametrize(
    "network, options, match",
    [
        (lambda: QuestPolicy(quest_config("tiny")), {"top_p": 0.9}, "valid: \\['temperature', 'top_k'\\]"),
        (lambda: QuestPolicy(quest_config("tiny")), {"top_k": 0}, "top_k must be in"),
        (lambda: QuestPolicy(quest_config("tiny")), {"temperature": 0.0}, "temperature must be > 0"),
        (lambda: RegressionPolicy(regression_config("tiny")), {"top_k": 5}, "valid: \\['scale_multiplier'\\]"),
        (lambda: RegressionPolicy(regression_config("tiny")), {"scale_multiplier": 0.0}, "scale_multiplier must be > 0"),
    ],
)
def test_set_sampling_rejects_bad_options(network, options, match):
    net = network()
    before = dict(net.config.to_dict()) if hasattr(net.config, "to_dict") else None
    with pytest.raises(ValueError, match=match):
        set_sampling(net, **options)
    if before is not None:
        assert net.config.to_dict() == before  # nothing half-written


def test_exploration_modes_names_the_valid_ones():
    assert exploration_modes("random") == ["random"]
    assert exploration_modes(("deterministic", "random")) == ["deterministic", "random"]
    for bad in ("mode", [], ["random", "greedy"]):
        with pytest.raises(ValueError, match="among \\['deterministic', 'random'\\]"):
            exploration_modes(bad)


def test_evaluate_modes_scores_the_mode_and_the_sampling_policy():
    # action = mean + large noise when sampling: the mode always tracks, sampling mostly fails
    class Noisy(torch.nn.Module):
        def forward(self, state):
            mean = state[..., 2:4]
            return mean if exploration_type() == ExplorationType.DETERMINISTIC else mean + 5 * torch.randn_like(mean)

    torch.manual_seed(0)
    policy = TensorDictModule(Noisy(), in_keys=[("observation", "state")], out_keys=["action"])
    contexts = ContextDataset(torch.rand(6, 2) - 0.5, [0] * 6, ["track"])
    env = SerialEnv(2, lambda: ContextToyVLAEnv(action_dim=2))
    out = evaluate_modes(env, policy, contexts, horizon=4, modes=["random", "deterministic"], progress=False)
    assert out["by_mode"]["deterministic"]["sr"] == 1.0
    assert out["by_mode"]["random"]["sr"] < 1.0
    assert out["success_rate"] == out["by_mode"]["random"]["sr"]  # the first mode is the headline


def test_seeded_evaluation_does_not_depend_on_the_callers_random_state():
    class Noisy(torch.nn.Module):
        def forward(self, state):
            return state[..., 2:4] + 0.3 * torch.randn_like(state[..., 2:4])

    policy = TensorDictModule(Noisy(), in_keys=[("observation", "state")], out_keys=["action"])
    contexts = ContextDataset(torch.rand(24, 2, generator=torch.Generator().manual_seed(0)) - 0.5, [0] * 24, ["track"])
    env = SerialEnv(2, lambda: ContextToyVLAEnv(action_dim=2))

    def outcomes(global_seed, seed):
        torch.manual_seed(global_seed)  # what ran before the evaluation (pretraining, SFT...)
        state = torch.get_rng_state()
        out = evaluate_modes(env, policy, contexts, horizon=4, modes="random", lockstep=True, seed=seed,
                             progress=False)["by_mode"]["random"]["outcomes"]
        return out, torch.equal(torch.get_rng_state(), state)

    unseeded = [outcomes(g, None)[0] for g in (1, 2)]
    assert 0 < sum(unseeded[0]) < len(contexts)  # sampling noise decides some outcomes
    assert unseeded[0] != unseeded[1]  # ... so without a seed the caller's state changes the score
    (first, restored), (second, _) = outcomes(1, 7), outcomes(2, 7)
    assert first == second
    assert restored  # the caller's random stream is left where it was


def test_several_rollouts_per_start_for_the_sampling_mode_only():
    """``rollouts_per_start``: R sampled rollouts per start (counts start by start), the mode once per start."""
    class Noisy(torch.nn.Module):
        def forward(self, state):
            mean = state[..., 2:4]
            return mean if exploration_type() == ExplorationType.DETERMINISTIC else mean + 0.3 * torch.randn_like(mean)

    policy = TensorDictModule(Noisy(), in_keys=[("observation", "state")], out_keys=["action"])
    states = torch.rand(6, 2, generator=torch.Generator().manual_seed(0)) - 0.5
    contexts = ContextDataset(states, [0, 0, 0, 1, 1, 1], ["a", "b"])
    env = SerialEnv(2, lambda: ContextToyVLAEnv(action_dim=2, task_names=["a", "b"]))
    kwargs = dict(horizon=4, modes=["random", "deterministic"], lockstep=True, seed=3, progress=False)
    out = evaluate_modes(env, policy, contexts, rollouts_per_start=4, **kwargs)
    sampled, mode = out["by_mode"]["random"], out["by_mode"]["deterministic"]
    assert (sampled["starts"], sampled["rollouts_per_start"], sampled["n"]) == (6, 4, 24)
    assert (mode["starts"], mode["rollouts_per_start"], mode["n"]) == (6, 1, 6)
    assert mode["counts"] == [int(o) for o in mode["outcomes"]] == [1] * 6
    counts = [sum(sampled["outcomes"][4 * i:4 * i + 4]) for i in range(6)]
    assert sampled["counts"] == counts and sampled["sr"] == pytest.approx(sum(counts) / 24)
    assert any(0 < c < 4 for c in counts)  # a start's rollouts draw their own samples
    assert sampled["per_task"]["a"] == pytest.approx(sum(counts[:3]) / 12)
    assert out["success_rate"] == sampled["sr"] and out["num_rollouts"] == 24
    steps = sampled["rollout_env_steps"]  # per rollout, in outcome order: a failure runs to the horizon
    assert len(steps) == 24 and all(1 <= s <= 4 for s in steps)
    assert all(s == 4 for s, ok in zip(steps, sampled["outcomes"]) if not ok)
    again = evaluate_modes(env, policy, contexts, rollouts_per_start=4, **kwargs)["by_mode"]["random"]
    assert again["counts"] == counts  # seeded, lockstep: the same draws
    for bad in (0, 1.5, "2", None):
        with pytest.raises(ValueError, match="eval.rollouts_per_start"):
            evaluate_modes(env, policy, contexts, rollouts_per_start=bad, **kwargs)
