"""Parity of the converted MobileNetV2 backbone with the SSDLite frozen graph, on real images.

For each endpoint level of Model Garden's MobileNetV2 (2..6), on real photos resized to 300x300:

* ``interior_max_abs``: max |converted - frozen graph| where the input-normalization fold is
  exact (see :func:`training.pretrained.fold_affected_masks`);
* ``border_mean_abs``: mean |converted - frozen graph| where the stem's SAME padding reaches;
* ``reference_naive_mean_abs``: the same mean over the whole map for the reference measured in
  the same run: the unfolded weights fed Model Garden's ImageNet mean/std inputs (what one gets
  by restoring the graph's weights without the fold);
* ``ratio_folded_to_naive``: whole-map mean error of the folded backbone / the reference.

Usage::

    python benchmarks/backbone_parity.py [--images DIR] [--count 8] [--out parity.json]

Images default to ``$DETOPS_DATASETS/bccd/BCCD/JPEGImages`` (else ``../shared/datasets``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training import pretrained

SIZE = 300  # the frozen graph's fixed input size


def _default_images() -> Path:
    from training.settings import CommonSettings

    return CommonSettings.load().datasets_root() / "bccd" / "BCCD" / "JPEGImages"


def _load(paths: list[Path]) -> np.ndarray:
    import tensorflow as tf

    images = []
    for path in paths:
        image = tf.io.decode_image(tf.io.read_file(str(path)), channels=3, expand_animations=False)
        images.append(tf.cast(tf.round(tf.image.resize(image, (SIZE, SIZE))), tf.uint8).numpy())
    return np.stack(images)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=_default_images())
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    import tensorflow as tf
    from official.vision.ops import preprocess_ops

    paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[: args.count]
    if not paths:
        raise SystemExit(f"no images in {args.images}")
    images = _load(paths)
    reference, _ = pretrained.frozen_graph_endpoints(images)

    with tempfile.TemporaryDirectory() as cache:
        backbones = {}
        for fold in (True, False):
            prefix = pretrained.pretrained_backbone_checkpoint(cache, fold_input_normalization=fold)
            backbone = pretrained.build_mobilenetv2_backbone()
            tf.train.Checkpoint(backbone=backbone).read(prefix).assert_consumed()
            backbones[fold] = backbone
    x_mg = tf.stack([preprocess_ops.normalize_image(tf.constant(im)) for im in images])
    folded = backbones[True](x_mg, training=False)
    naive = backbones[False](x_mg, training=False)
    masks = pretrained.fold_affected_masks(backbones[True], SIZE, SIZE)

    levels = {}
    for level, expected in reference.items():
        diff = np.abs(folded[level].numpy() - expected)
        border = masks[level]
        naive_mean = float(np.abs(naive[level].numpy() - expected).mean())
        levels[level] = {
            "shape": list(expected.shape[1:]),
            "graph_tensor": pretrained.GRAPH_ENDPOINT_TENSORS[level],
            "interior_fraction": float((~border).mean()),
            "interior_max_abs": float(diff[:, ~border].max()) if (~border).any() else None,
            "border_mean_abs": float(diff[:, border].mean()) if border.any() else 0.0,
            "reference_mean_abs_activation": float(np.abs(expected).mean()),
            "reference_naive_mean_abs": naive_mean,
            "ratio_folded_to_naive": float(diff.mean()) / naive_mean,
        }
    result = {
        "images": [str(p) for p in paths],
        "size": SIZE,
        "package": f"{pretrained.SSDLITE_DISTRIBUTION}=={pretrained.ssdlite_package_version()}",
        "levels": levels,
    }
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text)
    print(text)
    return result


if __name__ == "__main__":
    main()
