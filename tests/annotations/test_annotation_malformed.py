"""Malformed annotation files and hostile image files: each becomes a record of the quality report
(file, record, reason), never a crash of the whole read (issue 33, "Bad input")."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from annotation_fakes import make_image, voc_xml

from training.annotations import ValidationPolicy, read_dataset, validate

GUARD_S = 60  # a hang guard only: the wait ends when validation returns


def _issues(ds) -> list[str]:
    return [str(i) for i in ds.rejected]


def _codes(report) -> list[tuple[str, str]]:
    return [(r.code, r.image) for r in report.rejected]


# -- numbers out of range ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["inf", "1e400", "-inf", "nan"])
def test_voc_non_finite_size_is_a_warning_and_the_image_size_is_used(data_dir: Path, value: str) -> None:
    make_image(data_dir / "a.jpg", (64, 48))
    (data_dir / "a.xml").write_text(voc_xml("a.jpg", None, [("cat", 1, 2, 30, 40)]).replace(
        "</path>", f"</path><size><width>{value}</width><height>48</height></size>"))
    ds = read_dataset("voc", data_dir)
    assert [(w.record, "out of range" in w.reason or "not a number" in w.reason) for w in ds.warnings] == [("size", True)]
    report = validate(ds).report
    assert (report.images_kept, report.boxes_kept) == (1, 1)


def test_coco_and_azureml_infinite_sizes_are_rejected_records(data_dir: Path) -> None:
    make_image(data_dir / "a.jpg", (64, 48))
    (data_dir / "c.json").write_text(
        '{"images": [{"id": 1, "file_name": "a.jpg", "width": 1e400, "height": 48}], "annotations": [], "categories": []}'
    )
    assert _issues(read_dataset("coco", data_dir / "c.json")) == [
        "c.json#images[0]: bad image entry: image size inf is out of range (at most 2147483647 pixels)"
    ]
    (data_dir / "a.jsonl").write_text(
        '{"image_url": "a.jpg", "image_details": {"width": 1e400, "height": "48px"}, "label": []}\n'
    )
    assert _issues(read_dataset("azureml", data_dir / "a.jsonl")) == [
        "a.jsonl#line 1: image size inf is out of range (at most 2147483647 pixels)"
    ]


def test_csv_out_of_range_class_id_and_size_are_rejected_rows(data_dir: Path) -> None:
    (data_dir / "a.csv").write_text(
        "filename,classid,xmin,ymin,xmax,ymax,width,height\n"
        "a.jpg,inf,1,2,3,4,64,48\n"
        "a.jpg,1,1,2,3,4,1e400,48\n"
        "a.jpg,1,1,2,3,4,64,48\n"
    )
    ds = read_dataset("csv", data_dir / "a.csv", class_map={1: "cat"})
    assert _issues(ds) == [
        "a.csv#line 2: class id 'inf' is not an integer",
        "a.csv#line 3: image size '1e400' is out of range (at most 2147483647 pixels)",
    ]
    assert ds.num_boxes == 1


def test_a_json_integer_too_large_for_a_float_is_a_rejected_box(data_dir: Path) -> None:
    (data_dir / "c.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg"}],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [10**400, 0, 1, 1]}],
        "categories": [{"id": 1, "name": "cat"}],
    }))
    [issue] = read_dataset("coco", data_dir / "c.json").rejected
    assert (issue.file, issue.record) == ("c.json", "annotation id=7")
    assert issue.reason.startswith("bbox is out of range: 1000") and len(issue.reason) < 100


# -- wrong types ---------------------------------------------------------------------------------------


def test_coco_list_valued_ids_are_rejected_records(data_dir: Path) -> None:
    make_image(data_dir / "a.jpg", (64, 48))
    make_image(data_dir / "b.jpg", (64, 48))
    (data_dir / "c.json").write_text(json.dumps({
        "images": [{"id": [1], "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}, {"id": 2, "file_name": "a.jpg"}],
        "annotations": [
            {"id": 1, "image_id": [2], "category_id": 1, "bbox": [1, 2, 3, 4]},
            {"id": 2, "image_id": 2, "category_id": {"id": 1}, "bbox": [1, 2, 3, 4]},
            {"id": [3], "image_id": 2, "category_id": 1, "bbox": [1, 2, 3, 4]},
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": ""}],
    }))
    ds = read_dataset("coco", data_dir / "c.json")
    assert _issues(ds) == [
        "c.json#categories[1]: category without integer 'id' and non-empty 'name': {'id': 2, 'name': ''}",
        "c.json#images[0]: bad image entry: 'id' must be a number or a string, got [1]",
        "c.json#images[2]: bad image entry: duplicate image id 2",
        "c.json#annotation id=1: image_id must be a number or a string, got [2]",
        "c.json#annotation id=2: category_id must be a number or a string, got {'id': 1}",
    ]
    assert [(r.image, len(r.boxes)) for r in ds.records] == [("b.jpg", 1)]
    assert ds.records[0].boxes[0].source == "c.json#annotation id=[3]"


def test_coco_sections_of_the_wrong_type_are_rejected_records(data_dir: Path) -> None:
    (data_dir / "c.json").write_text('{"images": [], "annotations": 5, "categories": "cat"}')
    assert _issues(read_dataset("coco", data_dir / "c.json")) == [
        "c.json#categories: 'categories' is not a list: 'cat'",
        "c.json#annotations: 'annotations' is not a list: 5",
    ]


def test_azureml_values_of_the_wrong_type_are_rejected_records(data_dir: Path) -> None:
    make_image(data_dir / "a.jpg", (64, 48))
    box = {"topX": 0.1, "topY": 0.1, "bottomX": 0.5, "bottomY": 0.5}
    lines = [
        {"image_url": "a.jpg", "image_details": "640x480", "label": [{**box, "label": "cat"}]},
        {"image_url": ["a.jpg"], "label": []},
        {"image_url": "a.jpg", "label": [{**box, "label": ["cat"]}, {**box, "label": "cat", "topX": [0.1]}]},
    ]
    (data_dir / "a.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    ds = read_dataset("azureml", data_dir / "a.jsonl")
    assert _issues(ds) == [
        "a.jsonl#line 1: 'image_details' must be an object, got '640x480'",
        "a.jsonl#line 2: 'image_url' must be a non-empty string, got ['a.jpg']",
        "a.jsonl#line 3 label[1]: 'label' must be a string, got ['cat']",
        "a.jsonl#line 3 label[2]: topX is not a number: [0.1]",
    ]
    assert [(r.image, len(r.boxes)) for r in ds.records] == [("a.jpg", 0)]


# -- nesting, encodings ----------------------------------------------------------------------------------


def test_deeply_nested_json_is_a_rejected_file_or_line(data_dir: Path) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    (data_dir / "c.json").write_text('{"images": [], "extra": ' + deep + "}")
    assert _issues(read_dataset("coco", data_dir / "c.json")) == ["c.json: JSON nested too deeply to read"]
    (data_dir / "a.jsonl").write_text(deep + "\n")
    assert _issues(read_dataset("azureml", data_dir / "a.jsonl")) == ["a.jsonl#line 1: JSON nested too deeply to read"]


@pytest.mark.parametrize("encoding", ["shift_jis", "big5", "no-such-encoding"])
def test_voc_in_an_encoding_expat_cannot_read_is_a_rejected_file(data_dir: Path, encoding: str) -> None:
    (data_dir / "a.xml").write_text(f'<?xml version="1.0" encoding="{encoding}"?>' + voc_xml("a.jpg", None, []))
    [issue] = read_dataset("voc", data_dir).rejected
    assert issue.file == "a.xml" and issue.record == ""


def test_nul_bytes_in_image_names_are_missing_images(data_dir: Path) -> None:
    (data_dir / "a.csv").write_text("filename,class,xmin,ymin,xmax,ymax\na\x00.jpg,x,1,2,3,4\n")
    report = validate(read_dataset("csv", data_dir / "a.csv")).report
    assert _codes(report) == [("missing_image", "a\x00.jpg")]
    assert report.counts_add_up


# -- symbolic links, huge and special files ---------------------------------------------------------------


def test_symlink_leading_out_of_the_dataset_is_refused(data_dir: Path, tmp_path: Path) -> None:
    outside = make_image(tmp_path / "outside" / "secret.jpg", (64, 48))
    make_image(data_dir / "real.jpg", (64, 48), seed=1)
    (data_dir / "out.jpg").symlink_to(outside)
    (data_dir / "in.jpg").symlink_to(data_dir / "real.jpg")  # inside the dataset: followed
    rows = "".join(f"{n},x,1,2,30,40\n" for n in ("out.jpg", "in.jpg"))
    (data_dir / "a.csv").write_text("filename,class,xmin,ymin,xmax,ymax\n" + rows)
    report = validate(read_dataset("csv", data_dir / "a.csv"), ValidationPolicy(duplicates="keep")).report
    [refused] = report.rejected
    assert (refused.code, refused.image) == ("path_escape", "out.jpg")
    assert str(outside) in refused.reason
    assert report.images_kept == 1


def test_symlink_into_a_named_images_folder_is_followed(data_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "image store"
    make_image(store / "a.jpg", (64, 48))
    (data_dir / "images").symlink_to(store, target_is_directory=True)
    (data_dir / "a.csv").write_text("filename,class,xmin,ymin,xmax,ymax\na.jpg,x,1,2,30,40\n")
    ds = read_dataset("csv", data_dir / "a.csv", images=data_dir / "images")
    assert validate(ds).report.images_kept == 1
    (data_dir / "a.csv").write_text("filename,class,xmin,ymin,xmax,ymax\nimages/a.jpg,x,1,2,30,40\n")
    refused = validate(read_dataset("csv", data_dir / "a.csv")).report  # the folder was not named
    assert _codes(refused) == [("path_escape", "images/a.jpg")]


def test_image_over_the_size_cap_is_rejected_unread(data_dir: Path, monkeypatch) -> None:
    make_image(data_dir / "a.jpg", (64, 48))
    big = make_image(data_dir / "b.jpg", (64, 48), seed=2)
    with open(big, "ab") as fh:
        fh.write(b"\0" * 100_000)
    (data_dir / "a.csv").write_text("filename,class,xmin,ymin,xmax,ymax\na.jpg,x,1,2,30,40\nb.jpg,x,1,2,30,40\n")
    report = validate(read_dataset("csv", data_dir / "a.csv"), ValidationPolicy(max_image_bytes=50_000)).report
    assert _codes(report) == [("too_large", "b.jpg")]
    assert "more than max_image_bytes=50000" in report.rejected[0].reason
    assert report.counts_add_up and report.images_kept == 1
    assert ValidationPolicy().max_image_bytes == 64 * 1024 * 1024


def test_a_fifo_named_as_an_image_is_never_opened(data_dir: Path) -> None:
    os.mkfifo(data_dir / "a.jpg")
    (data_dir / "a.csv").write_text("filename,class,xmin,ymin,xmax,ymax\na.jpg,x,1,2,30,40\n")
    ds = read_dataset("csv", data_dir / "a.csv")
    done: list = []
    t = threading.Thread(target=lambda: done.append(validate(ds).report), daemon=True)
    t.start()
    t.join(GUARD_S)
    if not done:  # opening the FIFO blocked: unblock it so the thread ends, then fail
        with open(data_dir / "a.jpg", "wb"):
            pass
        pytest.fail("validation opened a FIFO and blocked")
    assert [r.code for r in done[0].rejected] == ["unreadable_image"]


# -- the CLI: exit 3 naming the file, not "unexpected error" ------------------------------------------------


def test_prepare_on_malformed_coco_exits_3_naming_the_file(data_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from detops.cli import main
    from training.errors import ExitCode

    make_image(data_dir / "a.jpg", (64, 48))
    (data_dir / "instances.json").write_text(json.dumps({
        "images": [{"id": [1], "file_name": "a.jpg"}],
        "annotations": [{"id": 1, "image_id": [1], "category_id": 1, "bbox": [1, 2, 3, 4]}],
        "categories": [{"id": 1, "name": "cat"}],
    }))
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"project: t\ndatastore: {tmp_path / 'runs'}\ndata:\n  format: coco\n  path: {data_dir / 'instances.json'}\n")
    monkeypatch.setenv("DETOPS_HOME", str(tmp_path / "home"))
    with pytest.raises(SystemExit) as e:
        main(["prepare", str(cfg)])
    err = capsys.readouterr().err
    assert e.value.code == ExitCode.DATA, err
    assert "instances.json#images[0]" in err and "unexpected error" not in err
