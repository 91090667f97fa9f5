"""Sharded TFRecords in TF Model Garden's ``tf.Example`` layout.

The layout is the one ``official.vision.dataloaders.tf_example_decoder.TfExampleDecoder`` reads
(the TF Object Detection API's): ``image/encoded`` (JPEG or PNG bytes), ``image/format``,
``image/height``, ``image/width``, ``image/filename``, ``image/source_id`` (the COCO image id of the
split's ground-truth JSON, as a decimal string, so detections can be matched to ground truth),
``image/object/bbox/{xmin,ymin,xmax,ymax}`` (**normalized** to [0, 1] by the image width/height),
``image/object/class/label`` (1-based label-map id), ``image/object/class/text``,
``image/object/area`` (pixels²) and ``image/object/is_crowd``.

Encoded bytes are passed through as they are on disk (no re-encoding, no quality loss) unless
validation marked the record with ``reencode`` (EXIF rotation, CMYK, alpha, unusual formats): then
the image is decoded with Pillow, EXIF-transposed, converted to RGB and written as JPEG (quality 95).
"""

from __future__ import annotations

import io
import math
import os

from training import storage
from training.annotations.record import Dataset, ImageRecord
from training.boxes import xyxy_to_normalized_xyxy

RECORDS_PER_SHARD = 256


def load_image_bytes(dataset_root: str, record: ImageRecord) -> tuple[bytes, str, int, int]:
    """Return ``(encoded bytes, format, width, height)`` of a record's image, ready for a TFRecord.

    ``format`` is ``"jpeg"`` or ``"png"``; width/height are the real pixel size of the encoded image
    (after EXIF transposition when the record is re-encoded).

    Raises:
      DataError: the image cannot be read or decoded (names the file).
    """
    from PIL import Image, ImageOps

    from training.errors import DataError

    url = storage.join(dataset_root, record.image)
    try:
        data = storage.read_bytes(url)
        with Image.open(io.BytesIO(data)) as im:
            fmt = (im.format or "").lower()
            if record.reencode or fmt not in ("jpeg", "png"):
                rgb = ImageOps.exif_transpose(im).convert("RGB")
                buf = io.BytesIO()
                rgb.save(buf, format="JPEG", quality=95)
                return buf.getvalue(), "jpeg", rgb.width, rgb.height
            return data, fmt, im.width, im.height
    except (OSError, ValueError) as e:
        raise DataError(f"{url}: cannot read image: {e}") from e


def make_example(
    record: ImageRecord,
    encoded: bytes,
    image_format: str,
    width: int,
    height: int,
    source_id: str,
    class_ids: dict[str, int],
):
    """Build one ``tf.train.Example`` for ``record`` with Model Garden's ``TfExampleBuilder``.

    Boxes are converted from the canonical absolute-pixel ``xmin, ymin, xmax, ymax`` to coordinates
    normalized by ``width``/``height`` and clipped to [0, 1].

    Raises:
      KeyError: a box's label is not in ``class_ids``.
    """
    from official.vision.data.tf_example_builder import TfExampleBuilder

    xmin, ymin, xmax, ymax, labels, texts, areas = [], [], [], [], [], [], []
    for b in record.boxes:
        x0, y0, x1, y1 = xyxy_to_normalized_xyxy([b.xmin, b.ymin, b.xmax, b.ymax], width, height, clip=True).tolist()
        xmin.append(x0)
        ymin.append(y0)
        xmax.append(x1)
        ymax.append(y1)
        labels.append(class_ids[b.label])
        texts.append(b.label.encode())
        areas.append(b.area)
    # Not ``add_encoded_image_feature``: it upper-cases image/format and adds image/channels, which the
    # TF Object Detection API layout (lower-case format, no channels) does not have.
    builder = (
        TfExampleBuilder()
        .add_bytes_feature("image/encoded", encoded)
        .add_bytes_feature("image/format", image_format)
        .add_ints_feature("image/height", [height])
        .add_ints_feature("image/width", [width])
        .add_bytes_feature("image/filename", record.image)
        .add_bytes_feature("image/source_id", source_id)
        .add_boxes_feature(xmin, xmax, ymin, ymax, labels)  # image/object/bbox/*, image/object/class/label
        .add_bytes_feature("image/object/class/text", texts)
        .add_floats_feature("image/object/area", areas)
        .add_ints_feature("image/object/is_crowd", [0] * len(labels))
    )
    return builder.example


def write_split(
    dataset: Dataset,
    records: list[ImageRecord],
    split: str,
    out_dir: str,
    source_ids: dict[str, int],
    records_per_shard: int = RECORDS_PER_SHARD,
) -> list[str]:
    """Write ``records`` as ``<out_dir>/<split>-XXXXX-of-YYYYY.tfrecord`` shards.

    Args:
      dataset: gives the image root and the ordered classes (label-map ids ``1..N``).
      records: the split's records (validated).
      split: ``train``, ``val`` or ``test``.
      out_dir: a **local** folder (TensorFlow writes it; the run is uploaded as a whole later).
      source_ids: image path -> COCO image id of the split's ground-truth JSON.

    Returns:
      The shard paths written, in order.
    """
    import tensorflow as tf

    os.makedirs(out_dir, exist_ok=True)
    class_ids = {c: i + 1 for i, c in enumerate(dataset.classes)}
    n = max(1, math.ceil(len(records) / records_per_shard))
    paths = [os.path.join(out_dir, f"{split}-{i:05d}-of-{n:05d}.tfrecord") for i in range(n)]
    writers = [tf.io.TFRecordWriter(p) for p in paths]
    try:
        for i, rec in enumerate(records):
            encoded, fmt, w, h = load_image_bytes(dataset.root, rec)
            example = make_example(rec, encoded, fmt, w, h, str(source_ids[rec.image]), class_ids)
            writers[i % n].write(example.SerializeToString())
    finally:
        for w in writers:
            w.close()
    return paths
