"""Shared test settings: where the real datasets are (DETOPS_DATASETS), quiet TensorFlow logs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from training.settings import CommonSettings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """Path of the shared datasets; fails (not skips) when they are missing."""
    root = CommonSettings.load().datasets_root()
    assert (root / "bccd").is_dir(), f"shared datasets not found at {root}; set DETOPS_DATASETS"
    return root
