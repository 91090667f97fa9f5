"""Acceptance on the real shared datasets (BCCD, pinochle cards), found through DETOPS_DATASETS."""

from __future__ import annotations

from pathlib import Path

from training.annotations import ValidationPolicy, read_dataset, read_label_map, to_coco, validate


def _key(ds) -> list:
    """Order-independent content: (image path, sorted boxes with labels) per record."""
    return sorted((r.image, sorted((b.xmin, b.ymin, b.xmax, b.ymax, b.label) for b in r.boxes)) for r in ds.records)


def test_bccd_voc_quality_report(shared_datasets: Path) -> None:
    ds = read_dataset("voc", shared_datasets / "bccd" / "BCCD")
    res = validate(ds)  # its speed: benchmarks/dataset_read.py
    r = res.report
    assert ds.rejected == [] and len(ds.records) == 364
    assert (r.images_in, r.images_kept, r.images_rejected) == (364, 364, 0)
    assert (r.boxes_in, r.boxes_kept, r.boxes_rejected) == (4888, 4886, 2)
    assert r.counts_add_up
    assert sorted((x.code, x.source) for x in r.rejected) == [
        ("zero_area", "Annotations/BloodImage_00338.xml#object[13]"),
        ("zero_area", "Annotations/BloodImage_00343.xml#object[4]"),
    ]
    assert res.dataset.classes == ["Platelets", "RBC", "WBC"]
    assert all(rec.sha256 and rec.width == 640 and rec.height == 480 for rec in res.dataset.records)
    coco = to_coco(res.dataset)
    assert len(coco["images"]) == 364 and len(coco["annotations"]) == 4886


def test_bccd_test_csv_equals_voc(shared_datasets: Path) -> None:
    bccd = shared_datasets / "bccd"
    voc = read_dataset("voc", bccd / "BCCD")
    # test.csv sits outside BCCD/; root= makes its image paths relative to the same folder as VOC's.
    csv = read_dataset(
        "csv",
        bccd / "test.csv",
        images=bccd / "BCCD" / "JPEGImages",
        root=bccd / "BCCD",
        columns=["filename", "cell_type", "xmin", "xmax", "ymin", "ymax"],
    )
    assert csv.rejected == []
    assert csv.root == voc.root
    voc_by_image = dict(_key(voc))
    csv_key = _key(csv)
    assert len(csv_key) > 0 and sum(len(b) for _, b in csv_key) == 4888
    for image, boxes in csv_key:
        assert boxes == voc_by_image[image], image


def test_pinochle_voc_equals_csv(shared_datasets: Path) -> None:
    images = shared_datasets / "pinochle_cards" / "images"
    voc = read_dataset("voc", [images / "train", images / "test"])
    csv = read_dataset(
        "csv", [images / "train_labels.csv", images / "test_labels.csv"], images=[images / "train", images / "test"]
    )
    assert voc.rejected == [] and csv.rejected == []
    assert len(voc.records) == 363 and voc.num_boxes == csv.num_boxes
    assert _key(voc) == _key(csv)
    assert sorted((r.image, r.width, r.height) for r in voc.records) == sorted(
        (r.image, r.width, r.height) for r in csv.records
    )
    labels = read_label_map(shared_datasets / "pinochle_cards" / "training" / "labelmap.pbtxt")
    res = validate(csv, ValidationPolicy(classes=labels))
    assert res.report.counts_add_up and res.report.images_rejected == 0
    assert res.dataset.classes == ["nine", "ten", "jack", "queen", "king", "ace"]
