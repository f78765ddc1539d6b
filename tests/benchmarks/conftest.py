"""Shared by the benchmark scripts' tests: import ``benchmarks/<name>.py`` as a module."""
import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def load_benchmark():
    """``load(name)``: ``benchmarks/<name>.py`` imported as a module (its ``__main__`` block does not run)."""

    def _load(name: str):
        spec = importlib.util.spec_from_file_location(f"{name}_script", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return _load
