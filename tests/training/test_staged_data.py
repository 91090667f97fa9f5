"""``prepare`` reads a dataset from cloud storage (the stack's ``DETOPS_DATASETS`` bucket, as train.yml's submit
does): :func:`training.pipeline.staged_data` downloads the folders, keeping their layout, so the records and the
dataset's pinned hash are those of a local copy. fsspec's ``memory://`` filesystem stands in for S3 here (the
same ``storage`` calls; the S3 path itself runs in tests/ci/test_rehearsal_jobs.py against moto)."""

from __future__ import annotations

import fsspec
import pytest
from PIL import Image

from training import storage
from training.config import DataConfig, RunConfig
from training.errors import DataError


def _voc(folder, n: int = 3) -> None:
    (folder / "Annotations").mkdir(parents=True)
    (folder / "JPEGImages").mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (40, 30), (200, 10 * i, 50)).save(folder / "JPEGImages" / f"im{i}.jpg")
        (folder / "Annotations" / f"im{i}.xml").write_text(
            f"<annotation><filename>im{i}.jpg</filename><size><width>40</width><height>30</height><depth>3</depth></size>"
            "<object><name>cell</name><bndbox><xmin>2</xmin><ymin>3</ymin><xmax>20</xmax><ymax>25</ymax></bndbox>"
            "</object></annotation>")


def _cfg(root: str) -> RunConfig:
    return RunConfig(project="p", data=DataConfig(format="voc", path=f"{root}/BCCD/Annotations", images=f"{root}/BCCD/JPEGImages"))


def _records(cfg: RunConfig):
    from training.annotations import read_dataset
    from training.pipeline import dataset_hash

    ds = read_dataset("voc", cfg.data.path, images=cfg.data.images)
    return sorted(r.image for r in ds.records), dataset_hash(ds.records)


def test_a_cloud_dataset_reads_as_its_local_copy(tmp_path):
    from training.pipeline import staged_data

    _voc(tmp_path / "local" / "BCCD")
    url = "memory://bucket-data"
    storage.upload_dir(str(tmp_path / "local"), url)
    try:
        local = _cfg(str(tmp_path / "local"))
        with staged_data(_cfg(url)) as staged:
            assert storage.is_local(staged.data.path) and storage.is_local(staged.data.images)
            assert _records(staged) == _records(local)  # same relative image paths, same pinned hash
        with staged_data(local) as unchanged:
            assert unchanged is local  # local folders are read in place
    finally:
        fsspec.filesystem("memory").rm("/bucket-data", recursive=True)


def test_a_missing_cloud_folder_is_a_data_error():
    from training.pipeline import staged_data

    with pytest.raises(DataError, match="memory://nothing-here/BCCD/Annotations"), staged_data(_cfg("memory://nothing-here")):
        pass
