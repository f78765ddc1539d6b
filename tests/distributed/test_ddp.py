"""DDP learners: 2 gloo processes compute the same update as 1 process on the same batch.

A real batch is collected once (GroupCollector, toy env); one process trains
on all of it, two ``torch.distributed`` ranks on one share each (equal and
unequal shares). The weights must agree after the update; a checkpoint
written by rank 0 must restore every rank (weights, step, each rank's RNG).
"""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torchrl.envs import SerialEnv

from torchrl_ript import ContextDataset, ContextToyVLAEnv, GroupCollector, RIPTClipPPOLoss
from torchrl_ript.modules.toy_policies import toy_laplace_actor
from torchrl_ript.trainers import RIPTTrainer, make_optimizer

B, K, T = 16, 4, 3
EPOCHS = 3


def make_trainer(batch, *, minibatch_size, distributed=None, checkpoint_dir=None):
    actor, _ = toy_laplace_actor()
    loss = RIPTClipPPOLoss(actor, clip_epsilon=0.2)
    trainer = RIPTTrainer(
        collector=[batch], loss=loss, optimizer=make_optimizer(actor, lr=1e-2), num_steps=1,
        ppo_epochs=EPOCHS, minibatch_size=minibatch_size, max_grad_norm=1.0, progress=False,
        seed=0, distributed=distributed, checkpoint_dir=checkpoint_dir,
    )
    return trainer, actor


def load_start(actor, path):
    actor.load_state_dict(torch.load(path, weights_only=False)["actor"])


def rank_main(rank, world, port, folder, cases):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from torchrl_ript.trainers.ddp import init_distributed

    ctx = init_distributed(timeout_s=120)
    data = torch.load(os.path.join(folder, "data.pt"), weights_only=False)
    for name, shares, minibatch_size in cases:
        start = sum(shares[:rank])
        share = data["batch"][start : start + shares[rank]]
        torch.manual_seed(100 + rank)  # ranks sample differently; rank 0's weights are broadcast
        ckpt = os.path.join(folder, name)
        trainer, actor = make_trainer(share, minibatch_size=minibatch_size, distributed=ctx,
                                      checkpoint_dir=ckpt)
        if rank == 0:
            load_start(actor, os.path.join(folder, "data.pt"))
        trainer.train()  # checkpoints after the step (collective; rank 0 writes)
        rng = torch.get_rng_state()
        trained = {k: v.clone() for k, v in actor.state_dict().items()}
        # a fresh trainer on every rank resumes from rank 0's file
        fresh, fresh_actor = make_trainer(share, minibatch_size=minibatch_size, distributed=ctx)
        torch.manual_seed(999)
        resumed = fresh.resume(os.path.join(ckpt, "latest.pt"))
        torch.save({"trained": trained, "resumed": resumed, "step": fresh.step,
                    "weights_after_resume": fresh_actor.state_dict(),
                    "rng_restored": torch.equal(torch.get_rng_state(), rng),
                    "history": trainer.history},
                   os.path.join(folder, f"{name}_rank{rank}.pt"))
    ctx.shutdown()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def batch_and_reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    torch.manual_seed(0)
    actor, _ = toy_laplace_actor()
    with torch.no_grad():  # a start that is not all zeros
        for p in actor.parameters():
            p.add_(0.1 * torch.randn_like(p))
    contexts = ContextDataset(torch.rand(32, 2) - 0.5, [0] * 32, ["track"], seed=0)
    collector = GroupCollector(SerialEnv(K, ContextToyVLAEnv), actor, context_dataset=contexts,
                               group_size=K, trajs_per_batch=B, max_frames_per_traj=T, seed=0,
                               dynamic_sampling=False)
    batch = next(iter(collector))
    collector.shutdown()
    torch.save({"batch": batch, "actor": actor.state_dict()}, folder / "data.pt")
    trainer, ref_actor = make_trainer(batch, minibatch_size=B)  # one process, whole batch
    load_start(ref_actor, folder / "data.pt")
    trainer.train()
    return folder, {k: v.clone() for k, v in ref_actor.state_dict().items()}, batch


CASES = [("equal-shares", (8, 8), B), ("unequal-shares", (12, 4), 2 * B)]


@pytest.fixture(scope="module")
def ddp_runs(batch_and_reference):
    folder = batch_and_reference[0]
    mp.start_processes(rank_main, args=(2, free_port(), str(folder), CASES), nprocs=2,
                       start_method="spawn", join=True)
    return folder


@pytest.mark.timeout(180)
@pytest.mark.parametrize("case", [name for name, _, _ in CASES])
def test_two_ranks_same_update_as_one_process(batch_and_reference, ddp_runs, case):
    folder, reference, batch = batch_and_reference
    assert batch.shape == (B,) and batch["advantage"].abs().sum() > 0
    start = torch.load(folder / "data.pt", weights_only=False)["actor"]
    for rank in range(2):
        out = torch.load(folder / f"{case}_rank{rank}.pt", weights_only=False)
        moved = max(float((out["trained"][k] - start[k]).abs().max()) for k in start)
        assert moved > 1e-3  # the update did something
        for key, value in reference.items():
            torch.testing.assert_close(out["trained"][key], value, rtol=1e-5, atol=1e-6)
        # rank 0's checkpoint restores every rank: weights, step and the rank's own RNG
        assert out["resumed"] and out["step"] == 1 and out["rng_restored"]
        for key, value in out["trained"].items():
            torch.testing.assert_close(out["weights_after_resume"][key], value)
        assert out["history"][0]["train/batch"] == B
