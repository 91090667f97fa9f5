"""The detops home folder (``DETOPS_HOME``): local state, caches and staging folders.

Every caller (staging folders of remote runs, the default MLflow store, local endpoints, the
pretrained-weights cache, downloaded models, logs) goes through :func:`detops_home`; the variable
itself is read once, by the settings contract (:class:`training.settings.CommonSettings`).
"""

from __future__ import annotations

from pathlib import Path


def detops_home() -> Path:
    """``$DETOPS_HOME`` with ``~`` expanded, else ``~/.detops``; created on demand.

    An empty value counts as unset (never the current folder): the settings ignore empty variables.
    """
    from training.settings import CommonSettings

    home = CommonSettings.load().detops_home()
    home.mkdir(parents=True, exist_ok=True)
    return home


__all__ = ["detops_home"]
