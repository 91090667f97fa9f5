"""Labelled images in every common format -> one canonical record -> validated dataset -> COCO JSON / label map.

Public API::

    read_dataset(format, path, *, images=None, root=None, classes=None, class_from_filename=None, **options) -> Dataset
    validate(dataset, policy: ValidationPolicy | None = None) -> ValidationResult   # .dataset, .report
    to_coco(dataset) -> dict; label_map_pbtxt(classes) -> str; read_label_map(text_or_path) -> list[str]
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
