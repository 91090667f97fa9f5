"""Anchors fitted to a dataset's boxes (``train.anchors: fit``), as YOLO's autoanchor does for its own.

Model Garden's RetinaNet places a regular anchor grid (``official.vision.ops.anchor.Anchor``): at
each level ``l`` of ``min_level..max_level``, scales ``s = 0..num_scales-1`` and aspect ratios ``a``
(width / height), an anchor of width ``anchor_size * 2**l * 2**(s/num_scales) * sqrt(a)`` and height
``... / sqrt(a)`` pixels of the model's input. Only ``anchor_size`` and ``aspect_ratios`` are free, so
the fit chooses those two, from the training split's boxes as the model sees them (resized with the
image's aspect ratio kept so that its longer side is ``image_size``: Model Garden's
``resize_and_crop_image`` without scale jitter):

1. aspect ratios: k-means (k = the preset's number of ratios) on ``log(w / h)``, centres returned
   as ratios, sorted; seeded, so a dataset gives one answer;
2. anchor size: the candidate (``SIZE_CANDIDATES``) whose grid gives the highest mean best IoU over
   the boxes (the IoU of a box with its best anchor, both centred: shape only, as autoanchor scores
   it), ties broken by the smaller size.

The score also reports the best possible recall, the fraction of boxes whose best anchor has IoU >=
0.5 (RetinaNet's positive match threshold: a box below it gets only a low-quality match, if any).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

#: anchor_size values tried, in units of each level's stride (Model Garden's presets use 3.0 or 4.0).
SIZE_CANDIDATES = tuple(np.round(np.arange(1.0, 6.01, 0.25), 2))
MATCH_IOU = 0.5  # RetinaNet's positive match threshold (Model Garden's ``matched_threshold``)


@dataclass(frozen=True)
class AnchorFit:
    """A fitted anchor grid and its score on the boxes it was fitted to.

    ``anchor_size`` (stride units) and ``aspect_ratios`` (width / height) are Model Garden's
    ``task.model.anchor`` values; ``mean_iou`` / ``recall`` score them (shape IoU of each box with its
    best anchor; fraction >= 0.5); ``preset_*`` score the preset's anchors on the same boxes.
    """

    anchor_size: float
    aspect_ratios: list[float]
    mean_iou: float
    recall: float
    preset_mean_iou: float
    preset_recall: float
    boxes: int

    def as_dict(self) -> dict:
        """Plain dict for ``model_config/anchors.json``."""
        return asdict(self)


def anchor_shapes(
    anchor_size: float, aspect_ratios: list[float], min_level: int, max_level: int, num_scales: int
) -> np.ndarray:
    """Every anchor's ``[width, height]`` in input pixels, float64 ``[levels*num_scales*ratios, 2]``.

    The same shapes as ``official.vision.ops.anchor.Anchor`` places at every position of its grid.
    """
    out = []
    for level in range(min_level, max_level + 1):
        for s in range(num_scales):
            base = anchor_size * 2.0**level * 2.0 ** (s / num_scales)
            for a in aspect_ratios:
                out.append((base * np.sqrt(a), base / np.sqrt(a)))
    return np.asarray(out, dtype=np.float64)


def best_iou(wh: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    """IoU of each box ``wh`` (``[N, 2]`` width, height) with its best anchor of ``shapes`` (``[A, 2]``),
    both centred on one point (shape only). Returns float64 ``[N]`` in [0, 1]."""
    wh = np.asarray(wh, dtype=np.float64)
    inter = np.minimum(wh[:, None, 0], shapes[None, :, 0]) * np.minimum(wh[:, None, 1], shapes[None, :, 1])
    union = wh[:, None, 0] * wh[:, None, 1] + shapes[None, :, 0] * shapes[None, :, 1] - inter
    return (inter / union).max(axis=1)


def input_box_sizes(coco: dict, image_size: int) -> np.ndarray:
    """The boxes of a COCO ground truth (``bbox`` xywh in pixels of the original image) as
    ``[N, 2]`` width, height in pixels of the model's ``image_size`` square input (the image scaled by
    ``image_size / max(width, height)``). Boxes with a zero side are left out.

    Raises:
      ValueError: an annotation names an image the JSON does not list.
    """
    scale = {im["id"]: image_size / max(im["width"], im["height"]) for im in coco["images"]}
    wh = []
    for a in coco["annotations"]:
        if a["image_id"] not in scale:
            raise ValueError(f"annotation {a.get('id')} names image {a['image_id']!r}, which the ground truth lacks")
        w, h = a["bbox"][2], a["bbox"][3]
        if w > 0 and h > 0:
            wh.append((w * scale[a["image_id"]], h * scale[a["image_id"]]))
    return np.asarray(wh, dtype=np.float64).reshape(-1, 2)


def kmeans_aspect_ratios(wh: np.ndarray, k: int, seed: int = 0, iterations: int = 50) -> list[float]:
    """``k`` aspect ratios (width / height) by k-means on ``log(w / h)`` of ``wh`` (``[N, 2]``), sorted.

    Starts from the ``k`` quantiles of the log ratios (deterministic; ``seed`` only breaks the tie of an
    empty cluster), rounds to 3 decimals. Fewer distinct ratios than ``k`` give the distinct ones.
    """
    x = np.log(wh[:, 0] / wh[:, 1])
    centres = np.quantile(x, (np.arange(k) + 0.5) / k)
    rng = np.random.default_rng(seed)
    for _ in range(iterations):
        assign = np.abs(x[:, None] - centres[None, :]).argmin(axis=1)
        new = np.array([x[assign == j].mean() if (assign == j).any() else rng.choice(x) for j in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    return sorted({round(float(np.exp(c)), 3) for c in centres})


def fit_anchors(
    wh: np.ndarray,
    *,
    min_level: int,
    max_level: int,
    num_scales: int,
    preset_size: float,
    preset_ratios: list[float],
    seed: int = 0,
) -> AnchorFit:
    """Fit ``anchor_size`` and ``aspect_ratios`` to box sizes ``wh`` (``[N, 2]`` input pixels); see the
    module docstring for the method.

    Raises:
      ValueError: ``wh`` holds no box.
    """
    if len(wh) == 0:
        raise ValueError("no box to fit anchors to")
    ratios = kmeans_aspect_ratios(wh, len(preset_ratios), seed)

    def score(size: float, rs: list[float]) -> tuple[float, float]:
        b = best_iou(wh, anchor_shapes(size, rs, min_level, max_level, num_scales))
        return float(b.mean()), float((b >= MATCH_IOU).mean())

    scored = [(score(float(s), ratios), float(s)) for s in SIZE_CANDIDATES]
    (mean_iou, recall), size = max(scored, key=lambda t: (round(t[0][0], 6), -t[1]))
    p_mean, p_recall = score(preset_size, list(preset_ratios))
    return AnchorFit(size, ratios, round(mean_iou, 4), round(recall, 4), round(p_mean, 4), round(p_recall, 4), len(wh))
