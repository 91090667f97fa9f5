"""Fake-data builders for the annotation tests: tiny images via Pillow, VOC XML text."""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image


def make_image(
    path: Path,
    size: tuple[int, int] = (64, 48),
    *,
    mode: str = "RGB",
    fmt: str = "JPEG",
    orientation: int | None = None,
    seed: int | None = None,
) -> Path:
    """Write a small image with random pixels (so two calls give different bytes unless seeded alike).

    ``size`` is (width, height) as stored; ``orientation`` writes an EXIF Orientation tag.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    rnd = random.Random(seed if seed is not None else str(path))
    w, h = size
    bands = len(Image.new(mode, (1, 1)).getbands())
    data = rnd.randbytes(w * h * bands)
    im = Image.frombytes(mode, size, data)
    kwargs = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    im.save(path, format=fmt, **kwargs)
    return path


def voc_xml(filename: str, size: tuple[int, int] | None, objects: list[tuple], path: str = r"C:\labeler\x.jpg") -> str:
    """A Pascal VOC annotation; objects are ``(name, xmin, ymin, xmax, ymax)``."""
    size_xml = f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>" if size else ""
    objs = "".join(
        f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
        f"<xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>"
        for n, a, b, c, d in objects
    )
    return (
        f"<annotation><folder>x</folder><filename>{filename}</filename><path>{path}</path>{size_xml}{objs}</annotation>"
    )
