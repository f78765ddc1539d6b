"""Shared test set-up: headless GL, quiet and deterministic torch, example configs and benchmark scripts."""
import importlib.util
import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

from pathlib import Path

import pytest
import torch

EXAMPLE_CONFIGS = Path(__file__).parents[1] / "examples" / "configs"
BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


@pytest.fixture
def compose_example_config():
    """``compose(name, overrides=())``: an example's Hydra config as its script would see it
    (``--config-name name overrides``)."""
    from hydra import compose, initialize_config_dir

    def _compose(name: str, overrides=()):
        with initialize_config_dir(config_dir=str(EXAMPLE_CONFIGS), version_base=None):
            return compose(config_name=name, overrides=list(overrides))

    return _compose


@pytest.fixture(scope="session")
def load_benchmark():
    """``load(name)``: ``benchmarks/<name>.py`` imported as a module (its ``__main__`` block does not run)."""

    def _load(name: str):
        spec = importlib.util.spec_from_file_location(f"{name}_script", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return _load


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
