"""``ript.lockstep=true`` (every example's default): the same command gives bitwise the same run.

Real subprocesses of ``examples/ript_toy.py``: two runs of one command end
with equal weights and histories, and a run killed with SIGKILL after its
second checkpoint, then started again with the same command, resumes and
ends bitwise equal to the uninterrupted run.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parents[2] / "examples" / "ript_toy.py"
STEPS = 4
OVERRIDES = [f"ript.num_steps={STEPS}", "ript.eval_every=2", "progress=false", "logger.kind=none"]


def _start(out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SCRIPT), f"hydra.run.dir={out}", *OVERRIDES],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen) -> None:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]


def _final(out: Path) -> dict:
    state = torch.load(out / "checkpoints" / "latest.pt", weights_only=False)
    assert state["step"] == STEPS
    return state


def _assert_same_run(a: dict, b: dict) -> None:
    assert a["actor"].keys() == b["actor"].keys()
    for key in a["actor"]:
        assert torch.equal(a["actor"][key], b["actor"][key]), key
    assert [r["success_rate"] for r in a["eval_history"]] == [r["success_rate"] for r in b["eval_history"]]
    assert [r["train/loss"] for r in a["history"]] == [r["train/loss"] for r in b["history"]]


@pytest.mark.slow  # ~40 s of subprocesses; tests/reliability/test_trainer_faults.py kills and resumes a trainer in the default run
def test_the_same_command_twice_and_a_killed_then_resumed_run_end_bitwise_equal(tmp_path):
    first, second, killed = tmp_path / "first", tmp_path / "second", tmp_path / "killed"
    _finish(_start(first))
    _finish(_start(second))
    reference = _final(first)
    _assert_same_run(reference, _final(second))

    proc = _start(killed)
    history = killed / "checkpoints" / "history.json"
    deadline = time.monotonic() + 600
    while True:  # kill once two steps are checkpointed, mid-run
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0][-3000:]
        try:
            if len(json.loads(history.read_text())["train"]) >= 2:
                break
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            pass
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert torch.load(killed / "checkpoints" / "latest.pt", weights_only=False)["step"] < STEPS
    _finish(_start(killed))  # the same command: it resumes from latest.pt
    _assert_same_run(reference, _final(killed))
