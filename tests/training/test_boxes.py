"""Box conversions: known values and round trips (hypothesis property tests)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training import boxes

coord = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False)
size = st.floats(min_value=1.0, max_value=1e4, allow_nan=False, allow_infinity=False)


@st.composite
def xyxy_in_image(draw):
    w, h = draw(size), draw(size)
    xs = sorted([draw(st.floats(0, 1)) * w, draw(st.floats(0, 1)) * w])
    ys = sorted([draw(st.floats(0, 1)) * h, draw(st.floats(0, 1)) * h])
    return [xs[0], ys[0], xs[1], ys[1]], w, h


# ---------------------------------------------------------------------------------------- known values


def test_known_values():
    # A 640x480 image, a box from (10, 20) to (110, 220).
    xyxy = [10, 20, 110, 220]
    assert boxes.xyxy_to_xywh(xyxy).tolist() == [10, 20, 100, 200]
    assert boxes.xywh_to_xyxy([10, 20, 100, 200]).tolist() == xyxy
    assert boxes.yxyx_to_xywh([20, 10, 220, 110]).tolist() == [10, 20, 100, 200]
    np.testing.assert_allclose(boxes.xyxy_to_normalized_yxyx(xyxy, 640, 480), [20 / 480, 10 / 640, 220 / 480, 110 / 640])
    np.testing.assert_allclose(boxes.normalized_yxyx_to_xyxy([0.25, 0.5, 0.75, 1.0], 640, 480), [320, 120, 640, 360])
    np.testing.assert_allclose(boxes.xyxy_to_normalized_xyxy(xyxy, 640, 480), [10 / 640, 20 / 480, 110 / 640, 220 / 480])
    np.testing.assert_allclose(boxes.normalized_xyxy_to_xyxy([0.5, 0.25, 1.0, 0.75], 640, 480), [320, 120, 640, 360])


def test_clip_keeps_normalized_boxes_inside_the_image():
    out = boxes.xyxy_to_normalized_xyxy([-5, 10, 700, 500], 640, 480, clip=True)
    np.testing.assert_allclose(out, [0.0, 10 / 480, 1.0, 1.0])
    out = boxes.xyxy_to_normalized_yxyx([-5, 10, 700, 500], 640, 480, clip=True)
    np.testing.assert_allclose(out, [10 / 480, 0.0, 1.0, 1.0])


def test_batches_keep_their_shape():
    batch = np.arange(2 * 3 * 4, dtype=float).reshape(2, 3, 4)
    assert boxes.xyxy_to_xywh(batch).shape == (2, 3, 4)
    np.testing.assert_allclose(boxes.xyxy_to_xywh(batch)[1, 2], boxes.xyxy_to_xywh(batch[1, 2]))


def test_bad_shapes_and_sizes_are_refused():
    with pytest.raises(ValueError, match="4 coordinates on the last axis"):
        boxes.xyxy_to_xywh([1, 2, 3])
    with pytest.raises(ValueError, match="width and height must be > 0"):
        boxes.xyxy_to_normalized_xyxy([0, 0, 1, 1], 0, 10)


# ------------------------------------------------------------------------------------------ round trips


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(coord, min_size=4, max_size=4))
def test_xywh_round_trip(b):
    np.testing.assert_allclose(boxes.xywh_to_xyxy(boxes.xyxy_to_xywh(b)), b, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(boxes.xyxy_to_xywh(boxes.xywh_to_xyxy(b)), b, rtol=1e-9, atol=1e-6)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(xyxy_in_image())
def test_normalized_yxyx_round_trip(case):
    b, w, h = case
    n = boxes.xyxy_to_normalized_yxyx(b, w, h)
    assert ((n >= 0) & (n <= 1 + 1e-12)).all()
    np.testing.assert_allclose(boxes.normalized_yxyx_to_xyxy(n, w, h), b, rtol=1e-9, atol=1e-6)
    # Clipping changes nothing for a box inside the image.
    np.testing.assert_allclose(boxes.xyxy_to_normalized_yxyx(b, w, h, clip=True), n, atol=1e-12)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(xyxy_in_image())
def test_normalized_xyxy_round_trip(case):
    b, w, h = case
    n = boxes.xyxy_to_normalized_xyxy(b, w, h)
    np.testing.assert_allclose(boxes.normalized_xyxy_to_xyxy(n, w, h), b, rtol=1e-9, atol=1e-6)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(xyxy_in_image())
def test_detector_output_to_coco_agrees_with_the_ground_truth_path(case):
    """A detection equal to a ground-truth box gets the same COCO bbox as that box."""
    b, w, h = case
    pixel_yxyx = boxes.normalized_yxyx_to_xyxy(boxes.xyxy_to_normalized_yxyx(b, w, h), w, h)[[1, 0, 3, 2]]
    np.testing.assert_allclose(boxes.yxyx_to_xywh(pixel_yxyx), boxes.xyxy_to_xywh(b), rtol=1e-9, atol=1e-6)
