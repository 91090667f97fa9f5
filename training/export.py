"""Export: SavedModel (two serving signatures), TFLite float and int8, and a parity check.

* ``export/saved_model/``: :class:`training.inference.DetectorModule` saved with
  ``serving_default`` (``encoded_images``: string ``[N]``) and ``image_tensor`` (``images``: uint8
  ``[N, H, W, 3]``); outputs as in docs/contracts.md.
* ``export/model.tflite`` (float32) and ``export/model_int8.tflite`` (post-training integer
  quantization with float fallback, calibrated on the training split, as Model Garden's
  ``export_tflite_lib``): input float32 ``[1, Hp, Wp, 3]``, the image already normalized
  (ImageNet mean/std), resized with its aspect ratio kept and zero-padded (see
  :meth:`DetectorModule.preprocess_one`); NMS is TFLite's built-in ``TFLite_Detection_PostProcess``.
  Outputs ``detection_boxes`` (``[1, K, 4]`` ymin, xmin, ymax, xmax in pixels of the padded input),
  ``detection_classes`` (label-map ids), ``detection_scores``, ``num_detections``.
* ``export/parity.json``: COCO AP/AP50 of each TFLite model vs the SavedModel on the test split;
  a model passes when both deltas are within ``max_delta``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable

import numpy as np

DEFAULT_MAX_DELTA = 0.02  # AP points (absolute), TFLite vs SavedModel on the test split


def save_saved_model(module, out_dir: str) -> str:
    """Save ``module`` (a DetectorModule) with its two signatures; return ``out_dir``."""
    import tensorflow as tf

    signatures = {
        "serving_default": module.detect_encoded.get_concrete_function(),
        "image_tensor": module.detect_images.get_concrete_function(),
    }
    tf.saved_model.save(module, out_dir, signatures=signatures)
    return out_dir


def _tflite_params(params, max_detections: int):
    p = copy.deepcopy(params)
    gen = p.task.model.detection_generator
    gen.nms_version = "tflite"
    gen.tflite_post_processing.max_detections = max_detections
    gen.tflite_post_processing.max_classes_per_detection = 1
    gen.tflite_post_processing.detections_per_class = max_detections
    gen.tflite_post_processing.use_regular_nms = False
    gen.tflite_post_processing.nms_score_threshold = gen.pre_nms_score_threshold
    gen.tflite_post_processing.nms_iou_threshold = gen.nms_iou_threshold
    return p


def tflite_module(params, model):
    """A ``tf.Module`` holding a batch-1 copy of ``model`` (TFLite NMS) and its ``detect`` function.

    ``detect`` takes the preprocessed image (see the module docstring) and is what gets converted.
    """
    import tensorflow as tf

    from training.inference import build_anchors, build_model, padded_size

    tparams = _tflite_params(params, int(params.task.model.detection_generator.max_num_detections))
    tmodel = build_model(tparams, batch_size=1)
    tmodel.set_weights(model.get_weights())
    hp, wp = padded_size(params)
    anchors = build_anchors(tparams, 1)

    holder = tf.Module()
    holder.model = tmodel

    @tf.function(input_signature=[tf.TensorSpec([1, hp, wp, 3], tf.float32, name="images")])
    def detect(images):
        out = tmodel(images, image_shape=tf.constant([[hp, wp]], tf.float32), anchor_boxes=anchors, training=False)
        return {
            "detection_boxes": out["detection_boxes"],
            "detection_classes": out["detection_classes"],
            "detection_scores": out["detection_scores"],
            "num_detections": out["num_detections"],
        }

    holder.detect = detect
    return holder


def convert_tflite(params, model, quant: str | None, calibration_steps: int = 100) -> bytes:
    """Convert to TFLite with Model Garden's converter; ``quant`` None (float32) or ``"int8"``.

    The batch-1 TFLite graph is saved as a temporary SavedModel first (so the TFLite model keeps a
    ``serving_default`` signature with named inputs and outputs). int8 calibration reads
    ``params.task.train_data`` (the training split TFRecords) through Model Garden's own input
    pipeline, ``calibration_steps`` images.
    """
    import tempfile

    import tensorflow as tf
    from official.vision.serving import export_tflite_lib

    holder = tflite_module(params, model)
    with tempfile.TemporaryDirectory(prefix="detops-tflite-") as tmp:
        tf.saved_model.save(holder, tmp, signatures={"serving_default": holder.detect.get_concrete_function()})
        return export_tflite_lib.convert_tflite_model(
            saved_model_dir=tmp, quant_type=quant, params=copy.deepcopy(params), calibration_steps=calibration_steps
        )


def tflite_detector(tflite_path: str, module) -> Callable[[object], dict]:
    """A ``detect(encoded_images)`` function running a TFLite model one image at a time.

    Preprocessing is ``module.preprocess_one`` (the SavedModel's); boxes are mapped back to the
    input image's pixels with the resize scale, so outputs match ``DetectorModule`` outputs.
    """
    import tensorflow as tf

    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover
        Interpreter = tf.lite.Interpreter
    interp = Interpreter(model_path=tflite_path, num_threads=os.cpu_count() or 1)
    runner = interp.get_signature_runner()

    def detect(encoded_images) -> dict:
        rows = []
        for data in encoded_images.numpy():
            img = tf.io.decode_image(data, channels=3, expand_animations=False)
            x, info = module.preprocess_one(img)
            out = runner(images=x.numpy()[None])
            info = info.numpy()
            scale = np.tile(info[2], 2)
            size = np.tile(info[0], 2)
            px = np.clip(out["detection_boxes"][0] / scale, 0, size)
            rows.append(
                {
                    "detection_boxes_pixels": px,
                    "detection_boxes": px / np.maximum(size, 1),
                    "detection_classes": out["detection_classes"][0].astype(np.int32),
                    "detection_scores": out["detection_scores"][0],
                    "num_detections": np.int32(out["num_detections"][0]),
                }
            )
        k = max(len(r["detection_scores"]) for r in rows)

        def pad(a, shape_tail):
            z = np.zeros((k, *shape_tail), dtype=a.dtype)
            z[: len(a)] = a
            return z

        return {
            "detection_boxes_pixels": tf.constant(np.stack([pad(r["detection_boxes_pixels"], (4,)) for r in rows])),
            "detection_boxes": tf.constant(np.stack([pad(r["detection_boxes"], (4,)) for r in rows])),
            "detection_classes": tf.constant(np.stack([pad(r["detection_classes"], ()) for r in rows])),
            "detection_scores": tf.constant(np.stack([pad(r["detection_scores"], ()) for r in rows])),
            "num_detections": tf.constant(np.array([r["num_detections"] for r in rows])),
        }

    return detect


def parity_check(
    savedmodel_metrics: dict, tflite_metrics: dict, max_delta: float = DEFAULT_MAX_DELTA
) -> dict:
    """Compare TFLite's test-split COCO AP/AP50 with the SavedModel's.

    Returns ``{"AP_savedmodel", "AP_tflite", "delta_AP", "AP50_savedmodel", "AP50_tflite",
    "delta_AP50", "passed"}``; deltas are ``tflite - savedmodel`` (AP points in [0, 1]), and the
    check passes when both ``|delta|`` are at most ``max_delta``.
    """
    out = {}
    for key in ("AP", "AP50"):
        a, b = float(savedmodel_metrics[key]), float(tflite_metrics[key])
        out[f"{key}_savedmodel"] = a
        out[f"{key}_tflite"] = b
        out[f"delta_{key}"] = b - a
    out["passed"] = bool(abs(out["delta_AP"]) <= max_delta and abs(out["delta_AP50"]) <= max_delta)
    return out


