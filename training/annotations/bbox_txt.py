"""BBox-Label-Tool txt reader (seed 003): one ``<image stem>.txt`` per image::

    2
    16 969 3527 2246 car
    1189 619 2708 1356 person

The first line is the number of boxes; each following line is ``x1 y1 x2 y2 label`` in absolute
pixels (XYXY). The original tool writes no label (4 numbers); such rows take their label from
``class_from_filename`` or, when ``classes`` lists exactly one class, from that class.
"""

from __future__ import annotations

from pathlib import Path

from training.annotations._common import ReadContext, find_files, parse_number
from training.annotations.record import Box, ImageRecord


def read_bbox_txt(ctx: ReadContext, inputs: list[Path], images: list[Path]) -> tuple[list[ImageRecord], None]:
    """Read every ``*.txt`` in ``inputs``; the image is the file with the txt's stem and an image
    suffix, looked up in ``images`` (default: the txt's folder and a sibling ``images/`` folder).

    A count line that disagrees with the number of box rows is a warning (rows kept); a bad row is
    rejected with ``line N``; a file whose first line is not a count is rejected whole.
    """
    records: list[ImageRecord] = []
    for txt in find_files(inputs, (".txt",), "BBox-Label-Tool txt"):
        src = ctx.rel(txt)
        try:
            lines = txt.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            ctx.reject(txt, "", f"cannot read file: {exc}")
            continue
        numbered = [(i, ln.strip()) for i, ln in enumerate(lines, start=1) if ln.strip()]
        if not numbered:
            ctx.reject(txt, "", "empty file (expected a count line)")
            continue
        count_line, count_text = numbered[0]
        try:
            count = int(count_text)
        except ValueError:
            ctx.reject(txt, f"line {count_line}", f"first line {count_text!r} is not a box count")
            continue
        locator = ctx.locator([*images] if images else [txt.parent, txt.parent.parent / "images"])
        found = locator.find_stem(txt.stem)
        name = ctx.image_name(found, txt.stem + ".jpg", images[0] if images else txt.parent)
        rec = ImageRecord(image=name, width=None, height=None, source=src)
        rows = numbered[1:]
        if len(rows) != count:
            ctx.warn(
                txt,
                f"line {count_line}",
                f"count line says {count} boxes but {len(rows)} box rows follow; the rows are read",
            )
        for line, text in rows:
            parts = text.split()
            try:
                if len(parts) < 4:
                    raise ValueError(f"expected 'x1 y1 x2 y2 label', got {text!r}")
                coords = [parse_number(p, k) for p, k in zip(parts[:4], ("x1", "y1", "x2", "y2"), strict=False)]
                label = " ".join(parts[4:]) or (ctx.default_label or "")
                if not label and ctx.label_pattern is None:
                    raise ValueError(
                        "no label (5th field); pass class_from_filename, or a single-class `classes` list, "
                        "for label-less files"
                    )
            except ValueError as exc:
                ctx.reject(txt, f"line {line}", str(exc))
                continue
            rec.boxes.append(Box(coords[0], coords[1], coords[2], coords[3], label=label, source=f"{src}#line[{line}]"))
        records.append(rec)
    return records, None
