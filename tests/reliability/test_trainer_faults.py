"""The trainer under faults: killed mid-iteration, killed while saving, bad checkpoints, starvation."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from torchrl_ript import ContextDataset, GroupCollector, RIPTClipPPOLoss
from torchrl_ript.modules.toy_policies import toy_laplace_actor
from torchrl_ript.trainers import CheckpointError, RIPTTrainer, make_optimizer, make_scheduler

from toy_helpers import LinearLaplace, oracle_policy

SCRIPT = Path(__file__).with_name("resume_script.py")


def _run(out: Path, steps: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, str(SCRIPT), str(out), str(steps)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_trainer_killed_mid_iteration_resumes_exactly(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight.mkdir(), killed.mkdir()
    proc = _run(straight, 4)
    assert proc.wait(timeout=600) == 0, proc.stdout.read()
    proc = _run(killed, 4)
    deadline = time.monotonic() + 600
    while not (killed / "collecting_3").exists():  # steps 1-2 are checkpointed; step 3 is collecting
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else ""
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (killed / "final.pt").exists()
    state = torch.load(killed / "latest.pt", weights_only=False)
    assert state["step"] == 2  # the kill hit step 3
    proc = _run(killed, 4)  # resumes from latest.pt
    assert proc.wait(timeout=600) == 0, proc.stdout.read()
    for step in (3, 4):  # the next batches equal the uninterrupted run's
        a = torch.load(straight / f"batch_{step}.pt", weights_only=False)
        b = torch.load(killed / f"batch_{step}.pt", weights_only=False)
        assert (a == b).all(), step
    a, b = torch.load(straight / "final.pt"), torch.load(killed / "final.pt")
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _trainer(tmp_path, *, net=None, config=None, policy=None, num_steps=1, **collector_kwargs):
    from torchrl.envs import AsyncEnvPool

    from torchrl_ript import ContextToyVLAEnv, make_continuous_actor

    torch.manual_seed(0)
    if net is None:
        actor, _ = toy_laplace_actor()
    else:
        actor = make_continuous_actor(net, in_keys=[("observation", "state")], event_dims=1)
    g = torch.Generator().manual_seed(0)
    contexts = ContextDataset(torch.rand(32, 2, generator=g) - 0.5, [0] * 32, ["track"], seed=0)
    pool = AsyncEnvPool([lambda: ContextToyVLAEnv(action_dim=2, max_steps=4, success_tol=0.15)] * 4,
                        backend="threading")
    collector = GroupCollector(pool, policy or actor, context_dataset=contexts, group_size=4, trajs_per_batch=8,
                               max_frames_per_traj=4, seed=0, **collector_kwargs)
    optimizer = make_optimizer(actor, lr=1e-2)
    return RIPTTrainer(collector=collector, loss=RIPTClipPPOLoss(actor), optimizer=optimizer,
                       scheduler=make_scheduler(optimizer, kind="cosine", total_steps=num_steps),
                       num_steps=num_steps, ppo_epochs=1, minibatch_size=4, checkpoint_dir=tmp_path,
                       progress=False, seed=0, config=config or {"group_size": 4, "lr": 1e-2})


def test_a_kill_during_a_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path)
    trainer.train()
    good = (tmp_path / "latest.pt").read_bytes()

    def dies_halfway(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK\x03\x04 half a zip")  # what a kill mid-write leaves behind
        raise KeyboardInterrupt("killed during torch.save")

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        trainer.save(tmp_path / "latest.pt")
    assert (tmp_path / "latest.pt").read_bytes() == good  # the rename never happened
    trainer.collector.shutdown()


@pytest.mark.parametrize("case", ["truncated", "not_a_checkpoint", "other_model", "other_config"])
def test_bad_checkpoints_raise_clear_errors_and_overwrite_nothing(tmp_path, case):
    trainer = _trainer(tmp_path)
    trainer.train()
    trainer.collector.shutdown()
    path = tmp_path / "latest.pt"
    if case == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
        match = "truncated or corrupt"
    elif case == "not_a_checkpoint":
        torch.save({"state_dict": {}}, path)
        match = "not a RIPTTrainer checkpoint"
    elif case == "other_model":
        match = "another model"
    else:
        match = "another configuration.*lr: 0.01 in the checkpoint, 0.001 now"
    before = path.read_bytes()
    kwargs = {}
    if case == "other_model":
        kwargs["net"] = LinearLaplace(state_dim=4, action_dim=2, init_scale=0.3)
        kwargs["net"].scale = type(kwargs["net"].scale)(4, (2,), hidden=16)  # another scale-head width
    if case == "other_config":
        kwargs["config"] = {"group_size": 4, "lr": 1e-3}
    again = _trainer(tmp_path, **kwargs)
    with pytest.raises(CheckpointError, match=match):
        again.resume(path)
    assert path.read_bytes() == before and again.step == 0
    again.collector.shutdown()


def test_a_longer_run_or_other_update_threads_resume(tmp_path):
    # more steps (extending a finished run) and speed-only options may change; the recipe may not
    first = _trainer(tmp_path, config={"group_size": 4, "lr": 1e-2, "num_steps": 1, "update_threads": None})
    first.train()
    first.collector.shutdown()
    again = _trainer(tmp_path, num_steps=2, config={"group_size": 4, "lr": 1e-2, "num_steps": 2, "update_threads": 2})
    assert again.resume(tmp_path / "latest.pt") and again.step == 1
    again.train()
    assert again.step == 2
    again.collector.shutdown()


def test_starvation_gives_one_message_per_step_no_update_and_a_summary(tmp_path, capsys):
    # the oracle solves every context: every group is all-success, none is informative
    trainer = _trainer(tmp_path, policy=oracle_policy(), num_steps=3, max_context_draws=4)
    weights = {k: v.clone() for k, v in trainer.loss.actor_network.state_dict().items()}
    lr = trainer.optimizer.param_groups[0]["lr"]
    start = time.perf_counter()
    history = trainer.train()
    out = capsys.readouterr().out
    trainer.collector.shutdown()
    assert time.perf_counter() - start < 120
    assert [r["train/skipped"] for r in history] == [1, 1, 1]
    assert [r["collect/contexts_drawn"] for r in history] == [4, 4, 4]  # bounded per step
    assert out.count("found no informative group") == 3
    assert "3 without an informative group" in out
    for key, value in trainer.loss.actor_network.state_dict().items():
        assert torch.equal(value, weights[key]), key
    assert trainer.optimizer.param_groups[0]["lr"] == lr and trainer.scheduler.last_epoch == 0
    assert not trainer.optimizer.state  # Adam never stepped
