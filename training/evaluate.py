"""COCO evaluation of a detector on a split: metrics.json, per-class AP, PR curves, sample drawings.

Metrics are pycocotools' ``COCOeval`` (bbox) over the split's COCO ground-truth JSON
(``data/annotations/<split>.json``), the standard definitions:

* ``AP``: mAP@[.5:.95] (mean over IoU 0.50:0.05:0.95 and classes), ``AP50``, ``AP75``;
* ``APs``/``APm``/``APl``: AP for small (< 32² px), medium, large (> 96² px) ground-truth areas;
* ``AR1``/``AR10``/``AR100``: average recall with at most 1/10/100 detections per image;
* ``ARs``/``ARm``/``ARl``: AR100 for small, medium, large ground-truth areas (the 12 figures of
  ``COCOeval.summarize()``, in its order).

A value of ``-1`` means undefined (e.g. no ground truth of that area), as pycocotools reports it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from training.boxes import xywh_to_xyxy
from training.names import COCO_METRIC_NAMES as COCO_STAT_NAMES


def read_split_images(pattern: str):
    """A ``tf.data.Dataset`` of ``(encoded image bytes, COCO image id as string)`` from TFRecords."""
    import tensorflow as tf

    files = sorted(tf.io.gfile.glob(pattern))
    spec = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/source_id": tf.io.FixedLenFeature([], tf.string),
    }
    ds = tf.data.TFRecordDataset(files)
    return ds.map(lambda s: (lambda f: (f["image/encoded"], f["image/source_id"]))(tf.io.parse_single_example(s, spec)))


def predict_split(
    detect: Callable[[object], dict],
    pattern: str,
    batch_size: int = 8,
) -> tuple[list[dict], dict[int, bytes]]:
    """Run ``detect`` (encoded images ``[N]`` -> outputs dict) over a split's TFRecords.

    Returns:
      COCO results (list of dicts) and ``{image_id: encoded bytes}`` for the first 8 images
      (for the sample drawings).
    """
    from training.inference import detections_to_coco

    results: list[dict] = []
    samples: dict[int, bytes] = {}
    for encoded, ids in read_split_images(pattern).batch(batch_size):
        out = {k: v.numpy() for k, v in detect(encoded).items()}
        image_ids = [int(x) for x in ids.numpy()]
        results.extend(detections_to_coco(out, image_ids))
        for data, image_id in zip(encoded.numpy(), image_ids):
            if len(samples) < 8:
                samples[image_id] = data
    return results, samples


def coco_metrics(gt: dict, results: list[dict]) -> tuple[dict, np.ndarray | None]:
    """COCO bbox metrics of ``results`` against ground truth ``gt`` (a COCO dict).

    Returns:
      ``(metrics, precision)``: metrics has :data:`COCO_STAT_NAMES` keys plus ``per_class``
      (``{name: {"AP", "AP50"}}``); ``precision`` is COCOeval's array
      ``[10 IoU thresholds, 101 recall points, K classes, 4 areas, 3 max-dets]`` (None when there
      are no detections).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    cats = sorted(gt["categories"], key=lambda c: c["id"])
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        if not results:
            stats = [0.0] * len(COCO_STAT_NAMES)
            per_class = {c["name"]: {"AP": 0.0, "AP50": 0.0} for c in cats}
            return {**dict(zip(COCO_STAT_NAMES, stats)), "per_class": per_class, "num_detections": 0}, None
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = ev.eval["precision"]
    per_class = {}
    for k, c in enumerate(cats):
        p_all = precision[:, :, k, 0, -1]
        p50 = precision[0, :, k, 0, -1]
        per_class[c["name"]] = {
            "AP": float(np.mean(p_all[p_all > -1])) if (p_all > -1).any() else -1.0,
            "AP50": float(np.mean(p50[p50 > -1])) if (p50 > -1).any() else -1.0,
        }
    metrics: dict[str, Any] = {name: float(v) for name, v in zip(COCO_STAT_NAMES, ev.stats)}
    metrics["per_class"] = per_class
    metrics["num_detections"] = len(results)
    return metrics, precision


def plot_pr_curves(precision: np.ndarray, class_names: list[str], path: str) -> None:
    """Precision-recall curves at IoU 0.50 and 0.75 per class (all areas, 100 dets), one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recall = np.linspace(0, 1, 101)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, (t, iou) in zip(axes, ((0, 0.5), (5, 0.75))):
        for k, name in enumerate(class_names):
            p = precision[t, :, k, 0, -1]
            ax.plot(recall, np.where(p > -1, p, np.nan), label=name)
        ax.set(title=f"PR curve, IoU {iou}", xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_per_class_ap(per_class: dict, path: str) -> None:
    """Bar chart of per-class AP and AP50, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(per_class)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(names)), 4))
    ax.bar(x - 0.2, [per_class[n]["AP"] for n in names], 0.4, label="AP@[.5:.95]")
    ax.bar(x + 0.2, [per_class[n]["AP50"] for n in names], 0.4, label="AP50")
    ax.set_xticks(x, names, rotation=30)
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title("per-class AP")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def draw_samples(
    samples: dict[int, bytes], gt: dict, results: list[dict], out_dir: str, count: int = 4, min_score: float = 0.3
) -> list[str]:
    """Draw true (green) and predicted (red, score >= ``min_score``) boxes on a few images.

    Returns the PNG paths written (``sample_<image_id>.png``).
    """
    from PIL import Image, ImageDraw

    names = {c["id"]: c["name"] for c in gt["categories"]}
    paths = []
    for image_id, data in list(samples.items())[:count]:
        im = Image.open(io.BytesIO(data)).convert("RGB")
        d = ImageDraw.Draw(im)
        for a in gt["annotations"]:
            if a["image_id"] == image_id:
                d.rectangle(xywh_to_xyxy(a["bbox"]).tolist(), outline=(0, 200, 0), width=2)
        for r in results:
            if r["image_id"] == image_id and r["score"] >= min_score:
                x0, y0, x1, y1 = xywh_to_xyxy(r["bbox"]).tolist()
                d.rectangle([x0, y0, x1, y1], outline=(230, 0, 0), width=2)
                d.text((x0 + 2, y0 + 2), f"{names.get(r['category_id'], '?')} {r['score']:.2f}", fill=(230, 0, 0))
        p = os.path.join(out_dir, f"sample_{image_id}.png")
        im.save(p)
        paths.append(p)
    return paths


def evaluate_split(
    detect: Callable[[object], dict],
    pattern: str,
    gt_path: str,
    out_dir: str,
    draw: bool = True,
    extra: dict | None = None,
) -> dict:
    """Evaluate one split and write ``metrics.json``, ``pr_curves.png``, ``per_class_ap.png`` and samples.

    Args:
      detect: encoded images ``[N]`` -> detector outputs (``DetectorModule.detect_encoded``).
      pattern: the split's TFRecord glob; gt_path: its COCO ground-truth JSON (local).
      out_dir: local folder ``evaluation/<split>/``.

    Returns:
      The metrics dict written to ``metrics.json``.
    """
    os.makedirs(out_dir, exist_ok=True)
    with open(gt_path) as f:
        gt = json.load(f)
    results, samples = predict_split(detect, pattern)
    metrics, precision = coco_metrics(gt, results)
    metrics["num_images"] = len(gt["images"])
    metrics.update(extra or {})
    from training import storage

    storage.write_json(os.path.join(out_dir, "metrics.json"), metrics)  # whole or not at all
    storage.write_bytes(os.path.join(out_dir, "detections.json"), json.dumps(results).encode())
    if draw:
        names = [c["name"] for c in sorted(gt["categories"], key=lambda c: c["id"])]
        if precision is not None:
            plot_pr_curves(precision, names, os.path.join(out_dir, "pr_curves.png"))
        plot_per_class_ap(metrics["per_class"], os.path.join(out_dir, "per_class_ap.png"))
        draw_samples(samples, gt, results, out_dir)
    return metrics
