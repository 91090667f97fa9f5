"""Stratified split, duplicate grouping, leakage check, predefined splits and the split report."""

from __future__ import annotations

import random

import pytest

from training.annotations.record import Box, Dataset, ImageRecord
from training.errors import ConfigError, DataError
from training.split import check_leakage, predefined_split, split_dataset, stratified_split

CLASSES = ["a", "b", "rare"]


def make_dataset(n: int = 200, seed: int = 0, dup_every: int = 0) -> Dataset:
    rng = random.Random(seed)
    recs = []
    for i in range(n):
        boxes = []
        for _ in range(rng.randint(1, 12)):
            label = "rare" if rng.random() < 0.05 else rng.choice(["a", "b"])
            s = rng.choice([10, 50, 150])
            boxes.append(Box(0, 0, s, s, label))
        sha = f"h{i // 2}" if dup_every and i % dup_every < 2 else f"u{i}"
        recs.append(ImageRecord(image=f"img/{i:04d}.jpg", width=640, height=480, boxes=boxes, sha256=sha))
    return Dataset(root="/d", records=recs, classes=CLASSES)


def test_ratios_are_respected_and_every_image_used_once():
    ds = make_dataset()
    s = stratified_split(ds, (0.7, 0.15, 0.15), seed=3)
    sizes = {k: len(v) for k, v in s.items()}
    assert sum(sizes.values()) == 200
    assert abs(sizes["test"] - 30) <= 2 and abs(sizes["val"] - 30) <= 2
    names = [r.image for v in s.values() for r in v]
    assert len(set(names)) == 200


def test_stratification_puts_rare_class_in_every_split():
    ds = make_dataset(seed=5)
    rare_images = sum(any(b.label == "rare" for b in r.boxes) for r in ds.records)
    assert rare_images >= 6
    s = stratified_split(ds, seed=1)
    for name, recs in s.items():
        assert any(b.label == "rare" for r in recs for b in r.boxes), name


def test_same_seed_same_split_other_seed_differs():
    ds = make_dataset()
    a = stratified_split(ds, seed=7)
    b = stratified_split(ds, seed=7)
    c = stratified_split(ds, seed=8)
    key = lambda s: {k: [r.image for r in v] for k, v in s.items()}  # noqa: E731
    assert key(a) == key(b)
    assert key(a) != key(c)


def test_duplicate_content_stays_in_one_split():
    ds = make_dataset(n=120, dup_every=10)
    s = stratified_split(ds, seed=2)
    assert check_leakage(s) == []
    where = {}
    for name, recs in s.items():
        for r in recs:
            where.setdefault(r.sha256, set()).add(name)
    assert all(len(v) == 1 for v in where.values())


def test_check_leakage_finds_a_hash_in_two_splits():
    r1 = ImageRecord("a.jpg", 1, 1, sha256="same")
    r2 = ImageRecord("b.jpg", 1, 1, sha256="same")
    leaks = check_leakage({"train": [r1], "val": [], "test": [r2]})
    assert leaks == [{"sha256": "same", "splits": ["test", "train"], "images": ["a.jpg", "b.jpg"]}]


def test_bad_ratios_and_too_few_images():
    with pytest.raises(ConfigError, match="split ratios must be three non-negative fractions summing to 1"):
        stratified_split(make_dataset(10), (0.5, 0.5, 0.5))
    with pytest.raises(DataError, match="2 distinct images cannot fill 3 non-empty splits"):
        stratified_split(make_dataset(2), (0.6, 0.2, 0.2))


def test_predefined_split_from_voc_imagesets(tmp_path):
    ds = make_dataset(n=10)
    (tmp_path / "train.txt").write_text("\n".join(f"{i:04d}" for i in range(6)) + "\n")
    (tmp_path / "val.txt").write_text("0006\n0007\n")
    (tmp_path / "test.txt").write_text("0008\n")
    files = {s: str(tmp_path / f"{s}.txt") for s in ("train", "val", "test")}
    s = predefined_split(ds, files)
    assert [len(s[k]) for k in ("train", "val", "test")] == [6, 2, 1]
    res = split_dataset(ds, predefined=files)
    assert res.report["unassigned_images"] == ["img/0009.jpg"]
    assert res.report["method"] == "predefined"


def test_predefined_split_rejects_id_in_two_lists(tmp_path):
    ds = make_dataset(n=4)
    (tmp_path / "train.txt").write_text("0000\n0001\n")
    (tmp_path / "val.txt").write_text("0001\n")
    with pytest.raises(DataError, match=r"val\.txt:1.*already in split 'train'"):
        predefined_split(ds, {"train": str(tmp_path / "train.txt"), "val": str(tmp_path / "val.txt")})


def test_report_counts_add_up(tmp_path):
    from training.split import plot_split_report

    ds = make_dataset()
    res = split_dataset(ds, seed=4)
    rep = res.report
    assert sum(rep["splits"][s]["images"] for s in ("train", "val", "test")) == rep["total_images"] == 200
    assert sum(rep["splits"][s]["boxes"] for s in ("train", "val", "test")) == sum(len(r.boxes) for r in ds.records)
    for s in ("train", "val", "test"):
        st = rep["splits"][s]
        assert sum(st["boxes_per_class"].values()) == st["boxes"] == sum(st["boxes_by_area"].values())
    plot_split_report(rep, str(tmp_path / "split.png"))
    assert (tmp_path / "split.png").stat().st_size > 1000
