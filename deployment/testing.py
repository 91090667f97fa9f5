"""Test doubles for the deployment layer: a tiny SavedModel and run folder with the contract's shapes.

:func:`make_fake_saved_model` writes a SavedModel with exactly the signatures of docs/contracts.md
(``serving_default`` on ``encoded_images`` ``tf.string [N]``, ``image_tensor`` on ``images``
``tf.uint8 [N, H, W, 3]``), whose detections depend on the image content (its mean colour), so that a
wrong or swapped image gives different boxes. :func:`make_fake_run` writes a complete run folder
(run.json, evaluation metrics, export/ with that SavedModel and parity.json). Used by the tests, the
serving benchmark when no real run exists, and by other layers' tests (the serving container).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from training import storage

DEFAULT_CLASSES = ("RBC", "WBC", "Platelets")


def _fake_rows(m, K: int, num_classes: int):
    """The fake detector's ``K`` rows for per-channel means ``m`` ([3] float32 tensor), sorted by score.

    Returns ``(boxes [K, 4] normalized yxyx, scores [K], classes [K] int32, real [K] bool)``; rows
    that are not ``real`` (score <= 0.05) are zeroed padding.
    """
    import tensorflow as tf

    j = tf.range(K, dtype=tf.float32)
    c = tf.cast(tf.range(K) % 3, tf.int32)
    scores = tf.gather(m, c) * (1.0 - j / K)
    cls = tf.range(K) % num_classes + 1
    ymin = 0.05 + 0.07 * j * (0.5 + 0.5 * m[0])
    xmin = 0.05 + 0.05 * j * (0.5 + 0.5 * m[1])
    boxes = tf.stack([ymin, xmin, ymin + 0.1 + 0.1 * m[2], xmin + 0.12], axis=1)
    boxes = tf.clip_by_value(boxes, 0.0, 1.0)
    order = tf.argsort(scores, direction="DESCENDING", stable=True)
    scores = tf.gather(scores, order)
    boxes = tf.gather(boxes, order)
    cls = tf.gather(cls, order)
    real = scores > 0.05
    mask = tf.cast(real, tf.float32)
    return boxes * mask[:, None], scores * mask, cls * tf.cast(real, tf.int32), real


def make_fake_saved_model(
    path: str | os.PathLike, class_names: tuple[str, ...] = DEFAULT_CLASSES, max_detections: int = 10, work: int = 0
) -> str:
    """Write a SavedModel with the contract's signatures to ``path`` and return the path.

    Detection ``j`` of an image with per-channel means ``m`` (in [0, 1]) has class ``j % C + 1``,
    score ``m[j % 3] * (1 - j / K)`` and a box on a fixed grid shifted by ``m``; rows with score
    <= 0.05 are padding (``num_detections`` counts the others; scores sorted descending).
    ``work`` > 0 adds that many 3x3 convolutions on a 320x320 resize per image to mimic a real
    model's cost (for the batching benchmark).
    """
    import tensorflow as tf

    K = int(max_detections)
    names = list(class_names)

    class FakeDetector(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.names = tf.constant(names)
            self.kernels = [
                tf.Variable(tf.random.stateless_normal([3, 3, 3, 3], seed=[i, 7]) * 0.1) for i in range(work)
            ]

        def _one(self, img: tf.Tensor) -> dict[str, tf.Tensor]:
            img = tf.ensure_shape(img, [None, None, 3])
            h = tf.cast(tf.shape(img)[0], tf.float32)
            w = tf.cast(tf.shape(img)[1], tf.float32)
            x = tf.cast(img, tf.float32) / 255.0
            m = tf.reduce_mean(x, axis=[0, 1])  # [3]
            if work:
                y = tf.image.resize(x[None], [320, 320])
                for k in self.kernels:
                    y = tf.nn.relu(tf.nn.conv2d(y, k, 1, "SAME"))
                m = m + 0.0 * tf.reduce_mean(y)
            boxes, scores, cls, real = _fake_rows(m, K, len(names))
            num = tf.reduce_sum(tf.cast(real, tf.int32))
            pixels = boxes * tf.stack([h, w, h, w])[None, :]
            cls_names = tf.where(real, tf.gather(self.names, tf.maximum(cls - 1, 0)), tf.constant(""))
            return {
                "detection_boxes": boxes,
                "detection_boxes_pixels": pixels,
                "detection_classes": cls,
                "detection_class_names": cls_names,
                "detection_scores": scores,
                "num_detections": num,
            }

        def _sig(self) -> dict[str, tf.TensorSpec]:
            return {
                "detection_boxes": tf.TensorSpec([K, 4], tf.float32),
                "detection_boxes_pixels": tf.TensorSpec([K, 4], tf.float32),
                "detection_classes": tf.TensorSpec([K], tf.int32),
                "detection_class_names": tf.TensorSpec([K], tf.string),
                "detection_scores": tf.TensorSpec([K], tf.float32),
                "num_detections": tf.TensorSpec([], tf.int32),
            }

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="encoded_images")])
        def serve_encoded(self, encoded_images):
            def one(b):
                return self._one(tf.io.decode_image(b, channels=3, expand_animations=False))

            return tf.map_fn(one, encoded_images, fn_output_signature=self._sig())

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
        def serve_tensor(self, images):
            return tf.map_fn(self._one, images, fn_output_signature=self._sig())

    module = FakeDetector()
    path = str(path)
    tf.saved_model.save(
        module,
        path,
        signatures={"serving_default": module.serve_encoded, "image_tensor": module.serve_tensor},
    )
    return path


def make_fake_run(
    run_dir: str | os.PathLike,
    saved_model_src: str | None = None,
    test_ap: float = 0.30,
    parity_passed: bool | dict[str, bool] = True,
    status: str = "complete",
    run_id: str | None = None,
    dataset_sha256: str = "d" * 64,
    code_version: str = "0123456789abcdef",
) -> str:
    """Write a run folder as docs/contracts.md describes and return its path.

    ``saved_model_src``: an existing SavedModel folder copied into ``export/saved_model`` (made
    with :func:`make_fake_saved_model` when None). ``test_ap`` sets ``evaluation/test/metrics.json``
    AP (AP50 = AP + 0.25); ``parity_passed`` sets the ``passed`` flags of ``export/parity.json``
    (a bool for both variants, or ``{"float": .., "int8": ..}``).
    """
    import shutil

    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    rid = run_id or run.name
    manifest: dict[str, Any] = {
        "id": rid,
        "project": "detops-test",
        "created_at": "2026-11-22T12:00:00+00:00",
        "status": status,
        "stages": {"prepare": "complete", "train": "complete", "evaluate": "complete", "export": "complete"},
        "inputs": {
            "dataset": {"path": "/data/bccd", "format": "voc", "sha256": dataset_sha256},
            "config_sha256": "c" * 64,
        },
        "versions": {"python": "3.11", "tensorflow": "2.20.0", "tf-models-official": "2.20.0", "detops": "0.1.0"},
        "code_version": code_version,
        "config": {"model": {"preset": "retinanet_mobilenetv2_fpn_320"}, "train": {"steps": 5, "batch_size": 2}},
    }
    storage.write_json(str(run / "run.json"), manifest)
    for split, ap in (("train", test_ap + 0.05), ("val", test_ap + 0.01), ("test", test_ap)):
        storage.write_json(
            str(run / "evaluation" / split / "metrics.json"),
            {
                "AP": ap,
                "AP50": ap + 0.25,
                "AP75": ap * 0.8,
                "APs": -1.0,
                "APm": ap,
                "APl": ap,
                "AR1": ap,
                "AR10": ap,
                "AR100": ap,
                "per_class": {n: {"AP": ap, "AP50": ap + 0.25} for n in DEFAULT_CLASSES},
                "num_images": 10,
                "checkpoint": "ckpt-5",
            },
        )
    export = run / "export"
    export.mkdir(exist_ok=True)
    if saved_model_src is None:
        make_fake_saved_model(export / "saved_model")
    else:
        shutil.copytree(saved_model_src, export / "saved_model", dirs_exist_ok=True)
    write_fake_parity(export, parity_passed)
    from training.manifest import compute_manifest, manifest_digest

    # as the export stage records it (training/pipeline.py): the digest of the files it evaluated
    manifest["stages"]["export"] = {"status": "complete", "artifact_sha256": manifest_digest(compute_manifest(str(export)))}
    storage.write_json(str(run / "run.json"), manifest)
    return str(run)


def make_fake_tflite(path: str | os.PathLike, input_size: int = 64, max_detections: int = 10) -> str:
    """Write a TFLite model with the export's interface (training/export.py) to ``path``; return the path.

    Signature ``serving_default``: input ``images`` float32 ``[1, S, S, 3]`` (normalized, padded);
    outputs ``detection_boxes`` ``[1, K, 4]`` (ymin, xmin, ymax, xmax in pixels of the padded input),
    ``detection_classes`` ``[1, K]`` (0-based class index as float: label-map id - 1),
    ``detection_scores`` ``[1, K]``, ``num_detections`` ``[1]``. Detection ``j`` has label-map id ``j % 3 + 1`` and score
    ``sigmoid(m[j % 3]) * (1 - j / K)`` with ``m`` the image's per-channel mean, so results depend on
    the image content, like :func:`make_fake_saved_model`'s.
    """
    import tempfile

    import tensorflow as tf

    s, k = int(input_size), int(max_detections)

    class FakeTFLite(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, s, s, 3], tf.float32, name="images")])
        def detect(self, images):
            m = tf.reduce_mean(images[0], axis=[0, 1])  # [3]
            j = tf.range(k, dtype=tf.float32)
            c = tf.range(k) % 3
            scores = tf.sigmoid(tf.gather(m, c)) * (1.0 - j / k)
            span = s / 2.0
            ymin = 1.0 + j * (span / k) * (0.6 + 0.2 * tf.sigmoid(m[0]))
            xmin = 1.0 + j * (span / k) * (0.6 + 0.2 * tf.sigmoid(m[1]))
            boxes = tf.stack([ymin, xmin, ymin + span / 3.0, xmin + span / 2.5], axis=1)
            return {
                "detection_boxes": boxes[None],
                "detection_classes": tf.cast(c, tf.float32)[None],
                "detection_scores": scores[None],
                "num_detections": tf.constant([float(k)]),
            }

    module = FakeTFLite()
    with tempfile.TemporaryDirectory(prefix="detops-fake-tflite-") as tmp:
        tf.saved_model.save(module, tmp, signatures={"serving_default": module.detect.get_concrete_function()})
        data = tf.lite.TFLiteConverter.from_saved_model(tmp).convert()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(data)
    return str(path)


def write_fake_parity(export_dir: str | os.PathLike, parity_passed: bool | dict[str, bool] = True) -> None:
    """Write ``export/parity.json`` in the export stage's format (training/pipeline.py): one entry per
    variant (``float``, ``int8``; a dict ``{variant: passed}`` picks them) with AP/AP50 of both models,
    the deltas, the bound (``max_delta``, AP units) and ``passed``; then the overall ``passed``."""
    flags = parity_passed if isinstance(parity_passed, dict) else {"float": parity_passed, "int8": parity_passed}
    parity: dict[str, Any] = {
        v: {"AP50_savedmodel": 0.5, "AP50_tflite": 0.5, "delta_AP50": 0.0, "AP_savedmodel": 0.3, "AP_tflite": 0.3,
            "delta_AP": 0.0, "max_delta": 0.02, "passed": ok}
        for v, ok in flags.items()
    }
    parity["passed"] = all(flags.values())
    (Path(export_dir) / "parity.json").write_text(json.dumps(parity))


def add_fake_tflite_export(
    export_dir: str | os.PathLike,
    parity_passed: bool | dict[str, bool] = True,
    class_names: tuple[str, ...] = DEFAULT_CLASSES,
    tflite_src: str | None = None,
) -> str:
    """Add ``model.tflite``, ``model_int8.tflite`` (the same fake float model), ``label_map.pbtxt`` and
    ``parity.json`` (``passed`` per variant, as :func:`make_fake_run`) to an export folder; return it.

    ``tflite_src``: an existing fake TFLite file to copy (else one is made with :func:`make_fake_tflite`).
    """
    import shutil

    from training.annotations.writers import label_map_pbtxt

    export = Path(export_dir)
    export.mkdir(parents=True, exist_ok=True)
    src = tflite_src or make_fake_tflite(export / "model.tflite")
    for name in ("model.tflite", "model_int8.tflite"):
        if Path(src) != export / name:
            shutil.copyfile(src, export / name)
    (export / "label_map.pbtxt").write_text(label_map_pbtxt(list(class_names)))
    write_fake_parity(export, parity_passed)
    return str(export)
