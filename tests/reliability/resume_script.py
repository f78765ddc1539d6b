"""A small RIPT run for the kill-and-resume test: ``python resume_script.py DIR STEPS``.

Resumes from ``DIR/latest.pt`` when it exists. Writes ``DIR/collecting_<step>``
when a step's collection starts, ``DIR/batch_<step>.pt`` with each collected
batch and ``DIR/final.pt`` with the weights at the end. Lockstep collection:
the stochastic policy draws its random numbers in the same order every run.
"""
import sys
from pathlib import Path

import torch
from torchrl.envs import AsyncEnvPool

from torchrl_ript import ContextDataset, ContextToyVLAEnv, GroupCollector, RIPTClipPPOLoss
from torchrl_ript.modules.toy_policies import toy_laplace_actor
from torchrl_ript.trainers import RIPTTrainer, make_optimizer


class RecordingCollector(GroupCollector):
    def __init__(self, *args, out: Path, **kwargs):
        super().__init__(*args, **kwargs)
        self.out = out

    def rollout(self):
        step = self.weights_version + 1
        (self.out / f"collecting_{step}").touch()
        batch = super().rollout()
        torch.save(batch.exclude("language_instruction"), self.out / f"batch_{step}.pt")
        return batch


def make_env():
    import time

    class Slowish(ContextToyVLAEnv):
        def _step(self, tensordict):
            time.sleep(0.01)  # long enough for the test to kill a step in flight
            return super()._step(tensordict)

    return Slowish(action_dim=2, max_steps=4, success_tol=0.15)


def main(out: Path, steps: int) -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    contexts = ContextDataset(torch.rand(64, 2, generator=g) - 0.5, [0] * 64, ["track"], seed=0)
    actor, _ = toy_laplace_actor()
    collector = RecordingCollector(
        AsyncEnvPool([make_env] * 4, backend="threading"), actor, context_dataset=contexts, group_size=4,
        trajs_per_batch=16, max_frames_per_traj=4, seed=0, lockstep=True, out=out,
    )
    trainer = RIPTTrainer(
        collector=collector, loss=RIPTClipPPOLoss(actor), optimizer=make_optimizer(actor, lr=1e-2),
        num_steps=steps, ppo_epochs=4, minibatch_size=4, checkpoint_dir=out, progress=False, seed=0,
        config={"group_size": 4, "trajs_per_batch": 16, "lr": 1e-2},
    )
    trainer.resume(out / "latest.pt")
    trainer.train()
    collector.shutdown()
    torch.save(actor.state_dict(), out / "final.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
