import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from torchrl.envs.utils import ExplorationType, set_exploration_type  # noqa: E402
from torchrl.objectives import ClipPPOLoss  # noqa: E402

from model_helpers import make_obs  # noqa: E402
from torchrl_ript.models import make_regression_actor  # noqa: E402
from torchrl_ript.models.hf_vla import ByteTokenizer, HFVLAConfig, HFVLAPolicy  # noqa: E402

IMAGE_TOKEN, SLOT_TOKEN = 260, 261


def tiny_llava():
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=32)
    text = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                       num_key_value_heads=2, vocab_size=264, max_position_embeddings=128)
    torch.manual_seed(0)
    return LlavaForConditionalGeneration(LlavaConfig(vision_config=vision, text_config=text, image_token_id=IMAGE_TOKEN))


@pytest.fixture(scope="module")
def policy():
    cfg = HFVLAConfig(action_dim=4, chunk_size=3, image_token_id=IMAGE_TOKEN, action_slot_id=SLOT_TOKEN,
                      pad_token_id=0, lora_rank=4, head_hidden=32, scale_hidden=16)
    return HFVLAPolicy(tiny_llava(), ByteTokenizer(offset=4), cfg)


def test_forward_sample_log_prob(policy):
    actor = make_regression_actor(policy)
    obs = make_obs(3)  # instructions of different lengths -> left padding
    with set_exploration_type(ExplorationType.RANDOM), torch.no_grad():
        out = actor(obs.clone())
    assert out["action"].shape == out["loc"].shape == (3, 3, 4)
    assert out["action_log_prob"].shape == (3,)
    torch.testing.assert_close(actor.get_dist(out.clone()).log_prob(out["action"]), out["action_log_prob"])
    # a row's output does not depend on the rest of the batch (padding/positions)
    with torch.no_grad():
        alone = policy(obs[1:2].clone())["loc"]
    torch.testing.assert_close(alone[0], out["loc"][1], atol=1e-5, rtol=1e-5)
    assert policy.config.num_image_tokens == 16


def test_only_lora_and_heads_train(policy):
    counts = policy.num_parameters()
    assert counts["lora"] > 0 and counts["backbone_frozen"] > 10 * counts["lora"]
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all(("lora_" in n) or n.startswith(("action_head.", "scale_head.")) for n in trainable)
    assert not any("vision_tower" in n for n in trainable)
    groups = policy.param_groups()
    assert [g["name"] for g in groups] == ["lora", "action_head", "scale_head"]
    assert [g["lr"] for g in groups] == [1e-4, 1e-5, 1e-4]

    actor = make_regression_actor(policy)
    with set_exploration_type(ExplorationType.RANDOM), torch.no_grad():
        td = actor(make_obs(2, seed=4))
    td = td.exclude("loc", "scale")
    td["advantage"] = torch.tensor([[1.0], [0.0]])
    loss = ClipPPOLoss(actor, critic_network=None, entropy_bonus=False)
    loss.set_keys(action="action", sample_log_prob="action_log_prob")
    opt = torch.optim.SGD(policy.param_groups(lr_lora=1e-4, lr_head=1e-5, lr_scale=1e-5))
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    losses = loss(td.clone())
    sum(v for k, v in losses.items() if k.startswith("loss_")).backward()
    opt.step()
    changed = {n for n, p in policy.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable
    assert any("lora_" in n for n in changed) and any(n.startswith("action_head.") for n in changed)
    assert any(n.startswith("scale_head.") for n in changed)
    with torch.no_grad():
        new = actor.get_dist(td.clone()).log_prob(td["action"])
    assert new[0] > td["action_log_prob"][0]


def test_adapter_checkpoint_round_trip(policy, tmp_path):
    state = policy.trainable_state_dict()
    assert state and all(("lora_" in k) or k.startswith(("action_head.", "scale_head.")) for k in state)
    torch.save(state, tmp_path / "adapters.pt")
    other = HFVLAPolicy(tiny_llava(), ByteTokenizer(offset=4), policy.config)
    obs = make_obs(2, seed=9)
    with torch.no_grad():
        for p in policy.lora_parameters():
            p.add_(0.05)
        state = policy.trainable_state_dict()
        assert not torch.equal(other(obs.clone())["loc"], policy(obs.clone())["loc"])
        other.load_trainable_state_dict(state)
        torch.testing.assert_close(other(obs.clone())["loc"], policy(obs.clone())["loc"], rtol=0, atol=0)
