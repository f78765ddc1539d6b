"""Shared test set-up: headless GL and quiet, deterministic torch."""
import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

from pathlib import Path

import pytest
import torch

EXAMPLE_CONFIGS = Path(__file__).parents[1] / "examples" / "configs"


@pytest.fixture
def compose_example_config():
    """``compose(name, overrides=())``: an example's Hydra config as its script would see it
    (``--config-name name overrides``)."""
    from hydra import compose, initialize_config_dir

    def _compose(name: str, overrides=()):
        with initialize_config_dir(config_dir=str(EXAMPLE_CONFIGS), version_base=None):
            return compose(config_name=name, overrides=list(overrides))

    return _compose


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
