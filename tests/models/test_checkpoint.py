"""``load_policy`` on files that are not (whole) policy files raises ``CheckpointError`` naming the file."""
from __future__ import annotations

import re

import pytest
import torch

from torchrl_ript.models import CheckpointError, load_policy, save_policy
from torchrl_ript.models.checkpoint import POLICY_FORMAT
from torchrl_ript.models.regression_policy import RegressionPolicy, regression_config
from torchrl_ript.trainers.pipeline import load_or_train_policy


@pytest.fixture
def policy_file(tmp_path):
    path = tmp_path / "sft_policy.pt"
    save_policy(RegressionPolicy(regression_config("tiny")), path, extra={"note": "x"})
    return path


def test_a_truncated_policy_file(policy_file):
    data = policy_file.read_bytes()
    policy_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=re.escape(f"cannot read policy file {policy_file}: it is truncated")):
        load_policy(policy_file)
    policy_file.write_bytes(b"")
    with pytest.raises(CheckpointError, match="truncated"):
        load_policy(policy_file)


@pytest.mark.parametrize(
    "write",
    [
        lambda path: path.write_text("not a checkpoint\n"),
        lambda path: torch.save({"weights": torch.zeros(2)}, path),  # a dict without the marker
        lambda path: torch.save({"format": "torchrl_ript.RIPTTrainer/1", "actor": {}}, path),
        lambda path: torch.save([1, 2, 3], path),
    ],
    ids=["text", "dict", "trainer-format", "list"],
)
def test_a_file_that_is_not_a_policy_file(tmp_path, write):
    path = tmp_path / "foreign.pt"
    write(path)
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        load_policy(path)


def test_a_policy_file_whose_weights_do_not_fit_its_config(policy_file):
    payload = torch.load(policy_file, weights_only=True)
    payload["config"]["hidden"] = 32  # the weights were saved for hidden=64
    torch.save(payload, policy_file)
    with pytest.raises(CheckpointError, match="do not fit this version's RegressionPolicy"):
        load_policy(policy_file)


def test_files_without_the_marker_from_before_it_still_load(policy_file):
    payload = torch.load(policy_file, weights_only=True)
    assert payload["format"] == POLICY_FORMAT
    del payload["format"]
    torch.save(payload, policy_file)
    policy, extra = load_policy(policy_file, return_extra=True)
    assert isinstance(policy, RegressionPolicy) and extra == {"note": "x"}


def test_a_broken_checkpoint_stops_the_pipeline_before_anything_is_written(policy_file, tmp_path):
    policy_file.write_bytes(policy_file.read_bytes()[:100])
    save_to = tmp_path / "out" / "sft_policy.pt"
    for kwargs in ({"checkpoint": policy_file}, {"checkpoint": None, "start_from": policy_file}):
        with pytest.raises(CheckpointError, match=re.escape(str(policy_file))):
            load_or_train_policy(build={}, files_fn=None, sft_options={}, save_to=save_to, **kwargs)
    assert not save_to.parent.exists()
    with pytest.raises(FileNotFoundError):
        load_policy(tmp_path / "missing.pt")
