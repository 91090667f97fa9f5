"""Known values of training.evaluate.coco_metrics on a one-image COCO case computed by hand.

Boxes are COCO ``[x, y, w, h]`` pixels. IoU of a box ``[x, y, w, 100]`` inside ``[x, y, 100, 100]`` is
``w / 100``. COCOeval matches a detection at IoU threshold ``t`` when IoU >= t, over the ten
thresholds 0.50:0.05:0.95, and averages interpolated precision at 101 recall points 0:0.01:1.

* class "a" (2 ground truths): a 0.9-score detection at IoU 0.52 with the first, a 0.8-score
  detection equal to the second. At IoU 0.50 both match: precision 1 at every recall, AP50 = 1.
  At IoU 0.55 and above the first is a false positive: recall reaches 0.5 at precision 0.5, so the
  51 recall points 0..0.50 score 0.5 and the other 50 score 0: AP_t = 25.5 / 101 for 9 thresholds.
* class "b" (2 ground truths): one detection at IoU 0.78 with the first. Matched at the six
  thresholds 0.50..0.75 (recall 0.5 at precision 1: AP_t = 51 / 101), unmatched at 0.80..0.95.
"""

from __future__ import annotations

import pytest

from training.evaluate import coco_metrics


def _ann(i: int, cat: int, bbox: list[float]) -> dict:
    return {"id": i, "image_id": 1, "category_id": cat, "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0}


GT = {
    "images": [{"id": 1, "width": 640, "height": 640, "file_name": "one.jpg"}],
    "categories": [{"id": 2, "name": "b"}, {"id": 1, "name": "a"}],  # out of id order on purpose
    "annotations": [
        _ann(1, 1, [0, 0, 100, 100]),
        _ann(2, 1, [0, 300, 100, 100]),
        _ann(3, 2, [300, 0, 100, 100]),
        _ann(4, 2, [300, 300, 100, 100]),
    ],
}
RESULTS = [
    {"image_id": 1, "category_id": 1, "bbox": [0, 0, 52, 100], "score": 0.9},
    {"image_id": 1, "category_id": 1, "bbox": [0, 300, 100, 100], "score": 0.8},
    {"image_id": 1, "category_id": 2, "bbox": [300, 0, 78, 100], "score": 0.7},
]

A_AP50 = 1.0
A_AP = (1.0 + 9 * 25.5 / 101) / 10
B_AP50 = 51 / 101
B_AP = 6 * (51 / 101) / 10


def test_per_class_ap_and_ap50_match_the_hand_computed_values():
    metrics, precision = coco_metrics(GT, RESULTS)
    assert precision.shape == (10, 101, 2, 4, 3)
    assert metrics["per_class"]["a"] == {"AP": pytest.approx(A_AP, abs=1e-9), "AP50": pytest.approx(A_AP50, abs=1e-9)}
    assert metrics["per_class"]["b"] == {"AP": pytest.approx(B_AP, abs=1e-9), "AP50": pytest.approx(B_AP50, abs=1e-9)}


def test_overall_ap_and_ap50_are_the_class_means():
    metrics, _ = coco_metrics(GT, RESULTS)
    assert metrics["AP50"] == pytest.approx((A_AP50 + B_AP50) / 2, abs=1e-9)
    assert metrics["AP"] == pytest.approx((A_AP + B_AP) / 2, abs=1e-9)
    assert metrics["num_detections"] == 3


def test_no_detections_gives_zero_per_class_and_no_precision_array():
    metrics, precision = coco_metrics(GT, [])
    assert precision is None
    assert metrics["per_class"] == {"a": {"AP": 0.0, "AP50": 0.0}, "b": {"AP": 0.0, "AP50": 0.0}}
    assert metrics["AP"] == 0.0 and metrics["num_detections"] == 0
