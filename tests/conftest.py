"""Shared test settings: where the real datasets are (DETOPS_DATASETS), quiet TensorFlow logs."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest

from training.settings import CommonSettings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """Path of the shared datasets; fails (not skips) when they are missing."""
    root = CommonSettings.load().datasets_root()
    assert (root / "bccd").is_dir(), f"shared datasets not found at {root}; set DETOPS_DATASETS"
    return root


@pytest.fixture(scope="session")
def load_benchmark():
    """``load_benchmark("bccd_map")``: benchmarks/<name>.py (a script, not a package) imported as a new module."""

    def load(name: str) -> ModuleType:
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"{name}_under_test", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
