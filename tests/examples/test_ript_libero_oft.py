"""``--config-name ript_libero_oft`` end to end on a tiny random HF VLA saved to a local folder.

``policy.kind=hf`` loads the backbone from ``policy.pretrained`` (no hub),
adds LoRA and the action/scale heads, SFTs them on LIBERO-layout demos, fits
the scale head by NLL, evaluates, runs one RIPT iteration with the OFT
learning rates (LoRA 1e-4, action head 1e-5, scale head frozen) and
evaluates again; the saved checkpoints (adapters + heads) reload as
``HFVLAPolicy`` from the backbone folder.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from torchrl_ript.envs.libero.setup import libero_available

pytest.importorskip("transformers")
pytest.importorskip("peft")
pytestmark = pytest.mark.skipif(
    not libero_available(), reason="LIBERO is not installed: run `bash scripts/install_libero.sh`."
)

SCRIPT = Path(__file__).parents[2] / "examples" / "ript_libero.py"


@pytest.mark.slow  # ~45 s
@pytest.mark.timeout(700)
def test_oft_config_runs_a_local_hf_vla(tmp_path):
    from torchrl_ript.models.hf_vla import save_tiny_llava

    backbone = save_tiny_llava(tmp_path / "tiny_vla")
    out = tmp_path / "run"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--config-name", "ript_libero_oft", f"hydra.run.dir={out}",
         f"policy.pretrained={backbone}", "progress=false",
         # small: random-rollout demos, 32 px, tiny heads, one RIPT iteration that updates
         "demos.random=true", "demos.random_per_task=1", "demos.random_steps=8", "env.camera_size=32",
         "env.max_steps=16", "env.num_envs=1", "policy.overrides.lora_rank=4", "policy.overrides.lora_alpha=4",
         "+policy.overrides.head_hidden=16", "+policy.overrides.scale_hidden=16",
         "sft.steps=3", "sft.scale_steps=3", "sft.batch_size=4", "eval.per_task=1", "eval.videos=0",
         "eval.during_training_per_task=0", "ript.group_size=2", "ript.trajs_per_batch=2", "ript.num_steps=1",
         "ript.minibatch_size=2", "ript.max_context_draws=1", "ript.dynamic_sampling=false"],
        capture_output=True, text=True, timeout=650,
    )
    assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["policy"] == "hf" and result["iterations"] == 1 and result["iterations_without_update"] == 0
    assert result["eval_modes"] == ["deterministic"] and result["n_eval"] == 1
    history = json.loads((out / "checkpoints" / "history.json").read_text())["train"]
    assert history[0]["train/batch"] == 2

    from torchrl_ript.models.checkpoint import load_policy
    from torchrl_ript.models.hf_vla import HFVLAPolicy

    sft, ript = load_policy(out / "sft_policy.pt"), load_policy(out / "ript_policy.pt")
    assert isinstance(ript, HFVLAPolicy) and ript.config.pretrained == str(Path(backbone).resolve())
    assert ript.config.lora_rank == 4 and ript.config.chunk_size == 8
    assert isinstance(sft, HFVLAPolicy)
    # the optimiser of the RIPT step: LoRA at 1e-4, the action head at 1e-5, the scale head
    # left out (ript.train_scale: false), and every one of their parameters took the PPO step
    # (AdamW step count 1).
    # (This tiny policy never succeeds, so the advantages and the update are zero: that the
    # update moves LoRA and the heads is tested in tests/models/test_hf_vla.py.)
    state = torch.load(out / "checkpoints" / "latest.pt", weights_only=False)["optimizer"]
    groups = {g["name"]: (g["lr"], len(g["params"])) for g in state["param_groups"]}
    lora = sum(1 for k in ript.trainable_state_dict() if "lora_" in k)
    head = len(list(ript.action_head.parameters()))
    assert groups == {"lora_": (1e-4, lora), "default": (1e-5, head)}
    assert len(state["state"]) == lora + head
    assert all(float(s["step"]) == 1.0 for s in state["state"].values())
