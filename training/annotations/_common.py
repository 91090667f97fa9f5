"""Shared plumbing of the annotation readers: inputs, dataset root, image lookup, class names.

Everything here works on **local** paths (``pathlib``). A dataset on ``az://`` or ``s3://`` is
downloaded first (``training.storage``); decoding thousands of small images over the network one by
one would be slower than the copy.
"""

from __future__ import annotations

import math
import os
import posixpath
import re
import reprlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath

from training.annotations.record import Box, Dataset, ImageRecord, Issue
from training.errors import ConfigError, DataError

#: File name suffixes treated as images when looking a file up by its stem (lower case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".jpe", ".jfif")

#: Largest image width or height an annotation may claim: PNG's limit (a 31-bit unsigned integer, RFC
#: 2083), beyond JPEG's 65535 and TIFF's; a larger number is malformed, not an image size.
MAX_IMAGE_SIDE = 2**31 - 1

_BRIEF = reprlib.Repr()
_BRIEF.maxlevel, _BRIEF.maxstring, _BRIEF.maxother, _BRIEF.maxlist, _BRIEF.maxdict = 3, 60, 60, 6, 4

#: Oxford-IIIT Pets style: ``Abyssinian_12.jpg`` -> ``Abyssinian`` (the stem minus ``_<digits>``).
PETS_PATTERN = r"^(?P<label>.+?)_\d+$"


def as_path_list(path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None) -> list[Path]:
    """Normalize a path, or a list of paths, to a list of ``Path`` (``None`` -> ``[]``)."""
    if path is None:
        return []
    if isinstance(path, (str, os.PathLike)):
        return [Path(path)]
    return [Path(p) for p in path]


def is_escaping(name: str) -> bool:
    """True if an image name from an annotation is absolute or climbs out with ``..``.

    ``name`` is the path relative to the dataset root (POSIX separators), as stored in
    :attr:`ImageRecord.image`. Windows drive paths (``C:\\x.jpg``) and UNC paths count as absolute.
    """
    if not name:
        return True
    if name.startswith("/") or name.startswith("\\") or PureWindowsPath(name).drive:
        return True
    norm = posixpath.normpath(name.replace("\\", "/"))
    return norm == ".." or norm.startswith("../")


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False also for a name the OS refuses (too long, a NUL byte: pathlib raises)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


class ImageLocator:
    """Finds an image file by the name an annotation gives, in an ordered list of folders.

    Lookup order per folder: the exact relative name; then a case-insensitive match of the file
    name (``IMG_1.JPG`` vs ``img_1.jpg``, common in LabelImg exports made on Windows/macOS); then,
    when the name has no image suffix, the stem with any suffix of :data:`IMAGE_SUFFIXES`.
    Folder listings are cached, so the cost is one ``listdir`` per folder.
    """

    def __init__(self, folders: Iterable[Path], cache: dict | None = None) -> None:
        seen: list[Path] = []
        for f in folders:
            if f not in seen:
                seen.append(f)
        self.folders = seen
        # Folder listings, shareable between locators of one read (one listdir per folder).
        self._listing: dict[Path, tuple[dict[str, str], dict[str, list[str]]]] = {} if cache is None else cache

    def _list(self, folder: Path) -> tuple[dict[str, str], dict[str, list[str]]]:
        if folder not in self._listing:
            by_lower: dict[str, str] = {}
            by_stem: dict[str, list[str]] = {}
            try:
                names = sorted(os.listdir(folder))
            except (OSError, ValueError):  # ValueError: a NUL byte or an unencodable name from an annotation
                names = []
            for n in names:
                by_lower.setdefault(n.lower(), n)
                stem, suffix = os.path.splitext(n)
                if suffix.lower() in IMAGE_SUFFIXES:
                    by_stem.setdefault(stem.lower(), []).append(n)
            self._listing[folder] = (by_lower, by_stem)
        return self._listing[folder]

    def find(self, name: str) -> Path | None:
        """The existing file for ``name`` (relative, POSIX or Windows separators), or ``None``.

        Escaping names (see :func:`is_escaping`) are never looked up.
        """
        name = name.replace("\\", "/").strip()
        if not name or is_escaping(name):
            return None
        for folder in self.folders:
            exact = folder / name
            if _is_file(exact):
                return exact
            sub, base = posixpath.split(name)
            sub_folder = folder / sub if sub else folder
            by_lower, by_stem = self._list(sub_folder)
            hit = by_lower.get(base.lower())
            if hit is not None and _is_file(sub_folder / hit):
                return sub_folder / hit
            stem, suffix = os.path.splitext(base)
            if suffix.lower() not in IMAGE_SUFFIXES:
                hits = by_stem.get(base.lower()) or []
                if len(hits) == 1:
                    return sub_folder / hits[0]
        return None

    def find_stem(self, stem: str) -> Path | None:
        """The one image whose stem is ``stem`` (case-insensitive), in the first folder holding one."""
        for folder in self.folders:
            hits = self._list(folder)[1].get(stem.lower()) or []
            if hits:
                return folder / hits[0]
        return None


@dataclass
class ReadContext:
    """State shared by one ``read_dataset`` call: the root and the collected issues."""

    root: Path
    format: str
    label_pattern: re.Pattern[str] | None = None  # class_from_filename, when given
    default_label: str | None = None  # the one class of a single-class `classes` list: labels label-less rows
    listing_cache: dict = field(default_factory=dict)
    image_folders: list[Path] = field(default_factory=list)  # the `images` option (Dataset.image_folders)
    rejected: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)

    def rel(self, path: Path) -> str:
        """``path`` relative to the root with ``/`` separators; absolute if it is outside."""
        try:
            rel = os.path.relpath(os.path.abspath(path), os.path.abspath(self.root))
        except ValueError:  # different drive on Windows
            return Path(path).as_posix()
        rel = rel.replace(os.sep, "/")
        if rel == ".." or rel.startswith("../"):
            return os.path.abspath(path).replace(os.sep, "/")
        return rel

    def image_name(self, found: Path | None, raw_name: str, lookup_folder: Path) -> str:
        """The :attr:`ImageRecord.image` value for an image an annotation names.

        ``found``: the located file, if any. Otherwise the name is kept relative to the root
        through ``lookup_folder`` (so validation reports it missing), or kept as written when it is
        absolute (so validation rejects it as escaping the dataset folder).
        """
        if found is not None:
            rel = os.path.relpath(os.path.abspath(found), os.path.abspath(self.root)).replace(os.sep, "/")
            return rel
        raw = raw_name.replace("\\", "/").strip()
        if raw.startswith("/") or PureWindowsPath(raw_name).drive or raw_name.startswith("\\"):
            return raw_name
        base = os.path.relpath(os.path.abspath(lookup_folder), os.path.abspath(self.root)).replace(os.sep, "/")
        return posixpath.normpath(posixpath.join(base, raw)) if base != "." else posixpath.normpath(raw)

    def locator(self, folders: Iterable[Path]) -> ImageLocator:
        """An :class:`ImageLocator` over ``folders`` sharing this read's folder-listing cache."""
        return ImageLocator(folders, self.listing_cache)

    def reject(self, file: Path | str, record: str, reason: str) -> None:
        """Record an entry that could not be read (dropped from the dataset, never silently)."""
        self.rejected.append(Issue(self.rel(Path(file)) if isinstance(file, Path) else file, record, reason))

    def warn(self, file: Path | str, record: str, reason: str) -> None:
        """Record a warning about an entry that was kept."""
        self.warnings.append(Issue(self.rel(Path(file)) if isinstance(file, Path) else file, record, reason))


def dataset_root(inputs: Sequence[Path], images: Sequence[Path], root: str | os.PathLike[str] | None) -> Path:
    """The dataset root: ``root`` if given, else the deepest folder holding every input and image folder."""
    if root is not None:
        return Path(root)
    folders = [p if p.is_dir() else p.parent for p in inputs] + list(images)
    if not folders:
        raise ConfigError("no annotation path given")
    return Path(os.path.commonpath([os.path.abspath(f) for f in folders]))


def find_files(inputs: Sequence[Path], suffixes: tuple[str, ...], what: str) -> list[Path]:
    """Expand folders (recursively, sorted) and files into the annotation files to read.

    Raises :class:`DataError` when an input does not exist or a folder holds no such file.
    """
    out: list[Path] = []
    for p in inputs:
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.name.lower().endswith(suffixes))
            if not found:
                raise DataError(f"{p}: no {what} files ({', '.join(suffixes)}) found in this folder")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"{p}: annotation path does not exist")
    return out


def label_pattern(option: bool | str | None) -> re.Pattern[str] | None:
    """Compile the ``class_from_filename`` option: ``True`` -> Pets pattern, a string -> that regex.

    The regex is matched (``re.fullmatch``) against the image file's stem; the label is the group
    named ``label``, else group 1, else the whole match.
    """
    if option is None or option is False:
        return None
    if option is True:
        return re.compile(PETS_PATTERN)
    if isinstance(option, str):
        try:
            return re.compile(option)
        except re.error as exc:
            raise ConfigError(f"class_from_filename: invalid regular expression {option!r}: {exc}") from None
    raise ConfigError(f"class_from_filename must be true or a regular expression, not {option!r}")


def label_from_filename(pattern: re.Pattern[str], image: str) -> str | None:
    """The class name ``pattern`` extracts from the stem of ``image``, or ``None`` if no match."""
    stem = os.path.splitext(posixpath.basename(image.replace("\\", "/")))[0]
    m = pattern.fullmatch(stem) or pattern.match(stem)
    if not m:
        return None
    if "label" in m.groupdict():
        return m.group("label")
    return m.group(1) if m.groups() else m.group(0)


def apply_class_from_filename(
    records: list[ImageRecord], pattern: re.Pattern[str] | None, ctx: ReadContext
) -> list[ImageRecord]:
    """Relabel every box of each record with the class its file name gives (records that do not
    match are rejected with their source named)."""
    if pattern is None:
        return records
    out = []
    for r in records:
        label = label_from_filename(pattern, r.image)
        if label is None:
            ctx.reject(r.source or r.image, "", f"class_from_filename: {r.image!r} does not match {pattern.pattern!r}")
            continue
        r.boxes = [Box(b.xmin, b.ymin, b.xmax, b.ymax, label, b.source, b.difficult, b.iscrowd) for b in r.boxes]
        out.append(r)
    return out


def order_classes(records: list[ImageRecord], given: Sequence[str] | None) -> list[str]:
    """Class names in label-map order: ``given`` first (as ordered), then any other label seen, sorted."""
    seen = {b.label for r in records for b in r.boxes}
    out = list(given or [])
    out.extend(sorted(seen - set(out)))
    return out


def build_dataset(ctx: ReadContext, records: list[ImageRecord], classes: Sequence[str] | None) -> Dataset:
    """Assemble the :class:`Dataset` a reader returns."""
    return Dataset(
        root=str(ctx.root),
        records=records,
        classes=order_classes(records, classes),
        format=ctx.format,
        rejected=list(ctx.rejected),
        warnings=list(ctx.warnings),
        image_folders=[str(f) for f in ctx.image_folders],
    )


def brief(value: object) -> str:
    """A short ``repr`` of a value read from an annotation, for reasons in the quality report.

    Bounded in length and depth (:mod:`reprlib`: 3 levels, 60 characters per string), so that a huge or
    deeply nested value (a malformed file) gives a readable sentence and no ``RecursionError``.
    """
    try:
        return _BRIEF.repr(value)
    except (ValueError, RecursionError):  # an int over 4300 digits (Python's str limit), a deep structure
        return f"<{type(value).__name__}>"


def parse_number(text: str | float | int | None, what: str) -> float:
    """Parse a coordinate into a float; raises ``ValueError`` naming ``what`` (the caller records the issue).

    ``inf``/``nan`` (and ``1e400``, which overflows to ``inf``) are returned as they are: validation
    rejects such a box as ``non_finite``. An integer too large for a float (JSON allows ``10**400``),
    a list, an object or a boolean raise ``ValueError``.
    """
    if text is None:
        raise ValueError(f"{what} is missing")
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ValueError(f"{what} is not a number: {brief(text)}")
    if isinstance(text, (int, float)):
        try:
            return float(text)
        except OverflowError:
            raise ValueError(f"{what} is out of range: {brief(text)}") from None
    t = text.strip()
    try:
        return float(t)
    except ValueError:
        raise ValueError(f"{what} is not a number: {brief(t)}") from None


def parse_size(value: str | int | float | None) -> int | None:
    """An image width/height as an int (``"499px"`` and ``"499"`` accepted), ``None`` if absent/0/negative.

    Raises ``ValueError`` for a value that is not a number (a list, an object, a boolean, text), not
    finite (``inf``, ``nan``, ``1e400``) or above :data:`MAX_IMAGE_SIDE`.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"image size is not a number: {brief(value)}")
    try:
        t = value.strip().lower().removesuffix("px").strip() if isinstance(value, str) else value
        f = float(t)
    except (ValueError, OverflowError):
        raise ValueError(f"image size is not a number: {brief(value)}") from None
    if not math.isfinite(f) or f > MAX_IMAGE_SIDE:
        raise ValueError(f"image size {brief(value)} is out of range (at most {MAX_IMAGE_SIDE} pixels)")
    v = int(round(f))
    return v if v > 0 else None
