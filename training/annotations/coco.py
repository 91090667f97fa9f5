"""COCO JSON reader (``instances_*.json``): ``images``, ``annotations`` with ``bbox = [x, y, w, h]``
in absolute pixels (top-left origin), ``categories`` by id (cocodataset.org/#format-data)."""

from __future__ import annotations

import json
from pathlib import Path

from training.annotations._common import ReadContext, find_files, parse_number, parse_size
from training.annotations.record import Box, ImageRecord
from training.boxes import xywh_to_xyxy


def read_coco(ctx: ReadContext, inputs: list[Path], images: list[Path]) -> tuple[list[ImageRecord], list[str]]:
    """Read COCO JSON files; ``file_name`` is looked up in ``images`` (default: the JSON's folder and
    its parent). The class order is the category order by id.

    An unparseable file is rejected whole; an annotation with an unknown ``image_id`` or
    ``category_id`` or a malformed ``bbox`` is rejected as ``annotation id=N``.
    """
    records: list[ImageRecord] = []
    categories: dict[int, str] = {}
    for file in find_files(inputs, (".json",), "COCO JSON"):
        src = ctx.rel(file)
        try:
            data = json.loads(file.read_text(encoding="utf-8-sig"))
            if not isinstance(data, dict) or not isinstance(data.get("images"), list):
                raise ValueError("no 'images' list (not a COCO annotation file)")
        except json.JSONDecodeError as exc:
            ctx.reject(file, f"line {exc.lineno}", f"invalid JSON: {exc.msg}")
            continue
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            ctx.reject(file, "", str(exc))
            continue
        cats: dict[int, str] = {}
        for j, c in enumerate(data.get("categories") or []):
            try:
                cats[int(c["id"])] = str(c["name"])
            except (KeyError, TypeError, ValueError):
                ctx.reject(file, f"categories[{j}]", f"category without integer 'id' and 'name': {c!r}")
        for k, v in cats.items():
            categories.setdefault(k, v)
        locator = ctx.locator([*images] if images else [file.parent, file.parent.parent])
        by_id: dict[object, ImageRecord] = {}
        for j, im in enumerate(data["images"]):
            try:
                image_id = im["id"]
                raw = str(im["file_name"])
                width, height = parse_size(im.get("width")), parse_size(im.get("height"))
            except (KeyError, TypeError, ValueError) as exc:
                ctx.reject(file, f"images[{j}]", f"image entry without 'id'/'file_name' or bad size: {exc}")
                continue
            found = locator.find(raw)
            name = ctx.image_name(found, raw, images[0] if images else file.parent)
            rec = ImageRecord(image=name, width=width, height=height, source=f"{src}#image[id={image_id}]")
            by_id[image_id] = rec
            records.append(rec)
        for j, a in enumerate(data.get("annotations") or []):
            where = f"annotation id={a.get('id', '?')}" if isinstance(a, dict) else f"annotations[{j}]"
            try:
                if not isinstance(a, dict):
                    raise ValueError(f"not an object: {a!r}")
                owner = by_id.get(a.get("image_id"))
                if owner is None:
                    raise ValueError(f"image_id {a.get('image_id')!r} is not in 'images'")
                cid = a.get("category_id")
                if cid not in cats:
                    raise ValueError(f"category_id {cid!r} is not in 'categories'")
                bbox = a.get("bbox")
                if not isinstance(bbox, list) or len(bbox) != 4:
                    raise ValueError(f"bbox must be [x, y, w, h], got {bbox!r}")
                x, y, w, h = (parse_number(v, "bbox") for v in bbox)
            except ValueError as exc:
                ctx.reject(file, where, str(exc))
                continue
            owner.boxes.append(
                Box(*xywh_to_xyxy([x, y, w, h]).tolist(), label=cats[cid], source=f"{src}#{where}", iscrowd=bool(a.get("iscrowd", 0)))
            )
    return records, [categories[k] for k in sorted(categories)]
