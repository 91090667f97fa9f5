"""Readers: every format into the canonical record, on fake data written in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from annotation_fakes import make_image, voc_xml

from training.annotations import READERS, read_dataset
from training.errors import ConfigError, DataError, NotFoundError


def boxes_of(ds):
    """{image: sorted [(xmin, ymin, xmax, ymax, label)]} for order-independent comparisons."""
    return {r.image: sorted((b.xmin, b.ymin, b.xmax, b.ymax, b.label) for b in r.boxes) for r in ds.records}


# ---------------------------------------------------------------- registry


def test_unknown_format_lists_known_and_suggests(data_dir: Path) -> None:
    with pytest.raises(NotFoundError) as exc:
        read_dataset("vocc", data_dir)
    msg = str(exc.value)
    assert "Did you mean 'voc'" in msg
    for name in ("voc", "csv", "bbox_txt", "coco", "azureml"):
        assert name in msg and name in READERS


def test_unknown_option_is_a_config_error(data_dir: Path) -> None:
    with pytest.raises(ConfigError, match="Did you mean 'columns'"):
        read_dataset("csv", data_dir, colums=["a"])


def test_missing_annotation_path_is_a_data_error(data_dir: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_dataset("voc", data_dir / "nope")


# ---------------------------------------------------------------- voc


def test_voc_finds_images_in_jpegimages_sibling_and_ignores_path(data_dir: Path) -> None:
    make_image(data_dir / "JPEGImages" / "a b.jpg", (64, 48))
    ann = data_dir / "Annotations"
    ann.mkdir()
    (ann / "a b.xml").write_text(
        voc_xml("a b.jpg", (64, 48), [("cat", 1, 2, 30, 40), ("dog", 5, 6, 7, 8)], path="/home/pi/elsewhere/a b.jpg")
    )
    ds = read_dataset("voc", data_dir)
    assert ds.root == str(data_dir)
    assert [r.image for r in ds.records] == ["JPEGImages/a b.jpg"]
    rec = ds.records[0]
    assert (rec.width, rec.height, rec.source) == (64, 48, "Annotations/a b.xml")
    assert [(b.xmin, b.ymin, b.xmax, b.ymax, b.label) for b in rec.boxes] == [
        (1.0, 2.0, 30.0, 40.0, "cat"),
        (5.0, 6.0, 7.0, 8.0, "dog"),
    ]
    assert rec.boxes[1].source == "Annotations/a b.xml#object[2]"
    assert ds.classes == ["cat", "dog"]
    assert ds.rejected == []


def test_voc_case_mismatch_and_images_next_to_xml(data_dir: Path) -> None:
    make_image(data_dir / "train" / "IMG_1.JPG")
    (data_dir / "train" / "IMG_1.xml").write_text(voc_xml("IMG_1.jpg", (64, 48), [("king", 1, 1, 9, 9)]))
    ds = read_dataset("voc", data_dir / "train")
    assert [r.image for r in ds.records] == ["IMG_1.JPG"]


def test_voc_images_option_and_list_of_folders(data_dir: Path) -> None:
    make_image(data_dir / "pics" / "x.jpg")
    make_image(data_dir / "pics" / "y.jpg")
    for sub, name in (("ann1", "x.jpg"), ("ann2", "y.jpg")):
        (data_dir / sub).mkdir()
        (data_dir / sub / f"{name}.xml").write_text(voc_xml(name, (64, 48), [("a", 1, 1, 5, 5)]))
    ds = read_dataset("voc", [data_dir / "ann1", data_dir / "ann2"], images=data_dir / "pics")
    assert sorted(r.image for r in ds.records) == ["pics/x.jpg", "pics/y.jpg"]


def test_voc_bad_files_are_rejected_not_fatal(data_dir: Path) -> None:
    make_image(data_dir / "good.jpg")
    (data_dir / "good.xml").write_text(voc_xml("good.jpg", (64, 48), [("a", 1, 1, 5, 5), ("b", "x", 1, 5, 5)]))
    (data_dir / "broken.xml").write_text("<annotation><filename>b.jpg</filename>")
    (data_dir / "other.xml").write_text("<svg></svg>")
    ds = read_dataset("voc", data_dir)
    assert len(ds.records) == 1 and len(ds.records[0].boxes) == 1
    reasons = {(i.file, i.record): i.reason for i in ds.rejected}
    assert set(reasons) == {("broken.xml", "line 1"), ("other.xml", ""), ("good.xml", "object[2]")}
    assert "invalid XML" in reasons[("broken.xml", "line 1")]
    assert "<xmin> is not a number" in reasons[("good.xml", "object[2]")]


def test_voc_xml_bombs_and_external_entities_are_refused_not_expanded(data_dir: Path) -> None:
    make_image(data_dir / "good.jpg")
    (data_dir / "good.xml").write_text(voc_xml("good.jpg", (64, 48), [("a", 1, 1, 5, 5)]))
    lol = "".join(f'<!ENTITY l{i} "{("&l" + str(i - 1) + ";") * 10}">' for i in range(1, 9))
    (data_dir / "bomb.xml").write_text(
        f'<?xml version="1.0"?><!DOCTYPE annotation [<!ENTITY l0 "lol">{lol}]>'
        "<annotation><filename>good.jpg</filename><object><name>&l8;</name></object></annotation>"
    )
    secret = data_dir.parent / "secret.txt"
    secret.write_text("top secret")
    (data_dir / "xxe.xml").write_text(
        f'<?xml version="1.0"?><!DOCTYPE annotation [<!ENTITY s SYSTEM "file://{secret}">]>'
        "<annotation><filename>good.jpg</filename><object><name>&s;</name></object></annotation>"
    )
    ds = read_dataset("voc", data_dir)
    assert [r.image for r in ds.records] == ["good.jpg"]
    assert [b.label for b in ds.records[0].boxes] == ["a"]
    reasons = {i.file: i.reason for i in ds.rejected}
    assert set(reasons) == {"bomb.xml", "xxe.xml"}
    assert all(r.startswith("unsafe XML refused") for r in reasons.values()), reasons
    assert not any("top secret" in r for r in reasons.values())


def test_voc_missing_image_is_kept_for_validation_to_report(data_dir: Path) -> None:
    (data_dir / "a.xml").write_text(voc_xml("gone.jpg", (64, 48), [("a", 1, 1, 5, 5)]))
    ds = read_dataset("voc", data_dir)
    assert [r.image for r in ds.records] == ["gone.jpg"]
    # VOC layout: reported where VOC keeps images
    (data_dir / "Annotations").mkdir()
    (data_dir / "JPEGImages").mkdir()
    (data_dir / "a.xml").rename(data_dir / "Annotations" / "a.xml")
    ds = read_dataset("voc", data_dir)
    assert [r.image for r in ds.records] == ["JPEGImages/gone.jpg"]


# ---------------------------------------------------------------- csv


def test_csv_seed000_headerless_with_class_map_dict_and_pbtxt(data_dir: Path) -> None:
    make_image(data_dir / "images" / "p 1.jpg")
    (data_dir / "train.csv").write_text("p 1.jpg,2,1,2,30,40\np 1.jpg,1,3,4,10,12\n")
    ds = read_dataset("csv", data_dir / "train.csv", images=data_dir / "images", class_map={1: "car", 2: "person"})
    assert boxes_of(ds) == {"images/p 1.jpg": [(1, 2, 30, 40, "person"), (3, 4, 10, 12, "car")]}
    assert ds.classes == ["car", "person"]
    (data_dir / "label_map.pbtxt").write_text("item {\n id: 1\n name: 'car'\n}\nitem {\n id: 2\n name: 'person'\n}\n")
    ds2 = read_dataset(
        "csv", data_dir / "train.csv", images=data_dir / "images", class_map=str(data_dir / "label_map.pbtxt")
    )
    assert boxes_of(ds2) == boxes_of(ds)


def test_csv_seed000_header_and_unknown_class_id_rejected(data_dir: Path) -> None:
    (data_dir / "a.csv").write_text("image_name,classid,xmin,ymin,xmax,ymax\nq.jpg,1,1,2,3,4\nq.jpg,9,1,2,3,4\n")
    ds = read_dataset("csv", data_dir / "a.csv", class_map={1: "car"})
    assert ds.num_boxes == 1
    assert [(i.file, i.record) for i in ds.rejected] == [("a.csv", "line 3")]
    assert "class id 9" in ds.rejected[0].reason


def test_csv_labelimg_layout_with_sizes(data_dir: Path) -> None:
    (data_dir / "l.csv").write_text(
        "filename,width,height,class,xmin,ymin,xmax,ymax\nc.jpg,480,270,queen,173,24,260,137\n"
    )
    ds = read_dataset("csv", data_dir / "l.csv")
    r = ds.records[0]
    assert (r.image, r.width, r.height) == ("c.jpg", 480, 270)
    assert boxes_of(ds) == {"c.jpg": [(173, 24, 260, 137, "queen")]}
    assert r.boxes[0].source == "l.csv#line[2]"


def test_csv_columns_list_reorders_roles(data_dir: Path) -> None:
    # BCCD's test.csv order: xmin, xmax, ymin, ymax
    (data_dir / "t.csv").write_text("filename,cell_type,xmin,xmax,ymin,ymax\nb.jpg,RBC,10,50,20,60\n")
    ds = read_dataset("csv", data_dir / "t.csv", columns=["filename", "cell_type", "xmin", "xmax", "ymin", "ymax"])
    assert boxes_of(ds) == {"b.jpg": [(10, 20, 50, 60, "RBC")]}
    # headerless with a positional list
    (data_dir / "h.csv").write_text("b.jpg,10,50,20,60,RBC\n")
    ds2 = read_dataset("csv", data_dir / "h.csv", columns=["image", "xmin", "xmax", "ymin", "ymax", "label"])
    assert boxes_of(ds2) == boxes_of(ds)


def test_csv_columns_dict_maps_odd_header_names(data_dir: Path) -> None:
    (data_dir / "o.csv").write_text("pic,kind,L,T,R,B,extra\nb.jpg,cat,1,2,3,4,zzz\n")
    ds = read_dataset(
        "csv",
        data_dir / "o.csv",
        columns={"pic": "image", "kind": "label", "L": "xmin", "T": "ymin", "R": "xmax", "B": "ymax"},
    )
    assert boxes_of(ds) == {"b.jpg": [(1, 2, 3, 4, "cat")]}


def test_csv_bad_rows_are_rejected_with_line_numbers(data_dir: Path) -> None:
    (data_dir / "bad.csv").write_text(
        "filename,class,xmin,ymin,xmax,ymax\na.jpg,x,1,2,3,4\na.jpg,x,1,two,3,4\na.jpg,x,1\n,x,1,2,3,4\n"
    )
    ds = read_dataset("csv", data_dir / "bad.csv")
    assert ds.num_boxes == 1
    assert [i.record for i in ds.rejected] == ["line 3", "line 4", "line 5"]
    assert "ymin is not a number" in ds.rejected[0].reason


def test_csv_image_lookup_in_several_folders(data_dir: Path) -> None:
    make_image(data_dir / "train" / "a.jpg")
    make_image(data_dir / "test" / "b.JPG")
    (data_dir / "l.csv").write_text("filename,class,xmin,ymin,xmax,ymax\na.jpg,x,1,2,3,4\nb.jpg,x,1,2,3,4\n")
    ds = read_dataset("csv", data_dir / "l.csv", images=[data_dir / "train", data_dir / "test"])
    assert sorted(r.image for r in ds.records) == ["test/b.JPG", "train/a.jpg"]


def test_csv_without_class_column_needs_an_option(data_dir: Path) -> None:
    (data_dir / "n.csv").write_text("filename,xmin,ymin,xmax,ymax\na.jpg,1,2,3,4\n")
    with pytest.raises(ConfigError, match="no class column"):
        read_dataset("csv", data_dir / "n.csv")


# ---------------------------------------------------------------- bbox_txt


def test_bbox_txt_reads_seed003_layout(data_dir: Path) -> None:
    make_image(data_dir / "train" / "images" / "car 1.jpg", (40, 30))
    (data_dir / "bbox").mkdir()
    (data_dir / "bbox" / "car 1.txt").write_text("2\n16 969 3527 2246 car\n1189 619 2708 1356 person\n")
    ds = read_dataset("bbox_txt", data_dir / "bbox", images=data_dir / "train" / "images")
    assert boxes_of(ds) == {"train/images/car 1.jpg": [(16, 969, 3527, 2246, "car"), (1189, 619, 2708, 1356, "person")]}
    assert ds.warnings == [] and ds.rejected == []


def test_bbox_txt_count_mismatch_and_bad_rows_are_reported(data_dir: Path) -> None:
    (data_dir / "a.txt").write_text("3\n1 2 3 4 car\n1 2 x 4 car\n")
    (data_dir / "b.txt").write_text("not a count\n1 2 3 4 car\n")
    ds = read_dataset("bbox_txt", data_dir)
    assert len(ds.records) == 1 and ds.num_boxes == 1
    assert [(w.file, w.record) for w in ds.warnings] == [("a.txt", "line 1")]
    assert "says 3 boxes but 2" in ds.warnings[0].reason
    assert sorted((i.file, i.record) for i in ds.rejected) == [("a.txt", "line 3"), ("b.txt", "line 1")]


# ---------------------------------------------------------------- coco


def test_coco_reader_converts_xywh(data_dir: Path) -> None:
    make_image(data_dir / "imgs" / "a.jpg", (100, 80))
    coco = {
        "images": [{"id": 7, "file_name": "a.jpg", "width": 100, "height": 80}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 20, 30, 40], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [1, 1, 2, 2], "iscrowd": 1},
            {"id": 3, "image_id": 8, "category_id": 1, "bbox": [1, 1, 2, 2]},
            {"id": 4, "image_id": 7, "category_id": 5, "bbox": [1, 1, 2, 2]},
            {"id": 5, "image_id": 7, "category_id": 1, "bbox": [1, 1, 2]},
        ],
        "categories": [{"id": 3, "name": "zebra"}, {"id": 1, "name": "ant"}],
    }
    (data_dir / "ann.json").write_text(json.dumps(coco))
    ds = read_dataset("coco", data_dir / "ann.json", images=data_dir / "imgs")
    assert ds.classes == ["ant", "zebra"]  # category id order
    assert boxes_of(ds) == {"imgs/a.jpg": [(1, 1, 3, 3, "ant"), (10, 20, 40, 60, "zebra")]}
    assert [b.iscrowd for b in ds.records[0].boxes] == [False, True]
    assert [i.record for i in ds.rejected] == ["annotation id=3", "annotation id=4", "annotation id=5"]


def test_coco_bad_json_is_rejected(data_dir: Path) -> None:
    (data_dir / "x.json").write_text('{"images": [\n')
    ds = read_dataset("coco", data_dir / "x.json")
    assert ds.records == [] and ds.rejected[0].file == "x.json" and "invalid JSON" in ds.rejected[0].reason


# ---------------------------------------------------------------- azureml


def test_azureml_jsonl_normalized_boxes_and_urls(data_dir: Path) -> None:
    make_image(data_dir / "local" / "UI" / "pets" / "c 1.jpg", (200, 100))
    make_image(data_dir / "local" / "d.jpg", (50, 40))
    lines = [
        {
            "image_url": "AmlDatastore://workspaceblobstore/UI/pets/c 1.jpg",
            "label": [{"label": "cat", "topX": 0.1, "topY": 0.2, "bottomX": 0.5, "bottomY": 0.6, "isCrowd": 0}],
            "label_confidence": [1.0],
        },
        {
            "image_url": "azureml://subscriptions/s/resourcegroups/g/workspaces/w/datastores/ds/paths/deep/er/d.jpg",
            "image_details": {"format": "jpg", "width": "500px", "height": "400px"},
            "label": [{"label": "dog", "topX": 0, "topY": 0, "bottomX": 1, "bottomY": 0.5, "isCrowd": 1}],
        },
    ]
    f = data_dir / "export.jsonl"
    f.write_text("\n".join(json.dumps(x) for x in lines) + '\nnot json\n{"image_url": "a.jpg", "label": "cat"}\n')
    ds = read_dataset("azureml", f, images=data_dir / "local")
    assert boxes_of(ds) == {
        "local/UI/pets/c 1.jpg": [
            (pytest.approx(20.0), pytest.approx(20.0), pytest.approx(100.0), pytest.approx(60.0), "cat")
        ],
        "local/d.jpg": [(0.0, 0.0, 500.0, 200.0, "dog")],  # image_details size wins (validation checks it)
    }
    assert ds.records[1].boxes[0].iscrowd is True
    assert [i.record for i in ds.rejected] == ["line 3", "line 4"]


def test_azureml_unknown_size_is_rejected(data_dir: Path) -> None:
    (data_dir / "e.jsonl").write_text(
        json.dumps(
            {
                "image_url": "AmlDatastore://ds/missing.jpg",
                "label": [{"label": "a", "topX": 0, "topY": 0, "bottomX": 1, "bottomY": 1}],
            }
        )
    )
    ds = read_dataset("azureml", data_dir / "e.jsonl")
    assert ds.records == [] and "normalized boxes cannot be converted" in ds.rejected[0].reason


# ---------------------------------------------------------------- class_from_filename, classes


def test_class_from_filename_pets_style_on_voc(data_dir: Path) -> None:
    for name in ("Abyssinian_12", "great_pyrenees_3", "nodigits"):
        make_image(data_dir / "JPEGImages" / f"{name}.jpg")
        (data_dir / "Annotations").mkdir(exist_ok=True)
        (data_dir / "Annotations" / f"{name}.xml").write_text(voc_xml(f"{name}.jpg", (64, 48), [("cat", 1, 1, 5, 5)]))
    ds = read_dataset("voc", data_dir, class_from_filename=True)
    assert {r.image: [b.label for b in r.boxes] for r in ds.records} == {
        "JPEGImages/Abyssinian_12.jpg": ["Abyssinian"],
        "JPEGImages/great_pyrenees_3.jpg": ["great_pyrenees"],
    }
    assert ds.classes == ["Abyssinian", "great_pyrenees"]
    assert [i.file for i in ds.rejected] == ["Annotations/nodigits.xml"]


def test_class_from_filename_regex_fills_labelless_bbox_rows(data_dir: Path) -> None:
    (data_dir / "car-001.txt").write_text("1\n1 2 3 4\n")
    ds = read_dataset("bbox_txt", data_dir, class_from_filename=r"(?P<label>[a-z]+)-\d+")
    assert [b.label for b in ds.records[0].boxes] == ["car"]


def test_classes_option_orders_and_appends(data_dir: Path) -> None:
    (data_dir / "l.csv").write_text(
        "filename,class,xmin,ymin,xmax,ymax\na.jpg,b,1,2,3,4\na.jpg,z,1,2,3,4\na.jpg,a,1,2,3,4\n"
    )
    (data_dir / "m.pbtxt").write_text("item { id: 1 name: 'z' }\nitem { id: 2 name: 'b' }\n")
    assert read_dataset("csv", data_dir / "l.csv", classes=["z"]).classes == ["z", "a", "b"]
    assert read_dataset("csv", data_dir / "l.csv", classes=str(data_dir / "m.pbtxt")).classes == ["z", "b", "a"]
