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

from training.annotations._common import ReadContext, find_files, parse_number, parse_size
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
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def read_azureml(ctx: ReadContext, inputs: list[Path], images: list[Path]) -> tuple[list[ImageRecord], None]:
    """Read Azure ML JSONL exports (``*.jsonl``); a bad line is rejected as ``line N``, a bad box as
    ``line N label[i]``; a line whose image size is unknown (no ``image_details`` and no readable
    image file) is rejected because its normalized boxes cannot be converted to pixels.
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
                obj = json.loads(text)
                if not isinstance(obj, dict) or "image_url" not in obj:
                    raise ValueError("no 'image_url'")
                labels = obj.get("label", [])
                if not isinstance(labels, list) or any(not isinstance(x, dict) for x in labels):
                    raise ValueError("'label' is not a list of boxes (a classification export?)")
                rel = datastore_path(str(obj["image_url"]))
                parts = rel.split("/")
                found = None
                for k in range(len(parts)):
                    found = locator.find("/".join(parts[k:]))
                    if found is not None:
                        break
                details = obj.get("image_details") or {}
                width, height = parse_size(details.get("width")), parse_size(details.get("height"))
                if (width is None or height is None) and found is not None:
                    size = _oriented_size(found)
                    if size:
                        width, height = size
                if width is None or height is None:
                    raise ValueError(
                        f"image {rel!r} not found and no image_details size: normalized boxes cannot be converted"
                    )
            except json.JSONDecodeError as exc:
                ctx.reject(file, f"line {n}", f"invalid JSON: {exc.msg} (column {exc.colno})")
                continue
            except ValueError as exc:
                ctx.reject(file, f"line {n}", str(exc))
                continue
            name = ctx.image_name(found, parts[-1] if found is None else rel, images[0] if images else file.parent)
            rec = ImageRecord(image=name, width=width, height=height, source=f"{src}#line[{n}]")
            for i, lab in enumerate(labels, start=1):
                try:
                    x1, y1, x2, y2 = (parse_number(lab.get(k), k) for k in ("topX", "topY", "bottomX", "bottomY"))
                    label = str(lab.get("label") or "").strip()
                    if not label and ctx.label_pattern is None:
                        raise ValueError("no 'label'")
                except ValueError as exc:
                    ctx.reject(file, f"line {n} label[{i}]", str(exc))
                    continue
                crowd = str(lab.get("isCrowd", 0)).strip().lower() in ("1", "true")
                rec.boxes.append(
                    Box(
                        *normalized_xyxy_to_xyxy([x1, y1, x2, y2], width, height).tolist(),
                        label=label,
                        source=f"{src}#line[{n}].label[{i}]",
                        iscrowd=crowd,
                    )
                )
            records.append(rec)
    return records, None
