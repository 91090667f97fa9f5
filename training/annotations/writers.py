"""Writers of the canonical dataset: COCO ground-truth JSON and TF Object Detection API label maps.

Label map format (``label_map.pbtxt``), as in the TF Object Detection API's
``string_int_label_map.proto`` text format (seed 003)::

    item {
      id: 1
      name: 'car'
    }

Ids are 1-based (0 is background); id ``i + 1`` is ``Dataset.classes[i]``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from training.annotations.record import Dataset
from training.boxes import xyxy_to_xywh
from training.errors import DataError

__all__ = ["to_coco", "label_map_pbtxt", "read_label_map", "read_label_map_items"]


def to_coco(dataset: Dataset) -> dict:
    """COCO ground-truth JSON (as a dict) for ``dataset``.

    * ``images``: ``{"id": 1.., "file_name": record.image (relative to dataset.root), "width", "height"}``
      in record order;
    * ``annotations``: ``{"id": 1.., "image_id", "category_id", "bbox": [x, y, w, h] (float pixels,
      top-left origin), "area": w * h (px^2), "iscrowd": 0|1}``;
    * ``categories``: ``{"id": i + 1, "name": dataset.classes[i], "supercategory": "none"}``;
      ``category_id`` is therefore the label-map id.

    Raises :class:`DataError` naming the record when an image has no size (run
    :func:`training.annotations.validate` first, it fills sizes from the files) or a box's label is not
    in ``dataset.classes``.
    """
    images = []
    annotations = []
    ann_id = 0
    for image_id, rec in enumerate(dataset.records, start=1):
        if not rec.width or not rec.height:
            raise DataError(
                f"{rec.source or rec.image}: image {rec.image!r} has no width/height; "
                "validate the dataset first (it reads the size from the file)"
            )
        images.append({"id": image_id, "file_name": rec.image, "width": int(rec.width), "height": int(rec.height)})
        for box in rec.boxes:
            try:
                cat = dataset.class_id(box.label)
            except KeyError:
                raise DataError(
                    f"{box.source or rec.source}: label {box.label!r} is not in the dataset classes {dataset.classes}"
                ) from None
            ann_id += 1
            x, y, w, h = xyxy_to_xywh([box.xmin, box.ymin, box.xmax, box.ymax]).tolist()
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": [x, y, w, h],
                    "area": float(max(w, 0.0) * max(h, 0.0)),
                    "iscrowd": int(box.iscrowd),
                }
            )
    return {
        "info": {"description": f"detops ground truth ({dataset.format or 'dataset'})"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": n, "supercategory": "none"} for i, n in enumerate(dataset.classes)],
    }


def _quote(name: str) -> str:
    return "'" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"


def label_map_pbtxt(classes: list[str]) -> str:
    """TF OD API label map text for ``classes`` (id ``i + 1`` is ``classes[i]``).

    Raises :class:`DataError` for an empty list or duplicate names.
    """
    if not classes:
        raise DataError("label map: no classes")
    dupes = sorted({c for c in classes if classes.count(c) > 1})
    if dupes:
        raise DataError(f"label map: duplicate class names {dupes}")
    return "\n".join(f"item {{\n  id: {i}\n  name: {_quote(n)}\n}}\n" for i, n in enumerate(classes, start=1))


_TOKEN = re.compile(
    r"""\s*(?:
      (?P<comment>\#[^\n]*)
    | (?P<str>'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")
    | (?P<punct>[{}:\[\],;<>])
    | (?P<word>[A-Za-z0-9_.+\-]+)
    )""",
    re.VERBOSE,
)


def _tokens(text: str, where: str):
    pos = 0
    line = 1
    n = len(text)
    while pos < n:
        if text[pos].isspace():
            if text[pos] == "\n":
                line += 1
            pos += 1
            continue
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise DataError(f"{where}:{line}: cannot parse label map near {text[pos : pos + 20]!r}")
        line += text.count("\n", pos, m.start())
        if m.group("comment") is None:
            kind = m.lastgroup
            assert kind is not None  # the non-comment alternative that matched is named
            yield kind, m.group(kind), line
        line += text.count("\n", m.start(), m.end())
        pos = m.end()


def _unquote(s: str) -> str:
    body = s[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


def _load_text(text_or_path: str | os.PathLike[str]) -> tuple[str, str]:
    if isinstance(text_or_path, os.PathLike) or ("{" not in str(text_or_path) and "\n" not in str(text_or_path)):
        p = Path(text_or_path)
        try:
            return p.read_text(encoding="utf-8"), str(p)
        except OSError as exc:
            raise DataError(f"{p}: cannot read label map: {exc.strerror or exc}") from None
    return str(text_or_path), "<label map>"


def read_label_map_items(text_or_path: str | os.PathLike[str]) -> dict[int, str]:
    """Parse a TF OD API label map into ``{id: name}`` (ids as written, gaps allowed).

    ``text_or_path``: the label map text, or a path to it (a ``PathLike``, or a string without ``{``).
    ``display_name`` is used only when an item has no ``name``. Raises :class:`DataError` naming the
    file and the line for a syntax error, an item without id or name, a non-integer or non-positive
    id, or a duplicate id/name.
    """
    text, where = _load_text(text_or_path)
    toks = list(_tokens(text, where))
    items: dict[int, str] = {}
    names: dict[str, int] = {}
    i = 0

    def expect(kind: str, value: str | None = None):
        nonlocal i
        if i >= len(toks):
            last = toks[-1][2] if toks else 1
            raise DataError(f"{where}:{last}: unexpected end of label map (expected {value or kind})")
        k, v, ln = toks[i]
        if k != kind or (value is not None and v != value):
            raise DataError(f"{where}:{ln}: expected {value or kind!r}, found {v!r}")
        i += 1
        return v, ln

    while i < len(toks):
        _, start_line = expect("word", "item")
        if i < len(toks) and toks[i][1] == ":":
            i += 1
        expect("punct", "{")
        fields: dict[str, tuple[str, int]] = {}
        depth = 1
        while depth:
            if i >= len(toks):
                raise DataError(f"{where}:{start_line}: item is not closed with '}}'")
            k, v, ln = toks[i]
            if v == "}":
                depth -= 1
                i += 1
                continue
            if v == "{":
                depth += 1
                i += 1
                continue
            if depth == 1 and k == "word" and i + 1 < len(toks) and toks[i + 1][1] == ":":
                if i + 2 >= len(toks):
                    raise DataError(f"{where}:{ln}: field {v!r} has no value")
                vk, vv, _ = toks[i + 2]
                if vk in ("str", "word"):
                    fields.setdefault(v, (_unquote(vv) if vk == "str" else vv, ln))
                    i += 3
                    continue
                i += 2  # a nested message or list: skipped by the depth tracking
                continue
            i += 1
        if "id" not in fields:
            raise DataError(f"{where}:{start_line}: label map item has no 'id'")
        raw_id, id_line = fields["id"]
        try:
            item_id = int(raw_id)
        except ValueError:
            raise DataError(f"{where}:{id_line}: label map id {raw_id!r} is not an integer") from None
        if item_id < 1:
            raise DataError(f"{where}:{id_line}: label map id {item_id} must be >= 1 (0 is background)")
        name_field = fields.get("name") or fields.get("display_name")
        if name_field is None or not name_field[0]:
            raise DataError(f"{where}:{start_line}: label map item id {item_id} has no 'name'")
        name, name_line = name_field
        if item_id in items:
            raise DataError(f"{where}:{id_line}: duplicate label map id {item_id}")
        if name in names:
            raise DataError(f"{where}:{name_line}: duplicate label map name {name!r} (ids {names[name]} and {item_id})")
        items[item_id] = name
        names[name] = item_id
    if not items:
        raise DataError(f"{where}: label map has no items")
    return items


def read_label_map(text_or_path: str | os.PathLike[str]) -> list[str]:
    """Class names of a TF OD API label map, ordered by id (``result[i]`` has id ``i + 1``).

    Raises :class:`DataError` naming the file and line (see :func:`read_label_map_items`), and when
    the ids are not exactly ``1..N`` (a list cannot hold gaps; use :func:`read_label_map_items`).
    """
    items = read_label_map_items(text_or_path)
    ids = sorted(items)
    if ids != list(range(1, len(ids) + 1)):
        _, where = _load_text(text_or_path)
        raise DataError(f"{where}: label map ids must be 1..{len(ids)} without gaps, found {ids}")
    return [items[i] for i in ids]
