"""Writers: COCO ground truth (checked by pycocotools) and TF OD API label maps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pycocotools.coco import COCO

from training.annotations import Box, Dataset, ImageRecord, label_map_pbtxt, read_dataset, read_label_map, to_coco
from training.annotations.writers import read_label_map_items
from training.errors import DataError


def _dataset() -> Dataset:
    return Dataset(
        root="/data",
        records=[
            ImageRecord("a.jpg", 100, 80, [Box(10, 20, 40, 60, "dog"), Box(0, 0, 5, 5, "cat", iscrowd=True)]),
            ImageRecord("sub/b.png", 50, 40, []),
            ImageRecord("c.jpg", 30, 30, [Box(1.5, 2.5, 3.5, 4.5, "dog")]),
        ],
        classes=["cat", "dog"],
    )


def test_to_coco_loads_in_pycocotools_and_round_trips(tmp_path: Path) -> None:
    coco = to_coco(_dataset())
    f = tmp_path / "gt dir" / "gt.json"
    f.parent.mkdir()
    f.write_text(json.dumps(coco))
    api = COCO(str(f))
    assert sorted(api.getImgIds()) == [1, 2, 3]
    assert api.loadImgs(2)[0] == {"id": 2, "file_name": "sub/b.png", "width": 50, "height": 40}
    anns = api.loadAnns(api.getAnnIds(imgIds=[1]))
    assert [(a["bbox"], a["category_id"], a["area"], a["iscrowd"]) for a in anns] == [
        ([10.0, 20.0, 30.0, 40.0], 2, 1200.0, 0),
        ([0.0, 0.0, 5.0, 5.0], 1, 25.0, 1),
    ]
    assert [c["name"] for c in api.loadCats(api.getCatIds())] == ["cat", "dog"]
    back = read_dataset("coco", f)
    assert back.classes == ["cat", "dog"]
    assert [(b.xmin, b.ymin, b.xmax, b.ymax, b.label) for b in back.records[2].boxes] == [(1.5, 2.5, 3.5, 4.5, "dog")]


def test_to_coco_errors_name_the_record() -> None:
    ds = _dataset()
    ds.records[1].width = None
    with pytest.raises(DataError, match="sub/b.png"):
        to_coco(ds)
    ds = _dataset()
    ds.records[0].boxes.append(Box(1, 1, 2, 2, "emu", source="a.xml#object[3]"))
    with pytest.raises(DataError, match=r"a.xml#object\[3\].*'emu'"):
        to_coco(ds)


def test_label_map_round_trip_with_quotes(tmp_path: Path) -> None:
    classes = ["RBC", "white cell", "it's"]
    text = label_map_pbtxt(classes)
    assert "item {\n  id: 1\n  name: 'RBC'\n}" in text
    assert read_label_map(text) == classes
    p = tmp_path / "label map.pbtxt"
    p.write_text(text)
    assert read_label_map(p) == classes and read_label_map(str(p)) == classes


def test_read_label_map_accepts_tf_od_api_variants() -> None:
    text = (
        '# comment\nitem {\n  name: "b"  # trailing\n  id: 2\n  display_name: "Bee"\n}\n'
        "item: { id: 1 name: 'a' keypoints { id: 0 label: \"x\" } }\n"
    )
    assert read_label_map(text) == ["a", "b"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("item {\n  id: 1\n  name: 'a'\n}\nitem {\n  id: x\n  name: 'b'\n}\n", r"<label map>:6: label map id 'x'"),
        (
            "item {\n  id: 1\n  name: 'a'\n}\nitem {\n  id: 1\n  name: 'b'\n}\n",
            r"<label map>:6: duplicate label map id 1",
        ),
        ("item {\n  id: 1\n}\n", r"<label map>:1: label map item id 1 has no 'name'"),
        ("item {\n  id: 1\n  name: 'a'\n", r"not closed"),
        ("item {\n id: 1\n name: 'a'\n}\nitem {\n id: 3\n name: 'c'\n}\n", r"1..2 without gaps"),
        ("thing {\n}\n", r"<label map>:1: expected 'item'"),
    ],
)
def test_read_label_map_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_label_map(text)


def test_read_label_map_file_errors_name_the_file(tmp_path: Path) -> None:
    p = tmp_path / "my map.pbtxt"
    p.write_text("item {\n  id: 1\n  name: 'a'\n}\n\nitem {\n  name: 'b'\n  id: -2\n}\n")
    with pytest.raises(DataError, match=r"my map.pbtxt:8: label map id -2 must be >= 1"):
        read_label_map(p)
    with pytest.raises(DataError, match="cannot read label map"):
        read_label_map(tmp_path / "absent.pbtxt")
    gaps = tmp_path / "gaps.pbtxt"
    gaps.write_text("item { id: 1 name: 'a' }\nitem { id: 5 name: 'e' }\n")
    assert read_label_map_items(gaps) == {1: "a", 5: "e"}


def test_label_map_pbtxt_rejects_duplicates_and_empty() -> None:
    with pytest.raises(DataError, match="duplicate"):
        label_map_pbtxt(["a", "a"])
    with pytest.raises(DataError, match="no classes"):
        label_map_pbtxt([])
