"""The collector benchmark runs, and GroupCollector's fast paths change no data."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchrl.envs import SerialEnv
from torchrl.envs.utils import ExplorationType

from torchrl_ript import ContextDataset, ContextToyVLAEnv, GroupCollector, make_continuous_actor, ScaleHead

ROOT = Path(__file__).resolve().parents[2]


def test_quick_benchmark_runs_and_reports(tmp_path):
    out = tmp_path / "ct.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "collector_throughput.py"), "--quick",
         "--no-sweep", "--out", str(out)],
        capture_output=True, text=True, timeout=170, env=env, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("env_steps_per_s", "group_vs_limit", "group_vs_stock", "rollouts_per_s",
                "bytes_per_rollout", "peak_rss_mb", "group_time_breakdown", "scaling"):
        assert key in last, key
    assert last["env_steps_per_s"] > 0 and last["group_vs_limit"] > 0 and last["group_vs_stock"] > 0
    assert json.loads(out.read_text())["env_steps_per_s"] == last["env_steps_per_s"]


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.mean = torch.nn.Linear(4 + 4, 2)
        self.scale = ScaleHead(8, (2,), init_scale=0.3, hidden=8)

    def forward(self, image, state):
        h = torch.cat([self.conv(image.float() / 255).mean((-1, -2)), state], -1)
        return self.mean(h), self.scale(h)


def _collect(batched: bool, exploration: ExplorationType, monkeypatch) -> list:
    monkeypatch.setattr(GroupCollector, "batched_record", batched)
    torch.manual_seed(0)
    actor = make_continuous_actor(
        _Net(), in_keys=[("observation", "image"), ("observation", "state")], event_dims=1
    )
    g = torch.Generator().manual_seed(0)
    contexts = ContextDataset(torch.rand(8, 2, generator=g) - 0.5, [0] * 8, ["track"], seed=0)
    env = SerialEnv(3, lambda: ContextToyVLAEnv(action_dim=2, max_steps=5))
    collector = GroupCollector(
        env, actor, context_dataset=contexts, group_size=2, trajs_per_batch=6,
        max_frames_per_traj=5, seed=0, exploration_type=exploration,
        dynamic_sampling=exploration == ExplorationType.RANDOM,
    )
    batches = []
    try:
        for i, batch in enumerate(collector):
            batches.append(batch)
            if i == 1:
                break
    finally:
        collector.shutdown()
    return batches


@pytest.mark.parametrize("exploration", [ExplorationType.RANDOM, ExplorationType.DETERMINISTIC])
def test_batched_record_matches_per_slot_records(exploration, monkeypatch):
    torch.manual_seed(0)
    fast = _collect(True, exploration, monkeypatch)
    plain = _collect(False, exploration, monkeypatch)
    assert len(fast) == len(plain) == 2
    for a, b in zip(fast, plain):
        assert a.batch_size == b.batch_size and a.numel() > 0
        assert set(a.keys(True, True)) == set(b.keys(True, True))
        for key in a.keys(True, True):
            if key == "language_instruction":
                assert list(a[key]) == list(b[key])
                continue
            assert a[key].dtype == b[key].dtype, key
            assert torch.equal(a[key], b[key]), key
        assert a["steps", "observation", "image"].dtype == torch.uint8
