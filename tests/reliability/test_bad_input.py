"""Bad input: each case fails fast with an error that names the fix, and writes nothing."""
from functools import partial

import h5py
import numpy as np
import pytest
import torch
from tensordict.nn import TensorDictModule
from torchrl.envs import AsyncEnvPool
from torchrl.envs.custom.vla import ToyVLAEnv

from torchrl_ript import ContextDataset, ContextToyVLAEnv, GroupCollector, read_demos
from torchrl_ript.config import ConfigError, RIPTConfig, validate_ript_config
from torchrl_ript.envs.libero.contexts import libero_contexts
from torchrl_ript.envs.libero.factory import libero_env_fn

from toy_helpers import laplace_actor


def toy_pool(n=2, **kwargs):
    return AsyncEnvPool([partial(ContextToyVLAEnv, action_dim=2, max_steps=4, **kwargs)] * n, backend="threading")


def contexts(n=8, dim=2, tasks=("track",), task_ids=None):
    g = torch.Generator().manual_seed(0)
    ids = [0] * n if task_ids is None else task_ids
    return ContextDataset(torch.rand(n, dim, generator=g) - 0.5, ids, list(tasks), seed=0)


def collect(policy, ctx=None, env=None, **kwargs):
    c = GroupCollector(env or toy_pool(), policy, context_dataset=ctx or contexts(), group_size=2,
                       trajs_per_batch=2, max_frames_per_traj=4, seed=0, dynamic_sampling=False, **kwargs)
    try:
        return next(iter(c))
    finally:
        c.shutdown()


def test_nan_actions_from_the_policy():
    policy = TensorDictModule(lambda s: (s[..., 2:4] * float("nan"), torch.zeros(s.shape[:-1])),
                              in_keys=[("observation", "state")], out_keys=["action", "action_log_prob"])
    with pytest.raises(ValueError, match="non-finite actions.*diverged update"):
        collect(policy)


def test_nan_log_probs_from_the_policy():
    policy = TensorDictModule(lambda s: (s[..., 2:4], torch.full(s.shape[:-1], float("nan"))),
                              in_keys=[("observation", "state")], out_keys=["action", "action_log_prob"])
    with pytest.raises(ValueError, match="non-finite log-probs.*distribution parameters"):
        collect(policy)


def test_an_env_without_the_context_contract():
    actor, _ = laplace_actor()
    env = AsyncEnvPool([partial(ToyVLAEnv, action_dim=2)] * 2, backend="threading")
    with pytest.raises(TypeError, match="context-reset contract.*context_state_spec"):
        collect(actor, env=env)


def test_a_context_of_the_wrong_state_size():
    actor, _ = laplace_actor()
    with pytest.raises(ValueError, match="initial states of size 5 but the env takes.*size 2"):
        collect(actor, ctx=contexts(dim=5))


def test_a_task_id_the_env_does_not_have():
    # a MetaWorld env of one task, contexts of a two-task dataset
    from torchrl_ript.envs.metaworld import MetaWorldEnv, metaworld_contexts

    ctx = metaworld_contexts(["reach-v3", "push-v3"], 2, seed=0)
    env = AsyncEnvPool([partial(MetaWorldEnv, task_names=["reach-v3"], camera_names=(), max_steps=20)],
                       backend="threading")
    policy = TensorDictModule(lambda s: (torch.zeros(*s.shape[:-1], 4), torch.zeros(s.shape[:-1])),
                              in_keys=[("observation", "state")], out_keys=["action", "action_log_prob"])
    with pytest.raises(RuntimeError, match="(?s)check the contexts.*task_id 1 out of range"):
        collect(policy, ctx=ctx.subset(ctx.task_contexts(1)), env=env)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: ContextDataset(torch.zeros(3, 2), [0, 0, 1], ["a", "b"], ["only one"]), "one instruction per task"),
        (lambda: ContextDataset(torch.zeros(2, 2), [0, 2], ["a", "b"]), r"task ids must lie in \[0, 1\]"),
        (lambda: ContextDataset(torch.zeros(0, 2), [], ["a"]), "ContextDataset is empty"),
        (lambda: ContextDataset.from_list([]), "at least one"),
    ],
)
def test_bad_context_datasets(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize(
    "values, match",
    [
        (dict(group_size=8, trajs_per_batch=20), "multiple of group_size.*try trajs_per_batch=16 or 24"),
        (dict(group_size=1, trajs_per_batch=4), "must be >= 2"),
        (dict(group_size=4, trajs_per_batch=16, max_context_draws=2), "use at least 4"),
        (dict(group_size=4, trajs_per_batch=8, minibatch_size=16), "exceeds trajs_per_batch"),
    ],
)
def test_bad_group_sizes(values, match):
    with pytest.raises(ConfigError, match=match):
        validate_ript_config(RIPTConfig(**values))
    if "minibatch_size" not in values:  # the collector runs the same check
        actor, _ = laplace_actor()
        with pytest.raises(ConfigError, match=match):
            GroupCollector(toy_pool(), actor, context_dataset=contexts(), group_size=values["group_size"],
                           trajs_per_batch=values["trajs_per_batch"], max_frames_per_traj=4,
                           max_context_draws=values.get("max_context_draws"))


def test_a_demo_file_with_a_missing_key(tmp_path):
    path = tmp_path / "task_demo.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data/demo_0/obs/agentview_rgb", data=np.zeros((3, 8, 8, 3), np.uint8))
    with pytest.raises(KeyError, match="lacks 'obs' or 'actions'"):
        read_demos(path)


def test_images_the_encoder_cannot_take():
    from torchrl_ript.models.common import EncoderConfig, ResNetImageEncoder

    enc = ResNetImageEncoder(8, widths=(8,), blocks=(1,), image_size=16)
    with pytest.raises(ValueError, match=r"RGB images \[\.\.\., 3, H, W\].*permute HWC images to CHW"):
        enc(torch.zeros(2, 16, 16, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="image_size must be >= 1"):
        EncoderConfig(image_size=0)


def test_a_bad_input_leaves_no_half_written_trainer_state(tmp_path):
    # the collector fails on its first batch: nothing is checkpointed
    from torchrl_ript import RIPTClipPPOLoss
    from torchrl_ript.trainers import RIPTTrainer, make_optimizer

    actor, _ = laplace_actor()
    bad = TensorDictModule(lambda s: (s[..., 2:4] * float("nan"), torch.zeros(s.shape[:-1])),
                           in_keys=[("observation", "state")], out_keys=["action", "action_log_prob"])
    c = GroupCollector(toy_pool(), bad, context_dataset=contexts(), group_size=2, trajs_per_batch=2,
                       max_frames_per_traj=4, seed=0)
    trainer = RIPTTrainer(collector=c, loss=RIPTClipPPOLoss(actor), optimizer=make_optimizer(actor, lr=1e-2),
                          num_steps=2, ppo_epochs=1, minibatch_size=2, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="non-finite actions"):
        trainer.train()
    c.shutdown()
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: libero_contexts("libero_nope", task_ids=[0], source="init_files"), "suite must be one of"),
        (lambda: libero_contexts("libero_object", task_ids=[10], source="init_files"),
         "out of range for libero_object"),
        (lambda: libero_env_fn("libero_nope", [0]), "suite must be one of"),
        (lambda: libero_env_fn("libero_object", [0, 12]), r"task ids \[12\] out of range for libero_object \(10 tasks"),
    ],
)
def test_a_libero_suite_or_task_that_does_not_exist(build, match):
    # before any env process starts, with a message that names the valid choices
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize("finetune", [False, True])
def test_demos_of_another_action_size_than_the_policy(tmp_path, finetune):
    from torchrl_ript.data.demos import DemoWriter
    from torchrl_ript.trainers.pipeline import build_policy, finetune_sft, train_sft

    path = tmp_path / "reach_demo.hdf5"
    with DemoWriter(path, task_name="reach", language_instruction="reach") as writer:
        writer.add_demo({"rgb": np.zeros((6, 32, 32, 3), np.uint8), "eef": np.zeros((6, 4))},
                        actions=np.zeros((6, 7), np.float32))  # LIBERO-sized actions
    files = [read_demos(path, key_map={"rgb": ("observation", "image"), "eef": ("observation", "state")})]
    bundle = build_policy("regression", preset="tiny", action_dim=4, state_dim=4,
                          image_keys=(("observation", "image"),), image_size=32)
    before = {k: v.clone() for k, v in bundle.network.state_dict().items()}
    with pytest.raises(ValueError, match="7-dim actions but the policy outputs 4.*action_dim=7"):
        (finetune_sft if finetune else train_sft)(bundle, files, steps=2, progress=False)
    for key, value in bundle.network.state_dict().items():  # nothing trained
        assert torch.equal(value, before[key]), key
