"""Pretrain -> fine-tune stages, the outcome feed on a real collector, and the run summaries."""
from pathlib import Path

import numpy as np
import pytest
import torch
from torchrl.envs import SerialEnv

from torchrl_ript import ContextDataset, ContextToyVLAEnv, GroupCollector
from torchrl_ript.data import AdaptiveSampler
from torchrl_ript.data.demos import DemoWriter, read_demos
from torchrl_ript.models.checkpoint import load_policy
from torchrl_ript.modules.toy_policies import toy_laplace_actor
from torchrl_ript.trainers.pipeline import (
    collection_summary,
    load_or_pretrain,
    load_or_train_policy,
    paired_results,
)

KEY_MAP = {"rgb": ("observation", "image"), "s": ("observation", "state")}


def write_demos(folder: Path, task: str, n: int, *, T: int = 12, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path = folder / f"{task}_demo.hdf5"
    with DemoWriter(path, task_name=task, language_instruction=f"do {task}") as writer:
        for _ in range(n):
            writer.add_demo({"rgb": rng.integers(0, 255, (T, 32, 32, 3), dtype=np.uint8),
                             "s": rng.standard_normal((T, 4))},
                            actions=np.tanh(rng.standard_normal((T, 4))))
    return path


def build(kind):
    return dict(kind=kind, preset="tiny", action_dim=4, state_dim=4,
                image_keys=[("observation", "image")], image_size=32)


def params(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("kind", ["quest", "regression"])
def test_pretrain_then_finetune_keeps_and_changes_the_right_parts(tmp_path, kind):
    source = write_demos(tmp_path, "source", 4, seed=0)
    target = write_demos(tmp_path, "target", 1, seed=1)
    options = dict(steps=4, autoencoder_steps=4, scale_steps=4, lr=1e-3)
    path, info = load_or_pretrain(None, build=build(kind), files_fn=lambda: [read_demos(source, key_map=KEY_MAP)],
                                  sft_options=options, save_to=tmp_path / "pre.pt", progress=False)
    assert path == tmp_path / "pre.pt" and info["pretrain_s"] > 0
    pretrained = load_policy(path)
    bundle, sft_info = load_or_train_policy(
        None, build={}, start_from=path, files_fn=lambda: [read_demos(target, key_map=KEY_MAP)],
        sft_options=options, save_to=tmp_path / "sft.pt", progress=False,
    )
    assert sft_info["start_from"] == str(path)
    tuned = bundle.network
    if kind == "quest":
        # the pretrained skill tokenizer is kept; the prior is fine-tuned
        assert set(sft_info["history"]) == {"prior"} and len(sft_info["history"]["prior"]) == 4
        for key, value in pretrained.autoencoder.state_dict().items():
            assert torch.equal(tuned.autoencoder.state_dict()[key], value), key
        assert any(not torch.equal(tuned.prior.state_dict()[k], v) for k, v in pretrained.prior.state_dict().items())
    else:
        # the mean head is fine-tuned and the scale head refit on the target demos (held out
        # of the mean's first stage when there are 2 or more)
        assert set(sft_info["history"]) in ({"regression", "scale"}, {"regression", "regression_all", "scale"})
        assert any(not torch.equal(tuned.action_head.state_dict()[k], v)
                   for k, v in pretrained.action_head.state_dict().items())
        assert any(not torch.equal(tuned.scale_head.state_dict()[k], v)
                   for k, v in pretrained.scale_head.state_dict().items())
    # the fine-tuned checkpoint records where it started from, and reloads identically
    reloaded, extra = load_policy(tmp_path / "sft.pt", return_extra=True)
    assert extra["start_from"] == str(path)
    for key, value in tuned.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key
    # a given pretrain checkpoint skips the stage
    again, info = load_or_pretrain(path, build={}, files_fn=None, sft_options={}, save_to=tmp_path / "x.pt")
    assert again == path and info["pretrain_s"] == 0.0 and not (tmp_path / "x.pt").exists()


def test_missing_checkpoints_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="pretrain.checkpoint empty"):
        load_or_pretrain(tmp_path / "nope.pt", build={}, files_fn=None, sft_options={}, save_to=tmp_path / "p.pt")
    with pytest.raises(FileNotFoundError, match="pretrain stage"):
        load_or_train_policy(None, build={}, start_from=tmp_path / "nope.pt", files_fn=None, sft_options={},
                             save_to=tmp_path / "s.pt")


def test_a_real_collector_feeds_its_adaptive_sampler_by_itself():
    torch.manual_seed(0)
    contexts = ContextDataset(torch.rand(6, 2) - 0.5, [0] * 6, ["track"], seed=0,
                              sampler=AdaptiveSampler(group_size=4))
    actor, _ = toy_laplace_actor()
    collector = GroupCollector(
        SerialEnv(4, lambda: ContextToyVLAEnv(action_dim=2, max_steps=3, success_tol=0.3)), actor,
        context_dataset=contexts, group_size=4, trajs_per_batch=8, max_frames_per_traj=3, seed=0,
        dynamic_sampling=False,
    )
    batch = next(iter(collector))
    stats = collector.last_stats
    sampler = contexts.context_sampler
    # every finished rollout was reported (forgetting shrinks old counts: at most one per rollout)
    outcomes = sampler.successes + sampler.failures
    assert 0 < float(outcomes.sum()) <= stats.rollouts_finished
    assert int(sampler.draws.sum()) == stats.contexts_drawn
    seen = set(batch["context_id"].tolist())
    assert all(float(outcomes[c]) > 0 for c in seen)
    collector.shutdown()


def test_paired_results_and_collection_summary_add_up():
    sft = {"random": {"outcomes": [0] * 8 + [1] * 2}, "deterministic": {"outcomes": [1] * 10}}
    ript = {"random": {"outcomes": [1] * 8 + [1] * 2}, "deterministic": {"outcomes": [1] * 9 + [0]}}
    out = paired_results(sft, ript, ["random", "deterministic"])
    assert out["p_value"] == pytest.approx(0.5 ** 8)  # 8 gained, 0 lost
    assert out["p_value_by_mode"]["deterministic"]["lost"] == 1
    assert out["p_value_by_mode"]["deterministic"]["p_value"] == 1.0
    assert paired_results(None, ript, ["random"])["p_value"] is None
    history = [
        {"collect/groups_completed": 5, "collect/groups_kept": 2, "collect/groups_all_success": 1,
         "collect/groups_all_failure": 2, "collect/env_steps": 1000, "collect/contexts_drawn": 6},
        {"collect/groups_completed": 3, "collect/groups_kept": 2, "collect/groups_all_success": 0,
         "collect/groups_all_failure": 1, "collect/env_steps": 500, "collect/contexts_drawn": 4},
    ]
    summary = collection_summary(history)
    assert summary["groups_informative"] == 4 and summary["informative_group_rate"] == 0.5
    assert summary["env_steps_per_informative_group"] == 375.0 and summary["contexts_drawn"] == 10
    # dynamic sampling off: uniform groups are kept but are not informative
    off = collection_summary([{"collect/groups_completed": 4, "collect/groups_kept": 4,
                               "collect/groups_all_success": 1, "collect/groups_all_failure": 2,
                               "collect/env_steps": 400}], dynamic_sampling=False)
    assert off["groups_informative"] == 1 and off["env_steps_per_informative_group"] == 400.0
    none = collection_summary([{"collect/groups_completed": 2, "collect/groups_kept": 0,
                                "collect/groups_all_failure": 2, "collect/env_steps": 10}])
    assert none["env_steps_per_informative_group"] is None
