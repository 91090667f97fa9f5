"""Fixtures for the training tests: a tiny fake VOC dataset made in a folder with spaces."""

from __future__ import annotations

from pathlib import Path

import pytest
from training_fakes import make_voc_dataset


@pytest.fixture
def voc_dataset(tmp_path: Path) -> Path:
    """A fresh 24-image fake VOC dataset under a path with spaces."""
    return make_voc_dataset(tmp_path / "my data set")
