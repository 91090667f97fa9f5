"""Labelled images in every common format -> one canonical record -> validated dataset -> COCO JSON / label map.

Public API::

    read_dataset(format, path, *, images=None, root=None, classes=None, class_from_filename=None, **options) -> Dataset
    validate(dataset, policy: ValidationPolicy | None = None) -> ValidationResult   # .dataset, .report
    to_coco(dataset) -> dict; label_map_pbtxt(classes) -> str; read_label_map(text_or_path) -> list[str]

Decisions (details in each module):

* Boxes are ``Box`` XYXY in absolute pixels of the image **as displayed** (after EXIF orientation);
  ``ImageRecord.image`` is relative to ``Dataset.root``.
* Readers never stop at one bad entry: what cannot be parsed goes to ``Dataset.rejected``
  (``Issue(file, record, reason)``; ``Rejection`` is the same class), doubts to ``Dataset.warnings``.
  Missing images, bad boxes etc. are left for ``validate`` to judge and count.
* ``validate`` rejects the later copy of a duplicate image (same SHA-256), rejects escaping paths,
  missing/undecodable images and, by default, size mismatches; it clips out-of-bounds boxes by
  default and flags images to re-encode (EXIF rotation, grayscale, CMYK, alpha, non-JPEG/PNG) in
  ``ImageRecord.reencode``. ``images_in == kept + rejected`` and ``boxes_in == kept + rejected`` always.
"""

from training.annotations.readers import READERS, read_dataset, register_reader
from training.annotations.record import Box, Dataset, ImageRecord, Issue, Rejection
from training.annotations.validate import QualityReport, Rejected, ValidationPolicy, ValidationResult, validate
from training.annotations.writers import label_map_pbtxt, read_label_map, read_label_map_items, to_coco

__all__ = [
    "READERS",
    "QualityReport",
    "Rejected",
    "ValidationPolicy",
    "ValidationResult",
    "validate",
    "Box",
    "Dataset",
    "ImageRecord",
    "Issue",
    "Rejection",
    "label_map_pbtxt",
    "read_dataset",
    "read_label_map",
    "read_label_map_items",
    "register_reader",
    "to_coco",
]
