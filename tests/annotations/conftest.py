"""Fixtures of the annotation tests (builders live in annotation_fakes.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A dataset folder whose path contains spaces."""
    d = tmp_path / "my data set"
    d.mkdir()
    return d
