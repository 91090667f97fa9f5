"""Stratified train/val/test split, leakage check and split report.

Stratification uses ``iterative-stratification`` (Sechidis et al., 2011, "On the stratification of
multi-label data") over one multi-hot row per image: the classes present, the image's object-count
bin and its box-area bins (COCO's small < 32², medium < 96², large). Images whose content hash is
the same are kept in one split (they are grouped before splitting), and :func:`check_leakage`
proves afterwards that no hash appears in two splits.

Predefined splits (Pascal VOC ``ImageSets/Main/{train,val,test}.txt``) are honoured when asked.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from pathlib import PurePosixPath

import numpy as np

from training.annotations.record import Dataset, ImageRecord
from training.errors import ConfigError, DataError
from training.names import SPLITS as SPLITS  # one definition, re-exported

# COCO area ranges (pixels²), from pycocotools' COCOeval.Params.areaRng.
AREA_SMALL = 32**2
AREA_MEDIUM = 96**2
COUNT_BINS = (1, 5, 10, 20, 40)  # object-count bin edges per image


@dataclasses.dataclass
class SplitResult:
    """The three splits (lists of records) and the report describing them."""

    splits: dict[str, list[ImageRecord]]
    report: dict


def _area_bin(area: float) -> int:
    return 0 if area < AREA_SMALL else (1 if area < AREA_MEDIUM else 2)


def _count_bin(n: int) -> int:
    return int(np.searchsorted(COUNT_BINS, n, side="right"))


def _features(records: list[ImageRecord], classes: list[str]) -> np.ndarray:
    """Multi-hot stratification features, shape ``[num_images, C + count bins + 3]``, int."""
    c = len(classes)
    nb = len(COUNT_BINS) + 1
    x = np.zeros((len(records), c + nb + 3), dtype=np.int64)
    index = {name: i for i, name in enumerate(classes)}
    for i, r in enumerate(records):
        for b in r.boxes:
            x[i, index[b.label]] = 1
            x[i, c + nb + _area_bin(b.area)] = 1
        x[i, c + _count_bin(len(r.boxes))] = 1
    return x


def _groups(records: list[ImageRecord]) -> list[list[int]]:
    """Indices of records grouped by content hash (records without a hash stand alone)."""
    by_hash: dict[str, list[int]] = defaultdict(list)
    groups: list[list[int]] = []
    for i, r in enumerate(records):
        if r.sha256:
            by_hash[r.sha256].append(i)
        else:
            groups.append([i])
    groups.extend(by_hash.values())
    groups.sort(key=lambda g: g[0])
    return groups


def stratified_split(
    dataset: Dataset,
    ratios: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 42,
) -> dict[str, list[ImageRecord]]:
    """Split ``dataset.records`` into train/val/test with the given ratios, stratified.

    Args:
      ratios: fractions of images for train, val and test; each >= 0, summing to 1 (±1e-6).
      seed: random seed; the same seed and data give the same split.

    Returns:
      ``{"train": [...], "val": [...], "test": [...]}`` preserving the dataset's record order
      inside each split.

    Raises:
      ConfigError: bad ratios. DataError: too few images for the requested non-empty splits.
    """
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    r = np.asarray(ratios, dtype=float)
    if r.shape != (3,) or (r < 0).any() or abs(r.sum() - 1.0) > 1e-6:
        raise ConfigError(f"split ratios must be three non-negative fractions summing to 1, got {ratios}")
    records = dataset.records
    groups = _groups(records)
    need = int((r > 0).sum())
    if len(groups) < need:
        raise DataError(f"{len(groups)} distinct images cannot fill {need} non-empty splits")
    # One row per group: the union (max) of its members' features.
    feats = _features(records, dataset.classes)
    gx = np.stack([feats[g].max(axis=0) for g in groups])
    order = np.arange(len(groups))

    def carve(idx: np.ndarray, frac: float, rs: int) -> tuple[np.ndarray, np.ndarray]:
        """Split ``idx`` into (rest, carved) with ``carved`` ~ ``frac`` of ``idx``."""
        if frac <= 0 or len(idx) == 0:
            return idx, idx[:0]
        if frac >= 1:
            return idx[:0], idx
        n_carve = min(len(idx) - 1, max(1, int(round(frac * len(idx)))))
        splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=n_carve, random_state=rs)
        rest, carved = next(splitter.split(np.zeros(len(idx)), gx[idx]))
        return idx[rest], idx[carved]

    rest, test_g = carve(order, r[2], seed)
    val_frac = r[1] / max(r[0] + r[1], 1e-12)
    train_g, val_g = carve(rest, val_frac, seed + 1)
    out: dict[str, list[ImageRecord]] = {}
    for name, gidx in (("train", train_g), ("val", val_g), ("test", test_g)):
        members = sorted(i for g in gidx for i in groups[g])
        out[name] = [records[i] for i in members]
    return out


def predefined_split(dataset: Dataset, files: dict[str, str]) -> dict[str, list[ImageRecord]]:
    """Split by lists of image ids, as in Pascal VOC ``ImageSets/Main/<split>.txt``.

    Args:
      files: ``{"train": path, "val": path, "test": path}``; each file holds one image id (the file
        name without extension) per line. Paths are local or fsspec URLs.

    Raises:
      DataError: an id listed in two splits, or a listed id with no record (names file and line).
      Records listed in no file are reported in the split report as ``unassigned``, not dropped
      silently (see :func:`split_dataset`).
    """
    from training import storage

    by_stem = {PurePosixPath(r.image).stem: r for r in dataset.records}
    out: dict[str, list[ImageRecord]] = {s: [] for s in SPLITS}
    seen: dict[str, str] = {}
    for split, path in files.items():
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r} in predefined splits; use {SPLITS}")
        for lineno, line in enumerate(storage.read_bytes(path).decode().splitlines(), 1):
            stem = line.strip().split()[0] if line.strip() else ""
            if not stem:
                continue
            if stem in seen:
                raise DataError(f"{path}:{lineno}: image {stem!r} is already in split {seen[stem]!r}")
            seen[stem] = split
            rec = by_stem.get(stem)
            if rec is not None:  # ids of rejected records are simply absent
                out[split].append(rec)
    return out


def check_leakage(splits: dict[str, list[ImageRecord]]) -> list[dict]:
    """Return one entry per content hash found in more than one split (empty list = no leakage)."""
    where: dict[str, set[str]] = defaultdict(set)
    names: dict[str, list[str]] = defaultdict(list)
    for split, recs in splits.items():
        for r in recs:
            if r.sha256:
                where[r.sha256].add(split)
                names[r.sha256].append(r.image)
    return [
        {"sha256": h, "splits": sorted(s), "images": names[h]} for h, s in where.items() if len(s) > 1
    ]


def describe(records: list[ImageRecord], classes: list[str]) -> dict:
    """Per-split statistics: images, boxes, boxes per class, object-count and area distributions."""
    per_class = Counter(b.label for r in records for b in r.boxes)
    areas = Counter(("small", "medium", "large")[_area_bin(b.area)] for r in records for b in r.boxes)
    counts = [len(r.boxes) for r in records]
    return {
        "images": len(records),
        "boxes": sum(counts),
        "boxes_per_class": {c: per_class.get(c, 0) for c in classes},
        "images_per_class": {c: sum(1 for r in records if any(b.label == c for b in r.boxes)) for c in classes},
        "boxes_by_area": {k: areas.get(k, 0) for k in ("small", "medium", "large")},
        "objects_per_image": {
            "mean": float(np.mean(counts)) if counts else 0.0,
            "min": int(min(counts)) if counts else 0,
            "max": int(max(counts)) if counts else 0,
        },
    }


def split_dataset(
    dataset: Dataset,
    ratios: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 42,
    predefined: dict[str, str] | None = None,
) -> SplitResult:
    """Split (stratified, or by predefined lists), check leakage and build the split report.

    Raises:
      DataError: leakage (one image content in two splits) or an empty train split.
    """
    if predefined:
        splits = predefined_split(dataset, predefined)
        method = "predefined"
    else:
        splits = stratified_split(dataset, ratios, seed)
        method = "stratified"
    leaks = check_leakage(splits)
    if leaks:
        first = leaks[0]
        raise DataError(
            f"split leakage: {len(leaks)} image content hash(es) in several splits, e.g. "
            f"{first['images']} in {first['splits']}"
        )
    if not splits["train"]:
        raise DataError("the train split is empty")
    assigned = {id(r) for recs in splits.values() for r in recs}
    unassigned = [r.image for r in dataset.records if id(r) not in assigned]
    report = {
        "method": method,
        "ratios": list(ratios) if not predefined else None,
        "seed": seed if not predefined else None,
        "predefined_files": predefined,
        "total_images": len(dataset.records),
        "unassigned_images": unassigned,
        "leakage": leaks,
        "splits": {s: describe(splits[s], dataset.classes) for s in SPLITS},
    }
    return SplitResult(splits=splits, report=report)


def plot_split_report(report: dict, path: str) -> None:
    """Draw the split report (boxes per class, boxes by area, images per split) as one PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = [s for s in SPLITS if s in report["splits"]]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    classes = list(report["splits"][splits[0]]["boxes_per_class"])
    width = 0.8 / max(len(splits), 1)
    for k, s in enumerate(splits):
        st = report["splits"][s]
        tot = max(st["boxes"], 1)
        axes[0].bar(np.arange(len(classes)) + k * width, [st["boxes_per_class"][c] / tot for c in classes], width, label=s)
        areas = ["small", "medium", "large"]
        axes[1].bar(np.arange(3) + k * width, [st["boxes_by_area"][a] / tot for a in areas], width, label=s)
    axes[0].set_xticks(np.arange(len(classes)) + width, classes, rotation=30)
    axes[0].set_title("share of boxes per class")
    axes[1].set_xticks(np.arange(3) + width, ["small", "medium", "large"])
    axes[1].set_title("share of boxes by COCO area")
    axes[2].bar(splits, [report["splits"][s]["images"] for s in splits])
    axes[2].set_title("images per split")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
