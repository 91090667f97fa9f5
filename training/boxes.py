"""Box conversions between the conventions this project meets, in one place.

Conventions (each array has the 4 coordinates on its last axis, any leading shape):

* **pixel xyxy** -- ``[xmin, ymin, xmax, ymax]`` in absolute pixels, x to the right, y down, origin at
  the top-left corner of the top-left pixel. The canonical annotation record
  (:class:`training.annotations.record.Box`) and Pascal VOC use it.
* **COCO xywh** -- ``[x, y, width, height]`` in pixels, ``(x, y)`` the top-left corner: COCO JSON's
  ``bbox`` (annotations and ``loadRes`` results; cocodataset.org/#format-data).
* **normalized yxyx** -- ``[ymin, xmin, ymax, xmax]`` as fractions of the image height/width in
  [0, 1]: TF Model Garden's and the TF Object Detection API's ``detection_boxes``.
* **pixel yxyx** -- ``[ymin, xmin, ymax, xmax]`` in pixels: ``detection_boxes_pixels`` of the exported model.
* **normalized xyxy** -- ``[xmin, ymin, xmax, ymax]`` as fractions: Azure ML data-labeling exports
  (``topX, topY, bottomX, bottomY``) and the ``image/object/bbox/*`` features of a tf.Example.

Every function takes array-likes (a list of 4 numbers or a ``[..., 4]`` array) and returns a float64
``numpy`` array of the same shape; ``width``/``height`` are the image size in pixels (> 0).
"""

from __future__ import annotations

from typing import Any

import numpy as np

ArrayLike = Any


def _boxes(b: ArrayLike) -> np.ndarray:
    a = np.asarray(b, dtype=np.float64)
    if a.shape[-1:] != (4,):
        raise ValueError(f"boxes need 4 coordinates on the last axis, got shape {a.shape}")
    return a


def xywh_to_xyxy(b: ArrayLike) -> np.ndarray:
    """COCO ``[x, y, w, h]`` -> pixel ``[xmin, ymin, xmax, ymax]``."""
    a = _boxes(b)
    x, y, w, h = np.moveaxis(a, -1, 0)
    return np.stack([x, y, x + w, y + h], axis=-1)


def xyxy_to_xywh(b: ArrayLike) -> np.ndarray:
    """Pixel ``[xmin, ymin, xmax, ymax]`` -> COCO ``[x, y, w, h]`` (a negative size stays negative)."""
    a = _boxes(b)
    x0, y0, x1, y1 = np.moveaxis(a, -1, 0)
    return np.stack([x0, y0, x1 - x0, y1 - y0], axis=-1)


def yxyx_to_xywh(b: ArrayLike) -> np.ndarray:
    """Pixel ``[ymin, xmin, ymax, xmax]`` (a detector's output) -> COCO ``[x, y, w, h]``."""
    a = _boxes(b)
    y0, x0, y1, x1 = np.moveaxis(a, -1, 0)
    return np.stack([x0, y0, x1 - x0, y1 - y0], axis=-1)


def xyxy_to_normalized_yxyx(b: ArrayLike, width: float, height: float, clip: bool = False) -> np.ndarray:
    """Pixel ``[xmin, ymin, xmax, ymax]`` -> normalized ``[ymin, xmin, ymax, xmax]``; ``clip`` to [0, 1]."""
    return _normalize(_boxes(b)[..., [1, 0, 3, 2]], np.array([height, width, height, width], dtype=np.float64), clip)


def normalized_yxyx_to_xyxy(b: ArrayLike, width: float, height: float) -> np.ndarray:
    """Normalized ``[ymin, xmin, ymax, xmax]`` -> pixel ``[xmin, ymin, xmax, ymax]``."""
    a = _boxes(b)[..., [1, 0, 3, 2]]
    return a * np.array([width, height, width, height], dtype=np.float64)


def xyxy_to_normalized_xyxy(b: ArrayLike, width: float, height: float, clip: bool = False) -> np.ndarray:
    """Pixel ``[xmin, ymin, xmax, ymax]`` -> normalized ``[xmin, ymin, xmax, ymax]``; ``clip`` to [0, 1]."""
    return _normalize(_boxes(b), np.array([width, height, width, height], dtype=np.float64), clip)


def normalized_xyxy_to_xyxy(b: ArrayLike, width: float, height: float) -> np.ndarray:
    """Normalized ``[xmin, ymin, xmax, ymax]`` -> pixel ``[xmin, ymin, xmax, ymax]``."""
    return _boxes(b) * np.array([width, height, width, height], dtype=np.float64)


def _normalize(a: np.ndarray, size: np.ndarray, clip: bool) -> np.ndarray:
    if (size <= 0).any():
        raise ValueError(f"image width and height must be > 0, got {size[[1, 0]].tolist()}")
    out = a / size
    return np.clip(out, 0.0, 1.0) if clip else out


__all__ = [
    "normalized_xyxy_to_xyxy",
    "normalized_yxyx_to_xyxy",
    "xywh_to_xyxy",
    "xyxy_to_normalized_xyxy",
    "xyxy_to_normalized_yxyx",
    "xyxy_to_xywh",
    "yxyx_to_xywh",
]
