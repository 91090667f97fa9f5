"""Validation rules, one test each, plus the counts-add-up invariant."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
from annotation_fakes import make_image
from PIL import Image, ImageOps

from training.annotations import Box, Dataset, ImageRecord, ValidationPolicy, read_dataset, validate
from training.annotations.validate import orient_box
from training.errors import ConfigError


def ds_of(root: Path, *records: ImageRecord, classes=None) -> Dataset:
    labels = sorted({b.label for r in records for b in r.boxes})
    return Dataset(root=str(root), records=list(records), classes=classes or labels, format="test")


def rec(image: str, boxes: list[tuple], size=(64, 48)) -> ImageRecord:
    return ImageRecord(
        image=image,
        width=size[0] if size else None,
        height=size[1] if size else None,
        boxes=[
            Box(*b[:4], label=b[4] if len(b) > 4 else "a", source=f"{image}.xml#object[{i}]")
            for i, b in enumerate(boxes, 1)
        ],
        source=f"{image}.xml",
    )


def codes(result) -> list[tuple[str, str, str]]:
    return [(r.level, r.code, r.image) for r in result.report.rejected]


def test_zero_area_and_inverted_boxes_are_rejected(data_dir: Path) -> None:
    make_image(data_dir / "a.jpg")
    res = validate(ds_of(data_dir, rec("a.jpg", [(1, 1, 10, 10), (5, 5, 5, 9), (9, 1, 3, 8), (1, 1, math.nan, 3)])))
    assert codes(res) == [("box", "zero_area", "a.jpg"), ("box", "inverted", "a.jpg"), ("box", "non_finite", "a.jpg")]
    assert res.report.rejected[0].source == "a.jpg.xml#object[2]"
    assert [(b.xmin, b.ymin, b.xmax, b.ymax) for b in res.dataset.records[0].boxes] == [(1, 1, 10, 10)]
    assert (res.report.boxes_in, res.report.boxes_kept, res.report.boxes_rejected) == (4, 1, 3)


def test_out_of_bounds_clip(data_dir: Path) -> None:
    make_image(data_dir / "a.jpg", (64, 48))
    res = validate(ds_of(data_dir, rec("a.jpg", [(-5, 2, 70, 40), (100, 100, 120, 120)])))
    assert [(b.xmin, b.ymin, b.xmax, b.ymax) for b in res.dataset.records[0].boxes] == [(0, 2, 64, 40)]
    assert res.report.boxes_clipped == 1
    assert res.report.clipped[0]["clipped"] == [0, 2, 64, 40]
    assert codes(res) == [("box", "outside_image", "a.jpg")]


def test_out_of_bounds_reject(data_dir: Path) -> None:
    make_image(data_dir / "a.jpg", (64, 48))
    res = validate(
        ds_of(data_dir, rec("a.jpg", [(-5, 2, 70, 40), (0, 0, 64, 48)])), ValidationPolicy(out_of_bounds="reject")
    )
    assert codes(res) == [("box", "out_of_bounds", "a.jpg")]
    assert res.report.boxes_clipped == 0 and res.report.boxes_kept == 1


def test_unknown_class_is_rejected_and_policy_classes_become_the_label_map(data_dir: Path) -> None:
    make_image(data_dir / "a.jpg")
    res = validate(
        ds_of(data_dir, rec("a.jpg", [(1, 1, 9, 9, "cat"), (1, 1, 9, 9, "dgo")])),
        ValidationPolicy(classes=["dog", "cat"]),
    )
    assert codes(res) == [("box", "unknown_class", "a.jpg")]
    assert "'dgo'" in res.report.rejected[0].reason
    assert res.dataset.classes == ["dog", "cat"]


def test_missing_image_rejects_image_and_its_boxes(data_dir: Path) -> None:
    res = validate(ds_of(data_dir, rec("nope.jpg", [(1, 1, 9, 9), (2, 2, 8, 8)])))
    assert codes(res) == [("image", "missing_image", "nope.jpg")]
    r = res.report
    assert (r.images_rejected, r.boxes_rejected, r.rejected[0].boxes) == (1, 2, 2)
    assert r.by_reason() == {"missing_image": {"images": 1, "boxes": 2}}


def test_truncated_jpeg_is_unreadable(data_dir: Path) -> None:
    p = make_image(data_dir / "t.jpg", (128, 96))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with Image.open(p) as im:  # the header alone still opens: only a full decode finds it
        assert im.size == (128, 96)
    res = validate(ds_of(data_dir, rec("t.jpg", [(1, 1, 9, 9)], size=(128, 96))))
    assert codes(res) == [("image", "unreadable_image", "t.jpg")]
    assert "truncated" in res.report.rejected[0].reason


def test_truncated_jpeg_is_found_even_if_pillow_was_told_to_pad(data_dir: Path, monkeypatch) -> None:
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    p = make_image(data_dir / "t.jpg", (128, 96))
    p.write_bytes(p.read_bytes()[:-400])
    make_image(data_dir / "ok.jpg", (128, 96))
    res = validate(ds_of(data_dir, rec("t.jpg", [(1, 1, 9, 9)], size=(128, 96)), rec("ok.jpg", [], size=(128, 96))))
    assert codes(res) == [("image", "unreadable_image", "t.jpg")]


def test_exif_rotated_jpeg_matching_displayed_size_needs_reencode(data_dir: Path) -> None:
    make_image(data_dir / "r.jpg", (64, 48), orientation=6)  # displayed 48 wide, 64 tall
    res = validate(ds_of(data_dir, rec("r.jpg", [(1, 2, 30, 60)], size=(48, 64))))
    kept = res.dataset.records[0]
    assert (kept.width, kept.height) == (48, 64)
    assert kept.reencode and "EXIF orientation 6" in kept.reencode
    assert [(b.xmin, b.ymin, b.xmax, b.ymax) for b in kept.boxes] == [(1, 2, 30, 60)]
    assert res.report.reencode == [{"image": "r.jpg", "reason": kept.reencode}]


@pytest.mark.parametrize("orientation", range(5, 9))
def test_exif_boxes_drawn_on_stored_pixels_are_moved_to_the_displayed_frame(data_dir: Path, orientation: int) -> None:
    # Orientations 5-8 swap width and height, so an annotation giving the *stored* size shows the
    # labeler saw raw pixels. A white block at a known stored position; after exif_transpose the
    # transformed box must cover it exactly.
    im = Image.new("RGB", (60, 40), "black")
    im.paste((255, 255, 255), (10, 5, 25, 15))
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.save(data_dir / "o.png", exif=exif.tobytes())  # PNG: lossless, so the block edges are exact
    res = validate(ds_of(data_dir, rec("o.png", [(10, 5, 25, 15)], size=(60, 40))))
    assert len(res.report.exif_boxes_transformed) == 1
    b = res.dataset.records[0].boxes[0]
    with Image.open(data_dir / "o.png") as raw:
        shown = ImageOps.exif_transpose(raw)
    assert shown.size == (res.dataset.records[0].width, res.dataset.records[0].height)
    assert shown.convert("L").point(lambda v: 255 if v > 128 else 0).getbbox() == (b.xmin, b.ymin, b.xmax, b.ymax)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_box_matches_pillow_exif_transpose(data_dir: Path, orientation: int) -> None:
    im = Image.new("L", (60, 40), 0)
    im.paste(255, (10, 5, 25, 15))
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.save(data_dir / "o.png", exif=exif.tobytes())
    with Image.open(data_dir / "o.png") as raw:
        shown = ImageOps.exif_transpose(raw)
    b = orient_box(Box(10, 5, 25, 15, "a"), orientation, 60, 40)
    assert shown.getbbox() == (b.xmin, b.ymin, b.xmax, b.ymax)


@pytest.mark.parametrize("orientation", (2, 3, 4))
def test_exif_mirror_or_180_keeps_boxes_in_displayed_frame(data_dir: Path, orientation: int) -> None:
    # Same size in both frames: the documented convention (boxes follow the displayed image) applies.
    make_image(data_dir / "m.jpg", (64, 48), orientation=orientation)
    res = validate(ds_of(data_dir, rec("m.jpg", [(1, 2, 30, 40)])))
    kept = res.dataset.records[0]
    assert [(b.xmin, b.ymin, b.xmax, b.ymax) for b in kept.boxes] == [(1, 2, 30, 40)]
    assert f"EXIF orientation {orientation}" in kept.reencode
    assert res.report.exif_boxes_transformed == []


@pytest.mark.parametrize(
    ("mode", "fmt", "suffix", "expected"),
    [
        ("CMYK", "JPEG", "jpg", "CMYK"),
        ("RGBA", "PNG", "png", "alpha"),
        ("L", "JPEG", "jpg", "grayscale"),
        ("RGB", "BMP", "bmp", "format BMP"),
        ("RGB", "PNG", "png", None),
        ("RGB", "JPEG", "jpg", None),
    ],
)
def test_color_modes_and_formats_set_reencode_not_rejected(data_dir: Path, mode, fmt, suffix, expected) -> None:
    make_image(data_dir / f"m.{suffix}", mode=mode, fmt=fmt)
    res = validate(ds_of(data_dir, rec(f"m.{suffix}", [(1, 1, 9, 9)])))
    assert res.report.images_kept == 1 and res.report.rejected == []
    got = res.dataset.records[0].reencode
    if expected is None:
        assert got is None
    else:
        assert expected in got


def test_size_mismatch_reject_vs_trust_image(data_dir: Path) -> None:
    make_image(data_dir / "s.jpg", (64, 48))
    d = ds_of(data_dir, rec("s.jpg", [(1, 1, 100, 9)], size=(128, 96)))
    res = validate(d)
    assert codes(res) == [("image", "size_mismatch", "s.jpg")]
    assert res.report.size_mismatches[0]["actual"] == [64, 48]
    res2 = validate(d, ValidationPolicy(size_mismatch="trust_image"))
    assert res2.report.rejected == [] and res2.report.size_mismatches[0]["action"] == "kept with the real size"
    kept = res2.dataset.records[0]
    assert (kept.width, kept.height) == (64, 48) and kept.boxes[0].xmax == 64  # clipped to the real size


def test_missing_size_is_filled_from_the_file(data_dir: Path) -> None:
    make_image(data_dir / "n.jpg", (30, 20))
    res = validate(ds_of(data_dir, rec("n.jpg", [(1, 1, 9, 9)], size=None)))
    assert (res.dataset.records[0].width, res.dataset.records[0].height) == (30, 20)
    assert res.report.size_mismatches == []


def test_duplicate_content_second_copy_rejected_or_kept(data_dir: Path) -> None:
    a = make_image(data_dir / "a.jpg", seed=1)
    b = make_image(data_dir / "sub" / "b.jpg", seed=1)
    assert a.read_bytes() == b.read_bytes()
    make_image(data_dir / "c.jpg", seed=2)
    d = ds_of(data_dir, rec("a.jpg", [(1, 1, 9, 9)]), rec("sub/b.jpg", [(1, 1, 9, 9), (2, 2, 5, 5)]), rec("c.jpg", []))
    res = validate(d)
    assert codes(res) == [("image", "duplicate", "sub/b.jpg")]
    assert res.report.duplicates[0]["duplicate_of"] == "a.jpg"
    assert res.report.boxes_rejected == 2
    sha = hashlib.sha256(a.read_bytes()).hexdigest()
    assert res.dataset.records[0].sha256 == sha and res.report.duplicates[0]["sha256"] == sha
    res2 = validate(d, ValidationPolicy(duplicates="keep"))
    assert res2.report.images_kept == 3 and len(res2.report.duplicates) == 1


def test_paths_escaping_the_dataset_folder_are_rejected(data_dir: Path) -> None:
    make_image(data_dir.parent / "escape.jpg")  # exists, but outside the dataset folder
    make_image(data_dir / "ok.jpg")
    (data_dir / "l.csv").write_text(
        "filename,class,xmin,ymin,xmax,ymax\n../escape.jpg,a,1,1,5,5\n"
        f"{data_dir.parent / 'escape.jpg'},a,1,1,5,5\nok.jpg,a,1,1,5,5\n"
    )
    ds = read_dataset("csv", data_dir / "l.csv")
    res = validate(ds)
    assert [(c, r.image) for c, r in ((r.code, r) for r in res.report.rejected)] == [
        ("path_escape", "../escape.jpg"),
        ("path_escape", str(data_dir.parent / "escape.jpg")),
    ]
    assert [r.image for r in res.dataset.records] == ["ok.jpg"]


def test_policy_values_are_checked() -> None:
    with pytest.raises(ConfigError, match="out_of_bounds"):
        ValidationPolicy(out_of_bounds="shrink")


def test_counts_add_up_on_a_dataset_with_every_problem(data_dir: Path) -> None:
    make_image(data_dir / "good.jpg", seed=5)
    make_image(data_dir / "dup.jpg", seed=5)
    make_image(data_dir / "cmyk.jpg", mode="CMYK")
    bad = make_image(data_dir / "trunc.jpg", (128, 96))
    bad.write_bytes(bad.read_bytes()[:300])
    make_image(data_dir / "size.jpg", (64, 48))
    (data_dir / "ann.csv").write_text(
        "filename,width,height,class,xmin,ymin,xmax,ymax\n"
        "good.jpg,64,48,a,1,1,9,9\ngood.jpg,64,48,a,5,5,5,5\ngood.jpg,64,48,zz,1,1,9,9\ngood.jpg,64,48,a,-3,1,9,9\n"
        "dup.jpg,64,48,a,1,1,9,9\ncmyk.jpg,64,48,a,1,1,9,9\ntrunc.jpg,128,96,a,1,1,9,9\ntrunc.jpg,128,96,a,2,2,9,9\n"
        "size.jpg,10,10,a,1,1,9,9\nmissing.jpg,64,48,a,1,1,9,9\n../x.jpg,64,48,a,1,1,9,9\n"
        "good.jpg,64,48,a,1,oops,9,9\n"
    )
    ds = read_dataset("csv", data_dir / "ann.csv")
    res = validate(ds, ValidationPolicy(classes=["a"]))
    r = res.report
    assert r.counts_add_up
    assert (r.images_in, r.images_kept, r.images_rejected) == (7, 2, 5)
    assert (r.boxes_in, r.boxes_kept, r.boxes_rejected, r.boxes_clipped) == (11, 3, 8, 1)
    assert r.by_reason() == {
        "zero_area": {"images": 0, "boxes": 1},
        "unknown_class": {"images": 0, "boxes": 1},
        "duplicate": {"images": 1, "boxes": 1},
        "unreadable_image": {"images": 1, "boxes": 2},
        "size_mismatch": {"images": 1, "boxes": 1},
        "missing_image": {"images": 1, "boxes": 1},
        "path_escape": {"images": 1, "boxes": 1},
    }
    d = json.loads(json.dumps(r.to_dict()))
    assert d["counts"]["unparseable"] == 1 and d["unparseable"][0]["record"] == "line 13"
    assert d["counts_add_up"] is True
    text = r.summary()
    assert "11 in = 3 kept + 8 rejected" in text and "7 in = 2 kept + 5 rejected" in text
    assert res.dataset.num_boxes == 3


def test_many_images_use_the_thread_pool_and_stay_in_order(data_dir: Path) -> None:
    recs = [rec(f"i{i:02d}.jpg", [(1, 1, 9, 9)]) for i in range(30)]
    for r in recs:
        make_image(data_dir / r.image)
    res = validate(ds_of(data_dir, *recs), ValidationPolicy(workers=4))
    assert [r.image for r in res.dataset.records] == [r.image for r in recs]
    assert len({r.sha256 for r in res.dataset.records}) == 30
