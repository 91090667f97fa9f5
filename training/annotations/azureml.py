"""Azure ML data-labeling / AutoML-for-images JSONL reader (object detection).

One JSON object per line (learn.microsoft.com, "Data schemas to train computer vision models with
automated machine learning")::

    {"image_url": "AmlDatastore://workspaceblobstore/data/img.jpg",
     "image_details": {"format": "jpg", "width": "499px", "height": "666px"},
     "label": [{"label": "cat", "topX": 0.26, "topY": 0.41, "bottomX": 0.74, "bottomY": 0.70, "isCrowd": 0}],
     "label_confidence": [1.0]}

``topX/topY/bottomX/bottomY`` are normalized to [0, 1] of the image width/height; they are converted
to absolute pixels with the size in ``image_details`` when present, else the image file's size after
EXIF orientation (what the labeler's browser showed). ``image_url`` may be ``AmlDatastore://<datastore>/<path>``
or ``azureml://[subscriptions/.../]datastores/<datastore>/paths/<path>``; the image is looked up under
the ``images`` folders by ``<path>``, then by shorter and shorter tails of it (a download usually keeps
only the last folders), then by its file name.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from training.annotations._common import ReadContext, brief, find_files, parse_number, parse_size
from training.annotations.record import Box, ImageRecord
from training.boxes import normalized_xyxy_to_xyxy

_AZUREML = re.compile(r"^azureml://(?:.*?/)?datastores/[^/]+/paths/(?P<path>.+)$", re.IGNORECASE)
_AMLDATASTORE = re.compile(r"^amldatastore://(?:[^/]+)/(?P<path>.+)$", re.IGNORECASE)


def datastore_path(url: str) -> str:
    """The path inside the datastore of an ``image_url`` (or the URL itself if it is a plain path)."""
    for pat in (_AZUREML, _AMLDATASTORE):
        m = pat.match(url.strip())
        if m:
            return m.group("path").lstrip("/")
    return url.strip()


def _oriented_size(path: Path) -> tuple[int, int] | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _line(text: str, locator) -> tuple[dict[str, Any], list[dict[str, Any]], str, Path | None, int, int]:
    """Parse one JSONL line: ``(object, boxes, datastore path, image file or None, width, height)``.

    Raises ``ValueError`` naming the problem (``json.JSONDecodeError`` for invalid JSON).
    """
    try:
        obj = json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply to read") from None
    if not isinstance(obj, dict) or "image_url" not in obj:
        raise ValueError("no 'image_url'")
    if not isinstance(obj["image_url"], str) or not obj["image_url"].strip():
        raise ValueError(f"'image_url' must be a non-empty string, got {brief(obj['image_url'])}")
    labels = obj.get("label", [])
    if not isinstance(labels, list) or any(not isinstance(x, dict) for x in labels):
        raise ValueError("'label' is not a list of boxes (a classification export?)")
    details = obj.get("image_details") or {}
    if not isinstance(details, dict):
        raise ValueError(f"'image_details' must be an object, got {brief(details)}")
    rel = datastore_path(obj["image_url"])
    parts = rel.split("/")
    found = None
    for k in range(len(parts)):
        found = locator.find("/".join(parts[k:]))
        if found is not None:
            break
    width, height = parse_size(details.get("width")), parse_size(details.get("height"))
    if (width is None or height is None) and found is not None:
        size = _oriented_size(found)
        if size:
            width, height = size
    if width is None or height is None:
        raise ValueError(f"image {brief(rel)} not found and no image_details size: normalized boxes cannot be converted")
    return obj, labels, rel, found, width, height


def _box(ctx: ReadContext, lab: dict[str, Any], width: int, height: int, source: str) -> Box:
    """One ``label`` entry as a pixel box; ``ValueError`` naming the problem."""
    x1, y1, x2, y2 = (parse_number(lab.get(k), k) for k in ("topX", "topY", "bottomX", "bottomY"))
    label = lab.get("label")
    if label is not None and not isinstance(label, str):
        raise ValueError(f"'label' must be a string, got {brief(label)}")
    label = (label or "").strip()
    if not label and ctx.label_pattern is None:
        raise ValueError("no 'label'")
    crowd = lab.get("isCrowd", 0)
    crowd = isinstance(crowd, (bool, int, float, str)) and str(crowd).strip().lower() in ("1", "true")
    return Box(
        *normalized_xyxy_to_xyxy([x1, y1, x2, y2], width, height).tolist(), label=label, source=source, iscrowd=crowd
    )


def read_azureml(ctx: ReadContext, inputs: list[Path], images: list[Path]) -> tuple[list[ImageRecord], None]:
    """Read Azure ML JSONL exports (``*.jsonl``); a bad line is rejected as ``line N``, a bad box as
    ``line N label[i]``; a line whose image size is unknown (no ``image_details`` and no readable
    image file) is rejected because its normalized boxes cannot be converted to pixels. Values of the
    wrong type (a string ``image_details``, a list ``label``...) and lines nested deeper than Python's
    recursion limit are rejected the same way.
    """
    records: list[ImageRecord] = []
    for file in find_files(inputs, (".jsonl",), "Azure ML JSONL"):
        src = ctx.rel(file)
        locator = ctx.locator([*images] if images else [file.parent])
        try:
            lines = file.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            ctx.reject(file, "", f"cannot read file: {exc}")
            continue
        for n, text in enumerate(lines, start=1):
            if not text.strip():
                continue
            try:
                obj, labels, rel, found, width, height = _line(text, locator)
            except json.JSONDecodeError as exc:
                ctx.reject(file, f"line {n}", f"invalid JSON: {exc.msg} (column {exc.colno})")
                continue
            except ValueError as exc:
                ctx.reject(file, f"line {n}", str(exc))
                continue
            name = ctx.image_name(found, rel.split("/")[-1] if found is None else rel, images[0] if images else file.parent)
            rec = ImageRecord(image=name, width=width, height=height, source=f"{src}#line[{n}]")
            for i, lab in enumerate(labels, start=1):
                try:
                    rec.boxes.append(_box(ctx, lab, width, height, f"{src}#line[{n}].label[{i}]"))
                except ValueError as exc:
                    ctx.reject(file, f"line {n} label[{i}]", str(exc))
            records.append(rec)
    return records, None
