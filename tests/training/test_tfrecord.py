"""TFRecords decode with Model Garden's own TfExampleDecoder to the same boxes and labels."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from training.annotations.record import Box, Dataset, ImageRecord
from training.tfrecord import load_image_bytes, write_split


def _jpeg(path, size=(60, 40), exif_orientation=None):
    im = Image.new("RGB", size, (10, 120, 200))
    kw = {}
    if exif_orientation:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kw["exif"] = exif
    im.save(path, format="JPEG", quality=92, **kw)


def test_records_decode_with_model_garden_decoder(tmp_path):
    import tensorflow as tf
    from official.vision.dataloaders.tf_example_decoder import TfExampleDecoder

    root = tmp_path / "data set"
    root.mkdir()
    _jpeg(root / "a.jpg", (60, 40))
    _jpeg(root / "b.jpg", (30, 50))
    recs = [
        ImageRecord("a.jpg", 60, 40, [Box(6, 4, 30, 20, "cat"), Box(0, 0, 60, 40, "dog")]),
        ImageRecord("b.jpg", 30, 50, [Box(3, 10, 15, 35, "dog")]),
    ]
    ds = Dataset(root=str(root), records=recs, classes=["cat", "dog"])
    paths = write_split(ds, recs, "train", str(tmp_path / "tf"), {"a.jpg": 1, "b.jpg": 2}, records_per_shard=1)
    assert [p.rsplit("/", 1)[1] for p in paths] == ["train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]
    decoder = TfExampleDecoder()
    got = {}
    for serialized in tf.data.TFRecordDataset(paths):
        d = decoder.decode(serialized)
        got[d["source_id"].numpy().decode()] = d
    a = got["1"]
    assert a["image"].shape == (40, 60, 3)
    np.testing.assert_allclose(a["groundtruth_boxes"].numpy(), [[4 / 40, 6 / 60, 20 / 40, 30 / 60], [0, 0, 1, 1]], atol=1e-6)
    assert a["groundtruth_classes"].numpy().tolist() == [1, 2]
    np.testing.assert_allclose(a["groundtruth_area"].numpy(), [24 * 16, 60 * 40])
    b = got["2"]
    np.testing.assert_allclose(b["groundtruth_boxes"].numpy(), [[10 / 50, 3 / 30, 35 / 50, 15 / 30]], atol=1e-6)
    assert b["groundtruth_classes"].numpy().tolist() == [2]


def test_jpeg_bytes_pass_through_unchanged(tmp_path):
    _jpeg(tmp_path / "a.jpg")
    data, fmt, w, h = load_image_bytes(str(tmp_path), ImageRecord("a.jpg", 60, 40))
    assert data == (tmp_path / "a.jpg").read_bytes()
    assert (fmt, w, h) == ("jpeg", 60, 40)


def test_exif_rotated_image_is_reencoded_upright(tmp_path):
    _jpeg(tmp_path / "r.jpg", (60, 40), exif_orientation=6)  # rotate 90° clockwise on display
    data, fmt, w, h = load_image_bytes(str(tmp_path), ImageRecord("r.jpg", 40, 60, reencode="exif orientation 6"))
    assert data != (tmp_path / "r.jpg").read_bytes()
    assert (fmt, w, h) == ("jpeg", 40, 60)
    assert Image.open(io.BytesIO(data)).size == (40, 60)


def test_unreadable_image_names_the_file(tmp_path):
    from training.errors import DataError

    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match="bad.jpg"):
        load_image_bytes(str(tmp_path), ImageRecord("bad.jpg", 1, 1))


def test_example_has_exactly_the_object_detection_api_features():
    """The builder writes the TF Object Detection API layout: these keys, lower-case format, clipped boxes."""
    from training.tfrecord import make_example

    rec = ImageRecord(image="a b/x.jpg", width=64, height=48, boxes=[Box(-4, 12, 32, 60, label="WBC")])
    ex = make_example(rec, b"jpeg bytes", "jpeg", 64, 48, "17", {"RBC": 1, "WBC": 2})
    f = ex.features.feature
    assert sorted(f) == sorted(
        [
            "image/encoded", "image/format", "image/height", "image/width", "image/filename", "image/source_id",
            "image/object/bbox/xmin", "image/object/bbox/ymin", "image/object/bbox/xmax", "image/object/bbox/ymax",
            "image/object/class/label", "image/object/class/text", "image/object/area", "image/object/is_crowd",
        ]
    )
    assert f["image/format"].bytes_list.value == [b"jpeg"]
    assert f["image/source_id"].bytes_list.value == [b"17"]
    assert f["image/filename"].bytes_list.value == [b"a b/x.jpg"]
    assert (f["image/height"].int64_list.value, f["image/width"].int64_list.value) == ([48], [64])
    np.testing.assert_allclose(
        [f[f"image/object/bbox/{k}"].float_list.value[0] for k in ("xmin", "ymin", "xmax", "ymax")],
        [0.0, 0.25, 0.5, 1.0],
    )
    assert f["image/object/class/label"].int64_list.value == [2]
    assert f["image/object/class/text"].bytes_list.value == [b"WBC"]
    assert f["image/object/is_crowd"].int64_list.value == [0]
