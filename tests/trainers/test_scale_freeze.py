"""RIPT leaves the scale head as SFT fitted it unless ``ript.train_scale``; per-action ratios through the factory."""
import torch
from tensordict import NonTensorStack, TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_ript import ContextDataset
from torchrl_ript.config import RIPTConfig
from torchrl_ript.models import RegressionPolicy, regression_config, wrap_policy
from torchrl_ript.models.common import IMAGE_KEY, STATE_KEY
from torchrl_ript.models.registry import scale_parameters
from torchrl_ript.trainers.factory import make_ript_trainer

N, T = 4, 3
INSTRUCTIONS = ["open the drawer", "close the drawer", "open the drawer", "close the drawer"]


def regression_batch(actor, seed=0):
    """N trajectories of T decisions sampled by the actor, in the collector's layout."""
    g = torch.Generator().manual_seed(seed)
    flat = TensorDict({
        IMAGE_KEY: torch.randint(0, 256, (N * T, 3, 32, 32), dtype=torch.uint8, generator=g),
        STATE_KEY: torch.randn(N * T, 8, generator=g),
        "language_instruction": NonTensorStack(*[INSTRUCTIONS[i // T] for i in range(N * T)]),
    }, [N * T])
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        flat = actor(flat)
    steps = flat.select(IMAGE_KEY, STATE_KEY, "action", "action_log_prob").reshape(N, T)
    steps["mask"] = torch.ones(N, T, dtype=torch.bool)
    batch = TensorDict(steps=steps, advantage=torch.tensor([[1.0], [-1.0], [1.0], [-1.0]]), batch_size=[N])
    batch.set("language_instruction", NonTensorStack(*INSTRUCTIONS))
    return batch


def one_update(train_scale, ratio="step"):
    torch.manual_seed(0)
    bundle = wrap_policy(RegressionPolicy(regression_config("tiny", action_dim=4)))
    config = RIPTConfig(group_size=2, trajs_per_batch=N, minibatch_size=2, ppo_epochs=2, lr=1e-3,
                        max_decisions=T, train_scale=train_scale, ratio=ratio)
    contexts = ContextDataset(torch.zeros(2, 2), [0, 0], ["t"], seed=0)
    trainer = make_ript_trainer(config, env=None, eval_env=None, actor=bundle.actor, train_contexts=contexts,
                                collector=iter(()), progress=False)
    batch = regression_batch(bundle.actor)
    scale = {k: v.clone() for k, v in bundle.network.scale_head.state_dict().items()}
    mean = bundle.network.action_head.weight.clone()
    record = trainer.update(batch)
    moved = {k: not torch.equal(v, bundle.network.scale_head.state_dict()[k]) for k, v in scale.items()}
    return bundle, batch, record, moved, not torch.equal(mean, bundle.network.action_head.weight)


def test_a_ript_update_leaves_the_scale_head_bit_identical_by_default():
    bundle, _, record, moved, mean_moved = one_update(train_scale=False)
    assert record["train/epochs"] == 2 and mean_moved
    assert not any(moved.values()), moved
    assert all(not p.requires_grad for p in scale_parameters(bundle.actor))


def test_train_scale_lets_the_update_move_it():
    bundle, _, _, moved, mean_moved = one_update(train_scale=True)
    assert mean_moved and any(moved.values()), moved
    assert all(p.requires_grad for p in scale_parameters(bundle.actor))


def test_action_ratio_through_the_factory_scores_each_action():
    bundle, batch, record, moved, mean_moved = one_update(train_scale=False, ratio="action")
    # the batch was sampled after make_ript_trainer switched the actor: [N, T, chunk] log-probs
    assert batch["steps", "action_log_prob"].shape == (N, T, bundle.network.config.chunk_size)
    assert mean_moved and not any(moved.values())
    assert record["train/clip_fraction"] >= 0.0
