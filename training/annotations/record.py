"""The one canonical annotation record every reader converts into.

Box convention (explicit, like detectron2's ``BoxMode.XYXY_ABS``):

* ``xmin, ymin, xmax, ymax`` in **absolute pixels**, float, in the coordinate frame of the image
  as stored on disk *after* EXIF orientation is applied;
* ``(0, 0)`` is the top-left corner of the top-left pixel, x grows right, y grows down;
* ``xmax``/``ymax`` are exclusive edges, so a box covering the whole image is
  ``(0, 0, width, height)``. Pascal VOC's 1-based inclusive pixel indices are kept as they are
  written (the common practice of LabelImg/VoTT consumers): at most one pixel of difference.

Model Garden and TFRecords want normalized ``ymin, xmin, ymax, xmax``; that conversion lives in
:mod:`training.tfrecord` and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath


@dataclass(frozen=True)
class Box:
    """One labelled box: ``xmin, ymin, xmax, ymax`` in absolute pixels (XYXY_ABS), float.

    ``label`` is the class *name* (class ids are assigned later from the label map).
    ``source`` names the annotation file and the record inside it (for error reports), e.g.
    ``"Annotations/BloodImage_00338.xml#object[3]"``.
    """

    xmin: float
    ymin: float
    xmax: float
    ymax: float
    label: str
    source: str = ""
    difficult: bool = False
    iscrowd: bool = False  # COCO ``iscrowd`` / Azure ML ``isCrowd``; readers of other formats leave False

    @property
    def width(self) -> float:
        """Box width in pixels (may be <= 0 for an invalid box)."""
        return self.xmax - self.xmin

    @property
    def height(self) -> float:
        """Box height in pixels (may be <= 0 for an invalid box)."""
        return self.ymax - self.ymin

    @property
    def area(self) -> float:
        """Box area in square pixels; 0 for an empty or inverted box."""
        return max(self.width, 0.0) * max(self.height, 0.0)


@dataclass
class ImageRecord:
    """One image and its boxes.

    ``image`` is the image path **relative to the dataset root**, POSIX separators (``a/b.jpg``);
    ``width``/``height`` are what the annotation claims, in pixels (``None`` when the format does
    not say, e.g. COCO-less CSVs); validation reads the real size from the file.
    ``source`` is the annotation file this record came from, relative to the annotation root.
    """

    image: str
    width: int | None
    height: int | None
    boxes: list[Box] = field(default_factory=list)
    source: str = ""
    # Filled in by validation (training.annotations.validate):
    sha256: str | None = None  # hex SHA-256 of the image file's bytes (duplicate / leakage checks)
    reencode: str | None = None  # why the bytes cannot be passed through as they are (EXIF rotation,
    #                              CMYK, alpha, non-JPEG/PNG...); None = pass the encoded bytes through

    @property
    def image_id(self) -> str:
        """A stable id: the image path without its extension."""
        return str(PurePosixPath(self.image).with_suffix(""))


@dataclass(frozen=True)
class Issue:
    """One entry a reader could not turn into a record, or a warning about one.

    ``file`` is the annotation file (relative to the dataset root when it is inside it),
    ``record`` names the place in it (``"line 12"``, ``"object[3]"``, ``"annotation id=5"``, ``""`` for
    the whole file), ``reason`` is a readable sentence.
    """

    file: str
    record: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        """``{"file", "record", "reason"}`` for JSON reports."""
        return {"file": self.file, "record": self.record, "reason": self.reason}

    def __str__(self) -> str:
        where = f"{self.file}#{self.record}" if self.record else self.file
        return f"{where}: {self.reason}"


#: The name the readers' API uses for an :class:`Issue` that dropped data.
Rejection = Issue


@dataclass
class Dataset:
    """A set of image records plus the ordered class names.

    ``root`` is the folder (local path or fsspec URL) that ``ImageRecord.image`` paths are relative
    to. ``classes`` is ordered; class id ``i + 1`` is ``classes[i]`` (id 0 is background, as in the
    TF Object Detection API label maps).
    """

    root: str
    records: list[ImageRecord]
    classes: list[str]
    format: str = ""
    # Filled by the readers (training.annotations.read_dataset): entries that could not be parsed
    # (bad XML file, bad CSV row, bad JSON line...), dropped from ``records`` but never silently;
    # and warnings about entries that were kept (e.g. a BBox-Label-Tool count line that disagrees).
    rejected: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    #: Local folders the caller named as image folders (``read_dataset(images=...)``): validation reads
    #: an image whose symbolic link leads into one of them, as into ``root``, and refuses any other link
    #: that leads out of ``root``.
    image_folders: list[str] = field(default_factory=list)

    @property
    def num_boxes(self) -> int:
        """Total number of boxes over all records."""
        return sum(len(r.boxes) for r in self.records)

    def class_id(self, name: str) -> int:
        """1-based class id of ``name``; raises ``KeyError`` if it is not in ``classes``."""
        try:
            return self.classes.index(name) + 1
        except ValueError:
            raise KeyError(name) from None
