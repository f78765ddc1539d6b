"""``benchmarks/per_start_success.py``: several sampled rollouts per held-out start, counted start by start."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchrl.envs import SerialEnv

from torchrl_ript import ContextDataset, ContextToyVLAEnv
from torchrl_ript.modules.toy_policies import toy_laplace_actor
from torchrl_ript.trainers import paired_count_test, repeat_starts

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "per_start_success.py"


@pytest.fixture(scope="module")
def script(load_benchmark):
    return load_benchmark("per_start_success")


def test_rollouts_are_counted_per_start_and_task(script):
    """Toy env, a Laplace policy that solves some starts sometimes: counts per start, start-major, reproducible."""
    torch.manual_seed(0)
    actor, _ = toy_laplace_actor()
    states = torch.tensor([[0.0, 0.0], [0.3, -0.2], [-0.4, 0.4], [0.1, 0.1], [0.45, 0.45]])
    contexts = ContextDataset(states, [0, 0, 1, 1, 1], ["a", "b"])
    rep = repeat_starts(contexts, 3)
    assert len(rep) == 15 and rep.task_ids.tolist() == [0] * 6 + [1] * 9
    assert torch.equal(rep.states[3:6], states[1].expand(3, 2))
    env = SerialEnv(2, lambda: ContextToyVLAEnv(action_dim=2, task_names=["a", "b"]))
    kwargs = dict(rollouts=3, horizon=4, lockstep=True, seed=7, progress=False)
    first = script.score(env, actor, contexts, **kwargs)
    again = script.score(env, actor, contexts, **kwargs)
    assert first["counts"] == again["counts"]  # same seed, lockstep: the same draws
    assert len(first["counts"]) == 5 and all(0 <= c <= 3 for c in first["counts"])
    assert first["mixed"] > 0  # a start's rollouts draw their own samples (else every count is 0 or 3)
    assert first["per_task"]["a"]["counts"] == first["counts"][:2]
    assert first["per_task"]["b"]["counts"] == first["counts"][2:]
    assert first["sr"] == pytest.approx(sum(first["counts"]) / 15)
    assert first["never"] + first["mixed"] + first["always"] == pytest.approx(1.0)
    paired = paired_count_test(first["counts"], again["counts"], rollouts=3)
    text = script.table({"rollouts": 3, "checkpoint": "sft.pt", "policy": first,
                         "against": [{"checkpoint": "same.pt", **again, "paired": paired}]})
    assert "3 sampled rollouts per held-out start; policy: sft.pt" in text and "against1: same.pt" in text
    assert f"all tasks  {first['sr']:>7.3f}" in text  # the overall row of each policy
    assert "against1 vs policy" in text and "0 starts up, 0 down" in text and "p = 1" in text


def test_own_options_are_checked(script, tmp_path):
    args, rest = script.parse_own_args(["--rollouts", "4", "--config-name", "ript_metaworld", "ript.seed=1"])
    assert args.rollouts == 4 and args.against == [] and rest == ["--config-name", "ript_metaworld", "ript.seed=1"]
    with pytest.raises(SystemExit, match="--rollouts must be >= 1"):
        script.parse_own_args(["--rollouts", "0"])
    (tmp_path / "a.pt").write_bytes(b"")
    args, _ = script.parse_own_args(["--against", str(tmp_path / "a.pt"), "--config-name", "ript_metaworld"])
    assert args.against == [str(tmp_path / "a.pt")]
    with pytest.raises(SystemExit, match="missing.pt.*not found"):
        script.parse_own_args(["--against", str(tmp_path / "a.pt"), str(tmp_path / "missing.pt")])


@pytest.mark.slow  # ~1-2 min: MetaWorld demos, a 3-step SFT and 2 x 8 rollouts
@pytest.mark.timeout(700)
def test_metaworld_tiny_policy_against_itself(tmp_path):
    """The same policy file scored twice on the same starts and seed: the same counts, nothing to test."""
    pytest.importorskip("metaworld")
    tiny = ["tasks=[reach-v3]", "demos.per_task=1", "env.max_steps=40", "env.image_size=32", "env.num_envs=1", "eval.num_envs=1",
            "eval.per_task=4", "policy.preset=tiny", "+policy.overrides.n_exec=8", "policy.sampling.top_k=3",
            "sft.steps=3", "sft.autoencoder_steps=3", "progress=false"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run(*args, out):
        done = subprocess.run([sys.executable, str(SCRIPT), *args, f"hydra.run.dir={out}"], capture_output=True,
                              text=True, timeout=600, env=env, cwd=ROOT)
        assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result == json.loads((out / "per_start_success.json").read_text())
        return result, done.stdout

    first, _ = run("--rollouts", "2", "--config-name", "ript_metaworld_fewshot", *tiny, out=tmp_path / "sft")
    assert first["rollouts"] == 2 and first["n_starts"] == 4 and first["against"] == []
    assert len(first["policy"]["counts"]) == 4 and first["sft_s"] > 0
    checkpoint = tmp_path / "sft" / "sft_policy.pt"
    second, stdout = run("--rollouts", "2", "--against", str(checkpoint), "--config-name", "ript_metaworld_fewshot",
                         *tiny, f"policy.checkpoint={checkpoint}", out=tmp_path / "loaded")
    assert second["sft_s"] == 0.0 and [a["checkpoint"] for a in second["against"]] == [str(checkpoint)]
    against = second["against"][0]
    assert second["policy"]["counts"] == against["counts"] == first["policy"]["counts"]
    assert against["paired"]["p_value"] == 1.0 and against["paired"]["starts_up"] == 0
    assert "never" in stdout and "against1 vs policy" in stdout
