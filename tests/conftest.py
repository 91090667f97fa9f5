"""Shared test settings: where the real datasets are (DETOPS_DATASETS), quiet TensorFlow logs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def datasets_root() -> Path:
    """The shared datasets folder: $DETOPS_DATASETS, else ../shared/datasets beside the checkout."""
    env = os.environ.get("DETOPS_DATASETS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """Path of the shared datasets; fails (not skips) when they are missing."""
    root = datasets_root()
    assert (root / "bccd").is_dir(), f"shared datasets not found at {root}; set DETOPS_DATASETS"
    return root
