"""CSV box reader: one row per box.

Layouts seen in the field (all read by this one reader):

* seed 000 (Azure ML TF1 template): ``image_name,classid,xmin,ymin,xmax,ymax`` with a class map
  (option ``class_map``: ``{id: name}`` or a ``label_map.pbtxt`` path); also the default layout of a
  CSV **without** a header row;
* the LabelImg ``xml_to_csv`` layout: ``filename,width,height,class,xmin,ymin,xmax,ymax`` (pinochle);
* any order of named columns, e.g. BCCD's ``filename,cell_type,xmin,xmax,ymin,ymax``.

Columns are matched to roles by header name (:data:`ALIASES`, case-insensitive). Option ``columns``
overrides that: a list names the file's columns in order (role names or aliases, ``"-"`` to ignore a
column; the first row is skipped as a header when its coordinate cells are not numbers), or a dict maps
header names to roles. Coordinates are absolute pixels, XYXY.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from training.annotations._common import ReadContext, brief, find_files, parse_number, parse_size
from training.annotations.record import Box, ImageRecord
from training.errors import ConfigError

ROLES = ("image", "label", "class_id", "xmin", "ymin", "xmax", "ymax", "width", "height")
#: Header names (lower case) recognised for each role.
ALIASES: dict[str, tuple[str, ...]] = {
    "image": ("image", "filename", "file_name", "image_name", "imagename", "file", "path", "image_path", "img"),
    "label": ("label", "class", "class_name", "classname", "cell_type", "name", "category", "category_name"),
    "class_id": ("class_id", "classid", "category_id", "label_id", "object_id", "objectid"),
    "xmin": ("xmin", "x_min", "x1", "left"),
    "ymin": ("ymin", "y_min", "y1", "top"),
    "xmax": ("xmax", "x_max", "x2", "right"),
    "ymax": ("ymax", "y_max", "y2", "bottom"),
    "width": ("width", "image_width", "img_width"),
    "height": ("height", "image_height", "img_height"),
}
_ROLE_OF = {alias: role for role, names in ALIASES.items() for alias in names}
#: The layout of seed 000 (used for CSVs without a header row).
SEED_000_COLUMNS = ["image_name", "classid", "xmin", "ymin", "xmax", "ymax"]
_IGNORE = ("-", "_", "", "skip", "ignore")


def _role(name: str, file: Path) -> str | None:
    key = name.strip().lower()
    if key in _IGNORE:
        return None
    if key in _ROLE_OF:
        return _ROLE_OF[key]
    raise ConfigError(f"{file}: column name {name!r} is not a known role; roles: {', '.join(ROLES)} (or '-' to ignore)")


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _layout(first: list[str], file: Path, columns: Any) -> tuple[dict[str, int], bool]:
    """Map roles to column indexes; returns ``(roles, first_row_is_header)``."""
    roles: dict[str, int] = {}
    if isinstance(columns, dict):
        header = [c.strip() for c in first]
        lower = [c.lower() for c in header]
        for name, role in columns.items():
            if role not in ROLES:
                raise ConfigError(f"columns: {role!r} is not a role; roles: {', '.join(ROLES)}")
            if name.strip().lower() not in lower:
                raise ConfigError(f"{file}: header has no column {name!r} (header: {header})")
            roles[role] = lower.index(name.strip().lower())
        for i, h in enumerate(lower):
            r = _ROLE_OF.get(h)
            if r and r not in roles and i not in roles.values():
                roles[r] = i
        return roles, True
    if columns is not None:
        names = list(columns)
        for i, n in enumerate(names):
            r = _role(n, file)
            if r is not None:
                if r in roles:
                    raise ConfigError(f"columns: role {r!r} given twice ({names})")
                roles[r] = i
        coord_cells = [
            first[roles[k]] for k in ("xmin", "ymin", "xmax", "ymax") if k in roles and roles[k] < len(first)
        ]
        is_header = bool(coord_cells) and not any(_is_number(c) for c in coord_cells)
        return roles, is_header
    # No option: a header row if no cell of the first row is a number.
    if first and not any(_is_number(c) for c in first):
        for i, h in enumerate(first):
            r = _ROLE_OF.get(h.strip().lower())
            if r and r not in roles:
                roles[r] = i
        return roles, True
    if len(first) == len(SEED_000_COLUMNS):
        return {_ROLE_OF[n]: i for i, n in enumerate(SEED_000_COLUMNS)}, False
    raise ConfigError(
        f"{file}: no header row and {len(first)} columns; pass columns=[...] naming them (e.g. {SEED_000_COLUMNS})"
    )


def _check_roles(
    roles: dict[str, int], file: Path, first: list[str], id_to_name: dict[int, str] | None, from_filename: bool
) -> None:
    """Raise ConfigError when the layout has no image or coordinate column, or no way to get a class."""
    missing = [r for r in ("image", "xmin", "ymin", "xmax", "ymax") if r not in roles]
    if missing:
        raise ConfigError(f"{file}: no column for {missing}; pass columns=[...] (roles: {', '.join(ROLES)})")
    if "label" not in roles and "class_id" not in roles and not from_filename:
        raise ConfigError(f"{file}: no class column (label or class_id) and no class_from_filename")
    if "label" not in roles and "class_id" in roles and id_to_name is None and not from_filename:
        raise ConfigError(f"{file}: column {first[roles['class_id']]!r} holds class ids; pass class_map")


def _row_label(row: list[str], roles: dict[str, int], id_to_name: dict[int, str] | None, from_filename: bool) -> str:
    """A row's class name: its label, its class id through the class map, or "" (from the file name).

    Raises ValueError naming the problem (not an integer, not in the class map, empty class).
    """
    if "label" in roles and row[roles["label"]].strip():
        return row[roles["label"]].strip()
    if "class_id" in roles and id_to_name is not None:
        cid_text = row[roles["class_id"]].strip()
        try:
            cid = int(float(cid_text))
        except (ValueError, OverflowError):  # OverflowError: inf, 1e400
            raise ValueError(f"class id {brief(cid_text)} is not an integer") from None
        if cid not in id_to_name:
            raise ValueError(f"class id {cid} is not in the class map {sorted(id_to_name)}")
        return id_to_name[cid]
    if from_filename:
        return ""
    raise ValueError("empty class")


def read_csv(
    ctx: ReadContext,
    inputs: list[Path],
    images: list[Path],
    *,
    columns: list[str] | dict[str, str] | None = None,
    class_map: dict[int, str] | str | os.PathLike[str] | None = None,
    delimiter: str = ",",
) -> tuple[list[ImageRecord], list[str] | None]:
    """Read every ``*.csv`` in ``inputs``; rows are grouped into one record per (file, image name).

    ``images``: folders in which each row's file name is looked up, in order (default: the CSV's
    folder). ``class_map``: ``{class id: name}`` or a label map path, needed with a ``class_id``
    column; its order (by id) becomes the class order. Bad rows (wrong column count, a coordinate that
    is not a number, an unknown class id) are rejected with ``line N`` (1-based line of the file).
    Raises :class:`ConfigError` for a layout without image, coordinates or class columns.
    """
    from training.annotations.writers import read_label_map_items

    id_to_name: dict[int, str] | None = None
    if class_map is not None:
        if isinstance(class_map, dict):
            id_to_name = {int(k): str(v) for k, v in class_map.items()}
        else:
            id_to_name = read_label_map_items(class_map)
    records: list[ImageRecord] = []
    for file in find_files(inputs, (".csv",), "CSV"):
        src = ctx.rel(file)
        locator = ctx.locator([*images, file.parent] if images else [file.parent])
        try:
            with open(file, newline="", encoding="utf-8-sig") as fh:
                rows = list(csv.reader(fh, delimiter=delimiter))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            ctx.reject(file, "", f"cannot read CSV: {exc}")
            continue
        # csv.reader yields logical rows; count physical lines for reports (no quoted newlines here).
        numbered = [(i, r) for i, r in enumerate(rows, start=1) if any(c.strip() for c in r)]
        if not numbered:
            ctx.warn(file, "", "empty CSV file")
            continue
        roles, has_header = _layout(numbered[0][1], file, columns)
        _check_roles(roles, file, numbered[0][1], id_to_name, ctx.label_pattern is not None)
        body = numbered[1:] if has_header else numbered
        ncols = max(roles.values()) + 1
        by_image: dict[str, ImageRecord] = {}
        for line, row in body:
            try:
                if len(row) < ncols:
                    raise ValueError(f"{len(row)} columns, expected at least {ncols}")
                raw_name = row[roles["image"]].strip()
                if not raw_name:
                    raise ValueError("empty image file name")
                coords = [parse_number(row[roles[k]], k) for k in ("xmin", "ymin", "xmax", "ymax")]
                label = _row_label(row, roles, id_to_name, ctx.label_pattern is not None)
                width = parse_size(row[roles["width"]]) if "width" in roles else None
                height = parse_size(row[roles["height"]]) if "height" in roles else None
            except ValueError as exc:
                ctx.reject(file, f"line {line}", str(exc))
                continue
            rec = by_image.get(raw_name)
            if rec is None:
                found = locator.find(raw_name)
                name = ctx.image_name(found, raw_name, images[0] if images else file.parent)
                rec = ImageRecord(image=name, width=width, height=height, source=src)
                by_image[raw_name] = rec
                records.append(rec)
            elif (width, height) != (None, None) and (width, height) != (rec.width, rec.height):
                ctx.warn(
                    file,
                    f"line {line}",
                    f"image size {width}x{height} disagrees with {rec.width}x{rec.height} on an earlier row; "
                    "the first is kept",
                )
            rec.boxes.append(Box(coords[0], coords[1], coords[2], coords[3], label=label, source=f"{src}#line[{line}]"))
    native = [id_to_name[k] for k in sorted(id_to_name)] if id_to_name else None
    return records, native
