"""Fake data for the training tests: tiny VOC datasets and run configs, made on the fly."""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

CLASSES = ("circle", "square")


def make_voc_dataset(root: Path, n: int = 24, size: tuple[int, int] = (96, 80), seed: int = 0) -> Path:
    """Write ``n`` JPEGs with 1-3 drawn shapes each and their Pascal VOC XML; return the root.

    Layout: ``root/JPEGImages/img_XXX.jpg``, ``root/Annotations/img_XXX.xml``; boxes in pixels.
    """
    rng = random.Random(seed)
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    w, h = size
    for i in range(n):
        im = Image.new("RGB", size, (rng.randint(0, 60),) * 3)
        d = ImageDraw.Draw(im)
        objs = []
        for _ in range(rng.randint(1, 3)):
            cls = CLASSES[rng.randint(0, 1)]
            bw, bh = rng.randint(14, 30), rng.randint(14, 30)
            x0, y0 = rng.randint(0, w - bw - 1), rng.randint(0, h - bh - 1)
            box = (x0, y0, x0 + bw, y0 + bh)
            (d.ellipse if cls == "circle" else d.rectangle)(box, fill=(230, 200, 40) if cls == "circle" else (40, 200, 230))
            objs.append((cls, box))
        name = f"img_{i:03d}"
        im.save(root / "JPEGImages" / f"{name}.jpg", quality=90)
        xml_objs = "".join(
            f"<object><name>{c}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
            f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
            for c, b in objs
        )
        (root / "Annotations" / f"{name}.xml").write_text(
            f"<annotation><folder>JPEGImages</folder><filename>{name}.jpg</filename>"
            f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>{xml_objs}</annotation>"
        )
    return root


def tiny_config_tree(data_root: Path, datastore: Path, steps: int = 2) -> dict:
    """A run config for the tiny preset on a fake VOC dataset (few steps, small images)."""
    return {
        "project": "tiny",
        "datastore": str(datastore),
        "data": {"format": "voc", "path": str(data_root / "Annotations"), "images": str(data_root / "JPEGImages")},
        "split": {"ratios": [0.5, 0.25, 0.25], "seed": 1},
        "train": {"preset": "retinanet_mobilenetv2_fpn_tiny", "steps": steps, "image_size": 64, "batch_size": 2,
                  "checkpoint_interval": 1},
        "export": {"calibration_steps": 2},
        "tracking": {"enabled": False},
    }
