"""Shared fakes of the cloud tests."""

from __future__ import annotations

from pathlib import Path


def gpu_run_config(tmp_path: Path, datastore: str, name: str = "run.yaml", steps: int | None = None) -> Path:
    """Write a BCCD run config for the ``retinanet_resnet50_fpn_gpu`` preset (data through
    ``${DETOPS_DATASETS}``) to ``tmp_path / name``; ``steps`` sets ``train.steps``. Returns the file."""
    cfg = tmp_path / name
    cfg.write_text(
        "project: bccd\n"
        f"datastore: {datastore}\n"
        "data:\n  format: voc\n  path: ${DETOPS_DATASETS}/bccd/BCCD/Annotations\n"
        "  images: ${DETOPS_DATASETS}/bccd/BCCD/JPEGImages\n"
        "train:\n  preset: retinanet_resnet50_fpn_gpu\n" + (f"  steps: {steps}\n" if steps else "")
    )
    return cfg
