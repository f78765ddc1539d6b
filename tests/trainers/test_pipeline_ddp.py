"""Under ``torchrun`` only rank 0 records demos and runs SFT; rank 1 receives its files.

Two gloo ranks (spawned processes) run the pipeline's demo and SFT stages as
the examples do (``files_from_main_rank`` then ``load_or_train_policy`` with
``distributed=``). Rank 1 must not make demos nor call SFT, and must end with
rank 0's weights (and its own copy of the files). A failure on rank 0 reaches
rank 1 as an error instead of a hang.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from torchrl_ript.data.demos import DemoWriter, read_demos
from torchrl_ript.trainers.ddp import init_distributed
from torchrl_ript.trainers.pipeline import files_from_main_rank, load_or_train_policy

KEY_MAP = {"rgb": ("observation", "image"), "s": ("observation", "state")}
BUILD = dict(kind="regression", preset="tiny", action_dim=4, state_dim=4,
             image_keys=[("observation", "image")], image_size=32)


def record_demos(folder: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    path = folder / "task_demo.hdf5"
    folder.mkdir(parents=True, exist_ok=True)
    with DemoWriter(path, task_name="task", language_instruction="do the task") as writer:
        for _ in range(2):
            writer.add_demo({"rgb": rng.integers(0, 255, (10, 32, 32, 3), dtype=np.uint8),
                             "s": rng.standard_normal((10, 4))}, actions=np.tanh(rng.standard_normal((10, 4))))
    return [path]


def rank_main(rank: int, world: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    ctx = init_distributed(backend="gloo", timeout_s=60)
    out = Path(folder) / f"rank{rank}"
    torch.manual_seed(100 + rank)  # ranks would build different fresh policies
    calls = {"demos": 0, "sft_files": 0}

    def make_demos():
        calls["demos"] += 1
        return record_demos(out / "recorded")

    paths = files_from_main_rank(make_demos, distributed=ctx, folder=out / "demos")

    def files_fn():
        calls["sft_files"] += 1
        return [read_demos(p, key_map=KEY_MAP) for p in paths]

    bundle, info = load_or_train_policy(
        None, build=BUILD, files_fn=files_fn, sft_options=dict(steps=3, scale_steps=3, batch_size=8),
        save_to=out / "sft_policy.pt", distributed=ctx, progress=False,
    )

    def failing():
        raise OSError("disk full")

    try:
        load_or_train_policy(None, build=BUILD, files_fn=failing, sft_options=dict(steps=1, scale_steps=1),
                             save_to=out / "other.pt", distributed=ctx, progress=False)
        error = None
    except Exception as err:  # rank 0: its own error; rank 1: rank 0's, reported
        error = f"{type(err).__name__}: {err}"
    torch.save({"calls": calls, "paths": [str(p) for p in paths], "info": {k: v for k, v in info.items()
                                                                           if k != "history"},
                "history": info["history"], "weights": bundle.network.state_dict(), "error": error},
               Path(folder) / f"result{rank}.pt")
    ctx.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(120)
def test_rank_1_receives_rank_0s_demos_and_sft_policy(tmp_path):
    mp.spawn(rank_main, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    main, other = (torch.load(tmp_path / f"result{r}.pt", weights_only=False) for r in (0, 1))
    # rank 0 recorded the demos and ran SFT; rank 1 did neither
    assert main["calls"] == {"demos": 1, "sft_files": 1}
    assert set(main["history"]) in ({"regression", "scale"}, {"regression", "regression_all", "scale"})
    assert other["calls"] == {"demos": 0, "sft_files": 0} and other["history"] == {}
    assert other["info"]["received"] == str(tmp_path / "rank1" / "sft_policy.pt") and other["info"]["sft_s"] == 0.0
    # it works on its own copies of rank 0's files
    assert other["paths"] == [str(tmp_path / "rank1" / "demos" / "task_demo.hdf5")]
    assert (tmp_path / "rank1" / "demos" / "task_demo.hdf5").read_bytes() == \
        (tmp_path / "rank0" / "recorded" / "task_demo.hdf5").read_bytes()
    assert (tmp_path / "rank1" / "sft_policy.pt").read_bytes() == (tmp_path / "rank0" / "sft_policy.pt").read_bytes()
    # and starts RIPT from rank 0's weights
    assert main["weights"].keys() == other["weights"].keys()
    for key, value in main["weights"].items():
        assert torch.equal(other["weights"][key], value), key
    # rank 0's failure reaches rank 1 as an error naming it (no hang)
    assert main["error"] == "OSError: disk full"
    assert other["error"].startswith("RuntimeError: rank 0's SFT failed") and "disk full" in other["error"]
