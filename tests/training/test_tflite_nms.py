"""TFLite's regular NMS keeps every class whatever thread count is asked for.

LiteRT's ``TFLite_Detection_PostProcess`` skips class index ``threads`` when ``1 < threads <
num_classes`` (training.export.nms_safe_threads). The model here is the op alone, built the way the
export builds it (Model Garden's ``_generate_detections_tflite``), with three classes whose single
confident box each sits on its own anchor.
"""

from __future__ import annotations

import numpy as np
import pytest

from training.export import make_interpreter, nms_safe_threads


@pytest.mark.parametrize(
    ("threads", "num_classes", "expected"),
    [(1, 3, 1), (2, 3, 1), (3, 3, 3), (4, 3, 4), (2, 2, 2), (2, 1, 2), (0, 3, 1), (8, 80, 1), (80, 80, 80)],
)
def test_nms_safe_threads(threads, num_classes, expected):
    assert nms_safe_threads(threads, num_classes) == expected


@pytest.fixture(scope="module")
def nms_only_model(tmp_path_factory):
    """A TFLite model of the post-processing op alone: 4 anchors (one level, 2x2, one anchor per
    location, 10 px apart), 3 foreground classes; box encodings are inputs, zero = the anchor."""
    import tensorflow as tf
    from official.vision.modeling.layers import detection_generator as dg

    anchors = {"3": tf.constant([[[[0, 0, 8, 8]], [[0, 10, 8, 18]]], [[[10, 0, 18, 8]], [[10, 10, 18, 18]]]], tf.float32)}
    anchors = {"3": tf.reshape(anchors["3"], [2, 2, 4])}
    config = {"max_detections": 10, "max_classes_per_detection": 1, "detections_per_class": 10,
              "use_regular_nms": True, "nms_score_threshold": 0.05, "nms_iou_threshold": 0.5}

    class Holder(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 2, 2, 3], tf.float32, name="logits")])
        def detect(self, logits):
            boxes = tf.zeros([1, 2, 2, 4])
            b, c, s, n = dg._generate_detections_tflite({"3": boxes}, {"3": logits}, anchors, dict(config))  # noqa: SLF001
            return {"detection_boxes": b, "detection_classes": c, "detection_scores": s, "num_detections": n}

    holder = Holder()
    saved = tmp_path_factory.mktemp("nms_sm")
    tf.saved_model.save(holder, str(saved), signatures={"serving_default": holder.detect.get_concrete_function()})
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    converter.allow_custom_ops = True
    path = tmp_path_factory.mktemp("nms") / "nms.tflite"
    path.write_bytes(converter.convert())
    return str(path)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_every_class_survives_nms(nms_only_model, threads):
    # anchor k holds class k's one confident box (logit 4 ~ 0.98); anchor 3 nothing (logit -8)
    logits = np.full([1, 2, 2, 3], -8.0, np.float32)
    logits[0, 0, 0, 0] = logits[0, 0, 1, 1] = logits[0, 1, 0, 2] = 4.0
    out = make_interpreter(nms_only_model, threads, num_classes=3).get_signature_runner()(logits=logits)
    n = int(out["num_detections"][0])
    assert n == 3
    assert sorted(out["detection_classes"][0, :n].astype(int).tolist()) == [0, 1, 2]
    by_class = {int(c): out["detection_boxes"][0, i].tolist() for i, c in enumerate(out["detection_classes"][0, :n])}
    assert by_class[2] == pytest.approx([10, 0, 18, 8])  # ymin, xmin, ymax, xmax of anchor (1, 0)
