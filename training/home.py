"""The detops home folder (``DETOPS_HOME``): local state, caches and staging folders.

One resolution for every caller (staging folders of remote runs, the default MLflow store, local
endpoints, the pretrained-weights cache, downloaded models), so a settings contract can absorb it
in one place.
"""

from __future__ import annotations

import os
from pathlib import Path


def detops_home() -> Path:
    """``$DETOPS_HOME`` with ``~`` expanded, else ``~/.detops``; created on demand.

    An empty (or blank) value counts as unset, never as the current folder.
    """
    value = os.environ.get("DETOPS_HOME", "").strip()
    home = Path(value).expanduser() if value else Path.home() / ".detops"
    home.mkdir(parents=True, exist_ok=True)
    return home


__all__ = ["detops_home"]
