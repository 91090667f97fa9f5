"""COCO JSON reader (``instances_*.json``): ``images``, ``annotations`` with ``bbox = [x, y, w, h]``
in absolute pixels (top-left origin), ``categories`` by id (cocodataset.org/#format-data).

Ids (``images[].id``, ``annotations[].image_id``, ``category_id``) are numbers or strings; any other
value (a list, an object, a boolean) makes its entry a rejected record, never a crash. A file nested
deeper than Python's recursion limit (about 1000 levels) is rejected whole.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from training.annotations._common import ReadContext, brief, find_files, parse_number, parse_size
from training.annotations.record import Box, ImageRecord
from training.boxes import xywh_to_xyxy

_INT64 = 2**63


def _id(value: Any, what: str) -> int | float | str:
    """A COCO id as it is written (a number or a string); ``ValueError`` for any other value and for
    a number outside the int64 range (pycocotools' ids)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{what} must be a number or a string, got {brief(value)}")
    if isinstance(value, (int, float)) and not -_INT64 <= value < _INT64:
        raise ValueError(f"{what} {brief(value)} is out of range (int64)")
    return value


def _load(ctx: ReadContext, file: Path) -> dict[str, Any] | None:
    """The parsed file, or None after rejecting it (unreadable, invalid JSON, not a COCO object)."""
    try:
        data = json.loads(file.read_text(encoding="utf-8-sig"))
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise ValueError("no 'images' list (not a COCO annotation file)")
    except json.JSONDecodeError as exc:
        ctx.reject(file, f"line {exc.lineno}", f"invalid JSON: {exc.msg}")
        return None
    except RecursionError:
        ctx.reject(file, "", "JSON nested too deeply to read")
        return None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        ctx.reject(file, "", str(exc))
        return None
    for key in ("categories", "annotations"):
        if data.get(key) is not None and not isinstance(data[key], list):
            ctx.reject(file, key, f"'{key}' is not a list: {brief(data[key])}")
            data[key] = []
    return data


def _categories(ctx: ReadContext, file: Path, data: dict[str, Any]) -> dict[Any, str]:
    cats: dict[Any, str] = {}
    for j, c in enumerate(data.get("categories") or []):
        try:
            name = c.get("name") if isinstance(c, dict) else None
            if isinstance(name, bool) or not isinstance(name, (str, int)) or not str(name).strip():
                raise ValueError
            cats[int(_id(c["id"], "id"))] = str(name)
        except (KeyError, TypeError, ValueError, OverflowError):
            ctx.reject(file, f"categories[{j}]", f"category without integer 'id' and non-empty 'name': {brief(c)}")
    return cats


def _images(ctx: ReadContext, file: Path, data: dict[str, Any], images: list[Path]) -> dict[Any, ImageRecord]:
    """The ``images`` entries by id (a duplicate id is rejected: its annotations would be ambiguous)."""
    src = ctx.rel(file)
    locator = ctx.locator([*images] if images else [file.parent, file.parent.parent])
    by_id: dict[Any, ImageRecord] = {}
    for j, im in enumerate(data["images"]):
        try:
            if not isinstance(im, dict):
                raise ValueError(f"not an object: {brief(im)}")
            image_id = _id(im.get("id"), "'id'")
            raw = im.get("file_name")
            if not isinstance(raw, str) or not raw.strip():
                raise ValueError(f"'file_name' must be a non-empty string, got {brief(raw)}")
            if image_id in by_id:
                raise ValueError(f"duplicate image id {brief(image_id)}")
            width, height = parse_size(im.get("width")), parse_size(im.get("height"))
        except ValueError as exc:
            ctx.reject(file, f"images[{j}]", f"bad image entry: {exc}")
            continue
        found = locator.find(raw)
        name = ctx.image_name(found, raw, images[0] if images else file.parent)
        by_id[image_id] = ImageRecord(image=name, width=width, height=height, source=f"{src}#image[id={image_id}]")
    return by_id


def _annotation(a: Any, by_id: dict[Any, ImageRecord], cats: dict[Any, str]) -> tuple[ImageRecord, list[float], str]:
    """``(owner record, [x, y, w, h], class name)`` of one annotation; ``ValueError`` naming the problem."""
    if not isinstance(a, dict):
        raise ValueError(f"not an object: {brief(a)}")
    owner = by_id.get(_id(a.get("image_id"), "image_id"))
    if owner is None:
        raise ValueError(f"image_id {brief(a.get('image_id'))} is not in 'images'")
    cid = _id(a.get("category_id"), "category_id")
    if cid not in cats:
        raise ValueError(f"category_id {brief(cid)} is not in 'categories'")
    bbox = a.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise ValueError(f"bbox must be [x, y, w, h], got {brief(bbox)}")
    return owner, [parse_number(v, "bbox") for v in bbox], cats[cid]


def _where(a: Any, j: int) -> str:
    """How an annotation is named in reports: ``annotation id=N``, else ``annotations[j]``."""
    if not isinstance(a, dict):
        return f"annotations[{j}]"
    aid = a.get("id", "?")
    plain = isinstance(aid, str) or (isinstance(aid, int) and not isinstance(aid, bool) and abs(aid) < _INT64)
    return f"annotation id={aid if plain else brief(aid)}"


def read_coco(ctx: ReadContext, inputs: list[Path], images: list[Path]) -> tuple[list[ImageRecord], list[str]]:
    """Read COCO JSON files; ``file_name`` is looked up in ``images`` (default: the JSON's folder and
    its parent). The class order is the category order by id.

    An unparseable file is rejected whole; an image entry without a usable ``id``/``file_name`` as
    ``images[j]``; an annotation with an unknown or malformed ``image_id`` or ``category_id`` or a
    malformed ``bbox`` as ``annotation id=N``.
    """
    records: list[ImageRecord] = []
    categories: dict[int, str] = {}
    for file in find_files(inputs, (".json",), "COCO JSON"):
        data = _load(ctx, file)
        if data is None:
            continue
        src = ctx.rel(file)
        cats = _categories(ctx, file, data)
        for k, v in cats.items():
            categories.setdefault(k, v)
        by_id = _images(ctx, file, data, images)
        records.extend(by_id.values())
        for j, a in enumerate(data.get("annotations") or []):
            where = _where(a, j)
            try:
                owner, xywh, label = _annotation(a, by_id, cats)
            except ValueError as exc:
                ctx.reject(file, where, str(exc))
                continue
            crowd = bool(a.get("iscrowd", 0))
            owner.boxes.append(Box(*xywh_to_xyxy(xywh).tolist(), label=label, source=f"{src}#{where}", iscrowd=crowd))
    return records, [categories[k] for k in sorted(categories)]
