"""Export: SavedModel (two serving signatures), TFLite float and int8, and a parity check.

* ``export/saved_model/``: :class:`training.inference.DetectorModule` saved with
  ``serving_default`` (``encoded_images``: string ``[N]``) and ``image_tensor`` (``images``: uint8
  ``[N, H, W, 3]``); outputs as in docs/contracts.md.
* ``export/model.tflite`` (float32) and ``export/model_int8.tflite`` (post-training integer
  quantization with float fallback, calibrated on the training split, as Model Garden's
  ``export_tflite_lib``): input float32 ``[1, Hp, Wp, 3]``, the image already normalized
  (ImageNet mean/std), resized with its aspect ratio kept and zero-padded (see
  :meth:`DetectorModule.preprocess_one`); NMS is TFLite's built-in ``TFLite_Detection_PostProcess``
  in its per-class ("regular") mode, the same algorithm and thresholds as the SavedModel's NMS.
  Outputs ``detection_boxes`` (``[1, K, 4]`` ymin, xmin, ymax, xmax in pixels of the padded input),
  ``detection_classes`` (0-based foreground class index: label-map id - 1), ``detection_scores``,
  ``num_detections``; only the first ``num_detections`` rows are defined.
* ``export/parity.json``: COCO AP/AP50 of each TFLite model vs the SavedModel on the test split;
  a model passes when both deltas are within ``max_delta``.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from training.cpus import available_cpus

DEFAULT_MAX_DELTA = 0.01  # AP points (absolute), float TFLite vs SavedModel on the test split
#: SavedModel detections on the test split below which a parity comparison says nothing (0 vs 0 AP
#: "agrees" for a model that finds nothing); the run config's ``export.parity_min_detections``.
DEFAULT_MIN_DETECTIONS = 10


def save_saved_model(module, out_dir: str) -> str:
    """Save ``module`` (a DetectorModule) with its two signatures; return ``out_dir``."""
    import tensorflow as tf

    signatures = {
        "serving_default": module.detect_encoded.get_concrete_function(),
        "image_tensor": module.detect_images.get_concrete_function(),
    }
    tf.saved_model.save(module, out_dir, signatures=signatures)
    return out_dir


def tflite_postprocess_config(params) -> dict:
    """Settings of TFLite's ``TFLite_Detection_PostProcess`` that reproduce the SavedModel's NMS.

    The SavedModel uses Model Garden's per-class NMS (``detection_generator.nms_version`` ``v2``:
    per class, scores above ``pre_nms_score_threshold``, IoU ``nms_iou_threshold``, at most
    ``max_num_detections`` overall). The TFLite op's *regular* NMS (``use_regular_nms=True``) is the
    same algorithm; its *fast* NMS (``use_regular_nms=False``, Model Garden's default for TFLite) is
    class-agnostic, so a WBC overlapping an RBC suppresses it, which cost 0.06-0.10 AP50 on BCCD.
    """
    gen = params.task.model.detection_generator
    k = int(gen.max_num_detections)
    return {
        "max_detections": k,
        "max_classes_per_detection": 1,
        "detections_per_class": k,
        "use_regular_nms": True,
        "nms_score_threshold": float(gen.pre_nms_score_threshold),
        "nms_iou_threshold": float(gen.nms_iou_threshold),
    }


def _drop_background(raw_scores: dict, num_classes: int) -> dict:
    """Remove Model Garden's class 0 (background) from per-level logits ``[1, H, W, A * C]``.

    RetinaNet trains class 0 as "background" (positive on every unmatched anchor), so its sigmoid is
    near 1 almost everywhere. The TFLite op treats every input column as a real class, so class 0
    must not reach it; the op's 0-based class indices then map to label-map ids by adding 1.
    """
    import tensorflow as tf

    out = {}
    for level, x in raw_scores.items():
        shape = tf.shape(x)
        per_anchor = tf.reshape(x, [shape[0], shape[1], shape[2], -1, num_classes])[..., 1:]
        out[level] = tf.reshape(per_anchor, [shape[0], shape[1], shape[2], -1])
    return out


def tflite_module(params, model):
    """A ``tf.Module`` holding ``model`` and a batch-1 ``detect`` function for TFLite conversion.

    ``detect`` takes the preprocessed image (see the module docstring) and runs the backbone,
    decoder and head of ``model`` (weights shared, no copy), then TFLite's custom NMS op with the
    settings of :func:`tflite_postprocess_config` on the foreground classes only.
    """
    import tensorflow as tf
    from official.vision.modeling.layers import detection_generator as dg

    from training.inference import build_anchors, padded_size

    hp, wp = padded_size(params)
    anchors = build_anchors(params)
    num_classes = int(params.task.model.num_classes)
    config = tflite_postprocess_config(params)

    holder = tf.Module()
    holder.model = model

    @tf.function(input_signature=[tf.TensorSpec([1, hp, wp, 3], tf.float32, name="images")])
    def detect(images):
        features = model.decoder(model.backbone(images, training=False), training=False)
        raw_scores, raw_boxes = model.head(features, training=False)[:2]
        boxes, classes, scores, num = dg._generate_detections_tflite(  # noqa: SLF001  (the op's only builder)
            raw_boxes, _drop_background(raw_scores, num_classes), anchors, dict(config), None
        )
        return {
            "detection_boxes": boxes,
            "detection_classes": classes,
            "detection_scores": scores,
            "num_detections": num,
        }

    holder.detect = detect
    return holder


@contextlib.contextmanager
def tflite_graph(params, model) -> Iterator[str]:
    """The batch-1 graph of :func:`tflite_module` saved once as a temporary SavedModel; yields its folder.

    Both TFLite variants convert from it (see :func:`convert_tflite`), so the graph is traced and
    saved once per export; the folder is removed when the ``with`` block ends. Saving it as a
    SavedModel (not converting the concrete function) keeps a ``serving_default`` signature with
    named inputs and outputs in the TFLite model.
    """
    import tempfile

    import tensorflow as tf

    holder = tflite_module(params, model)
    with tempfile.TemporaryDirectory(prefix="detops-tflite-") as tmp:
        tf.saved_model.save(holder, tmp, signatures={"serving_default": holder.detect.get_concrete_function()})
        yield tmp


def convert_tflite(params, graph_dir: str, quant: str | None, calibration_steps: int = 100) -> bytes:
    """Convert the graph saved by :func:`tflite_graph` with Model Garden's converter; return the model bytes.

    ``quant`` None (float32) or ``"int8"``. int8 calibration reads ``params.task.train_data`` (the
    training split TFRecords) through Model Garden's own input pipeline, ``calibration_steps``
    images; every random source is seeded from the data seed first, so a conversion does not depend
    on what ran before it.
    """
    from official.vision.serving import export_tflite_lib

    from training.train import seed_everything

    seed_everything(params.task.train_data.seed)  # int8 calibration reads shuffled, augmented images
    return export_tflite_lib.convert_tflite_model(
        saved_model_dir=graph_dir, quant_type=quant, params=copy.deepcopy(params), calibration_steps=calibration_steps
    )


def nms_safe_threads(threads: int, num_classes: int) -> int:
    """Interpreter threads with which TFLite's regular NMS keeps every class.

    LiteRT's ``TFLite_Detection_PostProcess`` in regular-NMS mode hands the classes to ``threads``
    workers (``tensorflow/lite/kernels/detection_postprocess.cc``, ``NonMaxSuppressionWorkerTask``):
    worker ``i`` takes class ``i``, then ``++next_col`` on a counter that starts at ``threads``, so
    class index ``threads`` is never processed when ``1 < threads < num_classes``. Measured here
    (ai-edge-litert 2.3.0 and tf.lite 2.20): with 2 threads the third BCCD class (WBC) never came out
    of the float or the int8 model, -0.16 test AP50 against the SavedModel. Safe counts are 1 and any
    count >= ``num_classes``; this returns ``threads`` when it is safe, else 1 (the convolutions of
    the default model gain little from a second thread on CPU: 42 ms vs 44 ms per image).

    Args:
        threads: requested interpreter threads (values below 1 mean 1).
        num_classes: foreground classes of the model (label-map entries; no background).
    """
    t = max(1, int(threads))
    return 1 if 1 < t < int(num_classes) else t


def make_interpreter(model_path: str, threads: int, num_classes: int) -> Any:
    """A TFLite interpreter on ``model_path`` (tensors allocated), with XNNPACK and
    :func:`nms_safe_threads` threads.

    LiteRT's ``ai_edge_litert`` when installed, else ``tf.lite.Interpreter`` (same API; XNNPACK is the
    default CPU delegate of both). ``num_classes``: foreground classes (the model's NMS classes).

    Raises:
        ConfigError: ``model_path`` is not a loadable model (empty, truncated), naming the file.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - depends on the image
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    try:
        interp = Interpreter(model_path=model_path, num_threads=nms_safe_threads(threads, num_classes))
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as e:  # empty, truncated or not a flatbuffer
        from training.errors import ConfigError

        raise ConfigError(f"{model_path}: not a loadable TFLite model ({str(e).splitlines()[0][:200]})") from None
    return interp


def tflite_detector(tflite_path: str, module) -> Callable[[object], dict]:
    """A ``detect(encoded_images)`` function running a TFLite model one image at a time.

    Preprocessing is ``module.preprocess_one`` (the SavedModel's); boxes are mapped back to the
    input image's pixels with the resize scale, so outputs match ``DetectorModule`` outputs.
    """
    import tensorflow as tf

    num_classes = int(module.class_names.shape[0]) - 1  # class_names[0] is the background's ""
    runner = make_interpreter(tflite_path, available_cpus(), num_classes).get_signature_runner()

    def detect(encoded_images) -> dict:
        rows = []
        for data in encoded_images.numpy():
            img = tf.io.decode_image(data, channels=3, expand_animations=False)
            x, info = module.preprocess_one(img)
            out = runner(images=x.numpy()[None])
            info = info.numpy()
            scale = np.tile(info[2], 2)
            size = np.tile(info[0], 2)
            # Only the first num_detections rows are written by the op; the rest of its output
            # buffers is uninitialized arena memory (the NaN class values seen before): never read it.
            n = int(out["num_detections"][0])
            px = np.clip(out["detection_boxes"][0, :n] / scale, 0, size)
            rows.append(
                {
                    "detection_boxes_pixels": px,
                    "detection_boxes": px / np.maximum(size, 1),
                    "detection_classes": out["detection_classes"][0, :n].astype(np.int32) + 1,
                    "detection_scores": out["detection_scores"][0, :n],
                    "num_detections": np.int32(n),
                }
            )
        k = max(1, max(len(r["detection_scores"]) for r in rows))

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
    savedmodel_metrics: dict,
    tflite_metrics: dict,
    max_delta: float = DEFAULT_MAX_DELTA,
    min_detections: int = DEFAULT_MIN_DETECTIONS,
) -> dict:
    """Compare TFLite's test-split COCO AP/AP50 with the SavedModel's.

    Returns ``{"AP_savedmodel", "AP_tflite", "delta_AP", "AP50_savedmodel", "AP50_tflite",
    "delta_AP50", "passed"}``; deltas are ``tflite - savedmodel`` (AP points in [0, 1]), and the
    check passes when both ``|delta|`` are at most ``max_delta``.

    When ``savedmodel_metrics`` has ``num_detections`` (the SavedModel's detections on the split,
    as :func:`training.evaluate.coco_metrics` counts them), the result also has
    ``"detections_savedmodel"``, ``"min_detections"`` and ``"measurable"``: with fewer than
    ``min_detections`` detections the comparison is not measurable and ``passed`` is False.
    """
    out = {}
    for key in ("AP", "AP50"):
        a, b = float(savedmodel_metrics[key]), float(tflite_metrics[key])
        out[f"{key}_savedmodel"] = a
        out[f"{key}_tflite"] = b
        out[f"delta_{key}"] = b - a
    out["passed"] = bool(abs(out["delta_AP"]) <= max_delta and abs(out["delta_AP50"]) <= max_delta)
    if "num_detections" in savedmodel_metrics:
        n = int(savedmodel_metrics["num_detections"])
        out.update(detections_savedmodel=n, min_detections=int(min_detections), measurable=n >= min_detections)
        out["passed"] = out["passed"] and out["measurable"]
    return out


