"""Data-quality validation of a :class:`Dataset`: ``validate(dataset, policy) -> ValidationResult``.

Rules (each rejection names the image, the annotation source and a reason code):

==================  ======  ===============================================================
code                level   rule
==================  ======  ===============================================================
path_escape         image   the image name is absolute or climbs out of the root with ``..``, or
                            the file is a symbolic link to a file outside the root (never read)
missing_image       image   the image file does not exist
unreadable_image    image   Pillow cannot decode it fully (``Image.load()``): truncated JPEG...;
                            or it is not a regular file (a device, a FIFO: never opened)
too_large           image   the file has more than ``policy.max_image_bytes`` bytes (never read)
size_mismatch       image   annotated width/height != real size (after EXIF orientation), with
                            ``policy.size_mismatch == "reject"``; ``"trust_image"`` keeps the
                            image with its real size and reports it
duplicate           image   same SHA-256 of the bytes as an earlier kept image: the later copy
                            is rejected (``policy.duplicates == "reject"``), its boxes with it;
                            ``"keep"`` only reports it
non_finite          box     a coordinate is NaN or infinite
inverted            box     ``xmax < xmin`` or ``ymax < ymin``
zero_area           box     ``xmax == xmin`` or ``ymax == ymin``
unknown_class       box     label not in ``policy.classes`` (when given)
out_of_bounds       box     box leaves ``[0, width] x [0, height]`` and ``policy.out_of_bounds ==
                            "reject"``; ``"clip"`` clips it (counted in ``boxes_clipped``)
outside_image       box     nothing of the box is left after clipping
==================  ======  ===============================================================

Not rejected, but flagged in ``ImageRecord.reencode`` (the bytes cannot be passed to training as
they are): EXIF orientation != 1, grayscale / palette / CMYK / alpha modes, formats other than
JPEG and PNG.

**EXIF convention.** Boxes follow the image *as displayed*, i.e. after EXIF orientation (what
browsers-based labelers -- VoTT, Azure ML data labeling -- show; see ``record.py``). Sizes are
compared in that frame. When an annotation's size equals the *stored* (unrotated) size instead,
the labeler saw the raw pixels (e.g. a Qt tool ignoring EXIF): the boxes are then transformed into the
displayed frame and the image is listed under ``exif_boxes_transformed``. That test needs a size that
differs between the frames, i.e. orientations 5-8 (90-degree turns); for 2-4 (mirror, 180 degrees) the
sizes agree and the convention is applied as is.

Invariant (checked, and in the report): ``images_in == images_kept + images_rejected`` and
``boxes_in == boxes_kept + boxes_rejected``; the boxes of a rejected image count as rejected with the
image's reason. Entries the reader could not parse at all are reported separately (``unparseable``)
because they never became records.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import os
import stat
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from training.annotations._common import is_escaping, order_classes
from training.annotations.record import Box, Dataset, ImageRecord, Issue
from training.config import ValidationPolicy

IMAGE_CODES = ("path_escape", "missing_image", "unreadable_image", "too_large", "size_mismatch", "duplicate")
BOX_CODES = ("non_finite", "inverted", "zero_area", "unknown_class", "out_of_bounds", "outside_image")
_EXIF_ORIENTATION = 0x0112


@dataclass
class Rejected:
    """One rejected image or box. ``boxes`` is how many boxes went with it (1 for a box)."""

    level: Literal["image", "box"]
    code: str
    reason: str
    image: str
    source: str
    boxes: int = 1
    label: str | None = None
    box: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``label``/``box`` only for a box)."""
        d = {
            "level": self.level,
            "code": self.code,
            "reason": self.reason,
            "image": self.image,
            "source": self.source,
            "boxes": self.boxes,
        }
        if self.level == "box":
            d.update(label=self.label, box=self.box)
        return d


@dataclass
class QualityReport:
    """The data-quality report of one validation (``to_dict()`` -> ``data/quality_report.json``)."""

    root: str
    format: str
    policy: dict[str, Any]
    images_in: int = 0
    images_kept: int = 0
    images_rejected: int = 0
    boxes_in: int = 0
    boxes_kept: int = 0
    boxes_rejected: int = 0
    boxes_clipped: int = 0
    images_without_boxes: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    clipped: list[dict[str, Any]] = field(default_factory=list)
    reencode: list[dict[str, str]] = field(default_factory=list)
    size_mismatches: list[dict[str, Any]] = field(default_factory=list)
    exif_boxes_transformed: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, str]] = field(default_factory=list)
    unparseable: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    per_class: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def counts_add_up(self) -> bool:
        """``images_in == kept + rejected`` and ``boxes_in == kept + rejected`` (and the list agrees)."""
        listed_images = sum(1 for r in self.rejected if r.level == "image")
        listed_boxes = sum(r.boxes for r in self.rejected)
        return (
            self.images_in == self.images_kept + self.images_rejected
            and self.boxes_in == self.boxes_kept + self.boxes_rejected
            and listed_images == self.images_rejected
            and listed_boxes == self.boxes_rejected
        )

    def first_problem(self) -> str | None:
        """The first unparseable entry, else the first rejection, as ``file#record: reason`` (one-line
        errors name it); None when nothing was rejected."""
        if self.unparseable:
            return str(self.unparseable[0])
        if self.rejected:
            r = self.rejected[0]
            return f"{r.source or r.image}: {r.code}: {r.reason}"
        return None

    def by_reason(self) -> dict[str, dict[str, int]]:
        """``{code: {"images": n, "boxes": n}}``: rejected images and boxes per reason code."""
        out: dict[str, dict[str, int]] = defaultdict(lambda: {"images": 0, "boxes": 0})
        for r in self.rejected:
            if r.level == "image":
                out[r.code]["images"] += 1
            out[r.code]["boxes"] += r.boxes
        return dict(out)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of everything in the report."""
        return {
            "root": self.root,
            "format": self.format,
            "policy": self.policy,
            "counts": {
                "images_in": self.images_in,
                "images_kept": self.images_kept,
                "images_rejected": self.images_rejected,
                "boxes_in": self.boxes_in,
                "boxes_kept": self.boxes_kept,
                "boxes_rejected": self.boxes_rejected,
                "boxes_clipped": self.boxes_clipped,
                "images_without_boxes": self.images_without_boxes,
                "images_to_reencode": len(self.reencode),
                "duplicates": len(self.duplicates),
                "unparseable": len(self.unparseable),
                "warnings": len(self.warnings),
            },
            "counts_add_up": self.counts_add_up,
            "rejected_by_reason": self.by_reason(),
            "per_class": self.per_class,
            "rejected": [r.to_dict() for r in self.rejected],
            "clipped": self.clipped,
            "reencode": self.reencode,
            "size_mismatches": self.size_mismatches,
            "exif_boxes_transformed": self.exif_boxes_transformed,
            "duplicates": self.duplicates,
            "unparseable": [i.to_dict() for i in self.unparseable],
            "warnings": [i.to_dict() for i in self.warnings],
            "seconds": round(self.seconds, 3),
        }

    def summary(self, max_items: int = 20) -> str:
        """Readable text: counts, reasons, per-class counts and the first ``max_items`` rejections."""
        lines = [
            f"Data quality: {self.root} ({self.format})",
            f"  images: {self.images_in} in = {self.images_kept} kept + {self.images_rejected} rejected"
            f" ({self.images_without_boxes} kept without boxes)",
            f"  boxes:  {self.boxes_in} in = {self.boxes_kept} kept + {self.boxes_rejected} rejected"
            f" ({self.boxes_clipped} clipped)",
        ]
        if not self.counts_add_up:
            lines.append("  ERROR: counts do not add up")
        if self.unparseable:
            lines.append(f"  unparseable annotation entries (not in the counts above): {len(self.unparseable)}")
        for code, c in sorted(self.by_reason().items()):
            lines.append(f"  rejected {code}: {c['images']} images, {c['boxes']} boxes")
        if self.reencode:
            lines.append(f"  images to re-encode: {len(self.reencode)}")
        if self.size_mismatches:
            lines.append(f"  size mismatches: {len(self.size_mismatches)}")
        if self.duplicates:
            lines.append(f"  duplicate images: {len(self.duplicates)}")
        if self.warnings:
            lines.append(f"  reader warnings: {len(self.warnings)}")
        if self.per_class:
            lines.append(
                "  per class (kept): "
                + ", ".join(f"{k} {v['boxes']} boxes/{v['images']} images" for k, v in self.per_class.items())
            )
        shown = [
            *(f"{i}" for i in self.unparseable),
            *(f"{r.source or r.image}: {r.code}: {r.reason}" for r in self.rejected),
        ]
        for s in shown[:max_items]:
            lines.append(f"    - {s}")
        if len(shown) > max_items:
            lines.append(f"    ... and {len(shown) - max_items} more (see the JSON report)")
        lines.append(f"  took {self.seconds:.2f} s")
        return "\n".join(lines)


@dataclass
class ValidationResult:
    """``dataset``: the clean dataset (kept images and boxes, real sizes, ``sha256``, ``reencode``);
    ``report``: the :class:`QualityReport`."""

    dataset: Dataset
    report: QualityReport


@dataclass
class _ImageInfo:
    ok: bool
    code: str = ""
    reason: str = ""
    width: int = 0  # after EXIF orientation
    height: int = 0
    raw_width: int = 0  # as stored
    raw_height: int = 0
    orientation: int = 1
    sha256: str = ""
    reencode: str | None = None


class _Refused(Exception):
    """An image file validation does not read: ``code`` (a code of :data:`IMAGE_CODES`) and reason."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _local_file(root: str, image: str, max_bytes: int, folders: list[str]) -> str:
    """The real path of ``root/image`` once it is known to be a regular file inside ``root`` (or one of
    ``folders``, real paths) of at most ``max_bytes`` bytes; raises :class:`_Refused` (``path_escape``
    for a symbolic link leading out of them, ``unreadable_image`` for a device or a FIFO, ``too_large``)
    or ``OSError``."""
    path = os.path.join(root, image)
    real, base = os.path.realpath(path), os.path.realpath(root)
    if not any(_inside(real, f) for f in (base, *folders)):
        raise _Refused(
            "path_escape",
            f"image is a symbolic link to {real}, outside the dataset folder {base} (links are followed "
            "only into the root and the `images` folders)",
        )
    st = os.stat(real)
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(path)
    if not stat.S_ISREG(st.st_mode):
        raise _Refused("unreadable_image", "not a regular file (a device, a FIFO or a socket)")
    if st.st_size > max_bytes:
        raise _Refused("too_large", f"image file has {st.st_size} bytes, more than max_image_bytes={max_bytes}")
    return real


def _read(root: str, image: str, max_bytes: int, folders: list[str]) -> bytes:
    """The bytes of ``root/image``, at most ``max_bytes`` (local: through :func:`_local_file`)."""
    from training import storage

    if storage.is_local(root):
        with open(_local_file(root, image, max_bytes, folders), "rb") as fh:
            data = fh.read(max_bytes + 1)
    else:
        fs, path = storage.filesystem(storage.join(root, image))
        size = fs.info(path).get("size") or 0
        if size > max_bytes:
            raise _Refused("too_large", f"image file has {size} bytes, more than max_image_bytes={max_bytes}")
        with fs.open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew since it was measured
        raise _Refused("too_large", f"image file has more than max_image_bytes={max_bytes} bytes")
    return data


def inspect_image(data: bytes) -> _ImageInfo:
    """Decode ``data`` fully with Pillow; size after EXIF orientation, SHA-256, re-encode reason."""
    from PIL import Image, ImageFile, UnidentifiedImageError

    digest = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format or "unknown"
            mode = im.mode
            info = dict(im.info)
            try:
                orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
            except Exception:  # a broken EXIF block must not hide the image itself
                orientation = 1
            im.load()  # decode every pixel: a truncated file fails here
            w, h = im.size
        if fmt == "JPEG" and ImageFile.LOAD_TRUNCATED_IMAGES and b"\xff\xd9" not in data[-64:]:
            # Some code in this process told Pillow to pad truncated files silently; check the
            # JPEG end-of-image marker ourselves (it ends the file, give or take trailing padding).
            raise OSError("image file is truncated (no JPEG end-of-image marker)")
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return _ImageInfo(ok=False, code="unreadable_image", reason=f"cannot decode image: {exc}", sha256=digest)
    if orientation not in range(1, 9):
        orientation = 1
    reasons = []
    if orientation != 1:
        reasons.append(f"EXIF orientation {orientation}: rotate the pixels (boxes follow the displayed image)")
    if mode in ("L", "1", "I", "I;16", "F"):
        reasons.append(f"grayscale (mode {mode}): convert to RGB")
    elif mode == "CMYK":
        reasons.append("CMYK: convert to RGB")
    elif mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in info):
        reasons.append(f"alpha channel (mode {mode}): drop to RGB")
    elif mode == "P":
        reasons.append("palette (mode P): convert to RGB")
    elif mode != "RGB":
        reasons.append(f"mode {mode}: convert to RGB")
    if fmt not in ("JPEG", "PNG"):
        reasons.append(f"format {fmt}: re-encode as JPEG")
    ow, oh = (h, w) if orientation in (5, 6, 7, 8) else (w, h)
    return _ImageInfo(
        ok=True,
        width=ow,
        height=oh,
        raw_width=w,
        raw_height=h,
        orientation=orientation,
        sha256=digest,
        reencode="; ".join(reasons) or None,
    )


def _inspect_path(root: str, image: str, max_bytes: int, folders: list[str]) -> _ImageInfo:
    try:
        data = _read(root, image, max_bytes, folders)
    except _Refused as exc:
        return _ImageInfo(ok=False, code=exc.code, reason=exc.reason)
    except FileNotFoundError:
        return _ImageInfo(ok=False, code="missing_image", reason="image file not found")
    except IsADirectoryError:
        return _ImageInfo(ok=False, code="missing_image", reason="image path is a folder")
    except OSError as exc:
        return _ImageInfo(ok=False, code="unreadable_image", reason=f"cannot read file: {exc.strerror or exc}")
    except ValueError as exc:  # a NUL byte or an unencodable character in the name an annotation gave
        return _ImageInfo(ok=False, code="missing_image", reason=f"image name cannot be a file name: {exc}")
    return inspect_image(data)


def orient_box(box: Box, orientation: int, raw_w: int, raw_h: int) -> Box:
    """Map a box from the stored pixel frame (``raw_w x raw_h``) to the frame after EXIF orientation.

    Orientations 1-8 as in the EXIF spec / ``PIL.ImageOps.exif_transpose`` (6 = rotate 90 deg
    clockwise to display, 8 = 90 deg counter-clockwise, 2/4 mirror, 5/7 transpose/transverse).
    """
    W, H = raw_w, raw_h

    def f(x: float, y: float) -> tuple[float, float]:
        return {
            1: (x, y),
            2: (W - x, y),
            3: (W - x, H - y),
            4: (x, H - y),
            5: (y, x),
            6: (H - y, x),
            7: (H - y, W - x),
            8: (y, W - x),
        }[orientation]

    (x1, y1), (x2, y2) = f(box.xmin, box.ymin), f(box.xmax, box.ymax)
    return dataclasses.replace(box, xmin=min(x1, x2), ymin=min(y1, y2), xmax=max(x1, x2), ymax=max(y1, y2))


def validate(dataset: Dataset, policy: ValidationPolicy | None = None) -> ValidationResult:
    """Validate ``dataset`` against ``policy`` (default :class:`ValidationPolicy`).

    Decodes every image once (thread pool of ``policy.workers``), fills ``width``/``height`` (real,
    after EXIF orientation), ``sha256`` and ``reencode`` on the kept records, drops what the rules
    reject and accounts for every image and box in the returned report. Never raises for bad data;
    raises :class:`ConfigError` for a bad policy.
    """
    policy = policy or ValidationPolicy()
    t0 = time.perf_counter()
    report = QualityReport(
        root=dataset.root,
        format=dataset.format,
        policy=policy.model_dump(),
        unparseable=list(dataset.rejected),
        warnings=list(dataset.warnings),
    )
    report.images_in = len(dataset.records)
    report.boxes_in = dataset.num_boxes

    to_inspect = sorted({r.image for r in dataset.records if not is_escaping(r.image)})
    folders = [os.path.realpath(f) for f in dataset.image_folders]

    def inspect(image: str) -> _ImageInfo:
        return _inspect_path(dataset.root, image, policy.max_image_bytes, folders)

    with ThreadPoolExecutor(max_workers=min(policy.workers, max(1, len(to_inspect)))) as pool:
        infos = dict(zip(to_inspect, pool.map(inspect, to_inspect), strict=False))

    check = _RecordCheck(dataset, policy, report)
    kept = [clean for rec in dataset.records if (clean := check(rec, infos.get(rec.image))) is not None]

    classes = list(policy.classes) if policy.classes is not None else order_classes(kept, dataset.classes)
    report.per_class = {
        c: {"boxes": check.per_class_boxes[c], "images": check.per_class_images[c]} for c in classes
    }
    report.seconds = time.perf_counter() - t0
    if not report.counts_add_up:  # a bug in this module, never bad data
        raise AssertionError(f"quality report counts do not add up: {report.to_dict()['counts']}")
    clean_ds = Dataset(
        root=dataset.root, records=kept, classes=classes, format=dataset.format, image_folders=dataset.image_folders
    )
    return ValidationResult(dataset=clean_ds, report=report)


class _RecordCheck:
    """Applies the rules to one record at a time, in record order (duplicates keep the first copy),
    accounting for every image and box in ``report``."""

    def __init__(self, dataset: Dataset, policy: ValidationPolicy, report: QualityReport) -> None:
        self.root = dataset.root
        self.policy = policy
        self.report = report
        self.allowed = set(policy.classes) if policy.classes is not None else None
        self.first_by_hash: dict[str, str] = {}
        self.per_class_boxes: Counter[str] = Counter()
        self.per_class_images: Counter[str] = Counter()

    def reject_image(self, rec: ImageRecord, code: str, reason: str) -> None:
        self.report.rejected.append(Rejected("image", code, reason, rec.image, rec.source, boxes=len(rec.boxes)))
        self.report.images_rejected += 1
        self.report.boxes_rejected += len(rec.boxes)

    def __call__(self, rec: ImageRecord, info) -> ImageRecord | None:
        """The cleaned record, or None when the whole image is rejected."""
        if is_escaping(rec.image):
            self.reject_image(rec, "path_escape", f"image path {rec.image!r} escapes the dataset folder {self.root}")
            return None
        if not info.ok:
            self.reject_image(rec, info.code, info.reason)
            return None
        boxes = self.check_size(rec, info)
        if boxes is None or self.is_rejected_duplicate(rec, info):
            return None
        W, H = info.width, info.height
        good = [c for b in boxes if (c := self.check_box(rec, b, W, H)) is not None]
        clean = dataclasses.replace(rec, width=W, height=H, boxes=good, sha256=info.sha256, reencode=info.reencode)
        report = self.report
        if info.reencode:
            report.reencode.append({"image": rec.image, "reason": info.reencode})
        report.images_kept += 1
        report.boxes_kept += len(good)
        if not good:
            report.images_without_boxes += 1
        for b in good:
            self.per_class_boxes[b.label] += 1
        for label in {b.label for b in good}:
            self.per_class_images[label] += 1
        return clean

    def check_size(self, rec: ImageRecord, info) -> list[Box] | None:
        """The record's boxes in displayed-image pixels (EXIF-transformed when the annotation used the
        raw size), or None when a size mismatch rejects the image."""
        boxes = list(rec.boxes)
        annotated = (rec.width, rec.height)
        real = (info.width, info.height)
        if not (rec.width and rec.height and annotated != real):
            return boxes
        raw = (info.raw_width, info.raw_height)
        if info.orientation != 1 and annotated == raw:
            self.report.exif_boxes_transformed.append(
                {
                    "image": rec.image,
                    "source": rec.source,
                    "orientation": info.orientation,
                    "annotated": list(annotated),
                    "displayed": list(real),
                }
            )
            return [orient_box(b, info.orientation, *raw) for b in boxes]
        reject = self.policy.size_mismatch == "reject"
        self.report.size_mismatches.append(
            {
                "image": rec.image,
                "source": rec.source,
                "annotated": list(annotated),
                "actual": list(real),
                "action": "rejected" if reject else "kept with the real size",
            }
        )
        if reject:
            self.reject_image(
                rec, "size_mismatch", f"annotation says {annotated[0]}x{annotated[1]}, image is {real[0]}x{real[1]}"
            )
            return None
        return boxes

    def is_rejected_duplicate(self, rec: ImageRecord, info) -> bool:
        """Record a byte-identical copy of an earlier image; True when the policy rejects it."""
        first = self.first_by_hash.get(info.sha256)
        if first is None:
            self.first_by_hash[info.sha256] = rec.image
            return False
        reject = self.policy.duplicates == "reject"
        self.report.duplicates.append(
            {"image": rec.image, "duplicate_of": first, "sha256": info.sha256, "action": "rejected" if reject else "kept"}
        )
        if reject:
            self.reject_image(rec, "duplicate", f"same bytes (SHA-256) as {first}")
        return reject

    def check_box(self, rec: ImageRecord, b: Box, W: int, H: int) -> Box | None:
        """The box (clipped when the policy clips), or None when a rule rejects it."""
        code, reason = _box_problem(b, W, H, self.allowed, self.policy)
        coords = (b.xmin, b.ymin, b.xmax, b.ymax)
        if code is None and (b.xmin < 0 or b.ymin < 0 or b.xmax > W or b.ymax > H):
            c = dataclasses.replace(
                b,
                xmin=min(max(b.xmin, 0.0), W),
                ymin=min(max(b.ymin, 0.0), H),
                xmax=min(max(b.xmax, 0.0), W),
                ymax=min(max(b.ymax, 0.0), H),
            )
            if c.xmax <= c.xmin or c.ymax <= c.ymin:
                code, reason = "outside_image", f"box {list(coords)} is outside the {W}x{H} image"
            else:
                self.report.boxes_clipped += 1
                self.report.clipped.append(
                    {
                        "image": rec.image,
                        "source": b.source,
                        "label": b.label,
                        "box": list(coords),
                        "clipped": [c.xmin, c.ymin, c.xmax, c.ymax],
                    }
                )
                b = c
        if code is not None:
            self.report.rejected.append(Rejected("box", code, reason, rec.image, b.source, 1, b.label, list(coords)))
            self.report.boxes_rejected += 1
            return None
        return b


def _box_problem(b: Box, W: int, H: int, allowed: set[str] | None, policy: ValidationPolicy) -> tuple[str | None, str]:
    """``(code, reason)`` of the first rule ``b`` breaks, or ``(None, "")`` (clipping is decided by the caller)."""
    coords = (b.xmin, b.ymin, b.xmax, b.ymax)
    if not all(math.isfinite(c) for c in coords):
        return "non_finite", f"non-finite coordinate in {list(coords)}"
    if b.xmax < b.xmin or b.ymax < b.ymin:
        return "inverted", f"inverted box (xmax < xmin or ymax < ymin): {list(coords)}"
    if b.xmax == b.xmin or b.ymax == b.ymin:
        return "zero_area", f"zero-area box {list(coords)}"
    if allowed is not None and b.label not in allowed:
        return "unknown_class", f"class {b.label!r} is not in {policy.classes}"
    if policy.out_of_bounds == "reject" and (b.xmin < 0 or b.ymin < 0 or b.xmax > W or b.ymax > H):
        return "out_of_bounds", f"box {list(coords)} leaves the {W}x{H} image"
    return None, ""
