"""The reader registry: ``read_dataset(format, path, **options) -> Dataset``.

Every reader converts its format into the canonical record (:mod:`training.annotations.record`,
boxes XYXY in absolute pixels). Readers never raise for one bad entry: unparseable files, rows and
lines go to ``Dataset.rejected`` (file, record, reason) and are counted by the quality report.
They raise :class:`~training.errors.ConfigError` for bad options,
:class:`~training.errors.DataError` for a missing annotation path and
:class:`~training.errors.NotFoundError` for an unknown format.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from training.annotations._common import (
    ReadContext,
    apply_class_from_filename,
    as_path_list,
    build_dataset,
    dataset_root,
    label_pattern,
)
from training.annotations.azureml import read_azureml
from training.annotations.bbox_txt import read_bbox_txt
from training.annotations.coco import read_coco
from training.annotations.csv_format import read_csv
from training.annotations.record import Dataset
from training.annotations.voc import read_voc
from training.catalog import Catalog
from training.errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class ReaderSpec:
    """A registered reader: ``fn(ctx, inputs, images, **options) -> (records, native class order | None)``."""

    name: str
    fn: Callable
    description: str

    @property
    def options(self) -> list[str]:
        """Format-specific keyword options the reader accepts."""
        params = list(inspect.signature(self.fn).parameters.values())[3:]
        return [p.name for p in params]


READERS: Catalog[ReaderSpec] = Catalog("annotation format")


def register_reader(name: str, fn: Callable, description: str) -> None:
    """Add a reader to the registry (``name`` is what ``read_dataset(format=...)`` takes).

    Raises:
      ConfigError: ``name`` is already registered (a reader is never silently replaced).
    """
    READERS.register(name, ReaderSpec(name, fn, description))


register_reader("voc", read_voc, "Pascal VOC XML, one file per image (LabelImg, VoTT)")
register_reader("csv", read_csv, "CSV, one row per box (seed 000 layout, xml_to_csv layout, any named columns)")
register_reader("bbox_txt", read_bbox_txt, "BBox-Label-Tool txt, one file per image (seed 003)")
register_reader("coco", read_coco, "COCO JSON (bbox [x, y, w, h] pixels)")
register_reader("azureml", read_azureml, "Azure ML data-labeling / AutoML JSONL export (normalized boxes)")

COMMON_OPTIONS = ("images", "root", "classes", "class_from_filename")


def read_dataset(
    format: str,
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    root: str | os.PathLike[str] | None = None,
    classes: Sequence[str] | str | os.PathLike[str] | None = None,
    class_from_filename: bool | str | None = None,
    **options,
) -> Dataset:
    """Read a labelled dataset in ``format`` into a :class:`Dataset`.

    Args:
        format: a name in :data:`READERS`: ``voc``, ``csv``, ``bbox_txt``, ``coco``, ``azureml``.
        path: annotation file(s) or folder(s) (folders are searched recursively for the format's
            suffix: ``.xml``, ``.csv``, ``.txt``, ``.json``, ``.jsonl``).
        images: folder(s) in which the image names of the annotations are looked up, in order
            (each reader has sensible defaults, e.g. VOC's ``JPEGImages/`` sibling).
        root: the dataset root that ``ImageRecord.image`` is relative to; default: the deepest folder
            holding every annotation path and image folder.
        classes: the class order (a list, or a ``label_map.pbtxt`` path); labels not in it are
            appended, sorted. Default: the format's own order (COCO categories, a CSV ``class_map``),
            else sorted names. Restricting classes is :class:`ValidationPolicy`'s job. A list of
            exactly one class also labels label-less rows (BBox-Label-Tool's original 4-number rows).
        class_from_filename: ``True`` (Oxford-IIIT Pets: ``Abyssinian_12.jpg`` -> ``Abyssinian``, the
            stem minus a trailing ``_<digits>``) or a regex matched on the file stem (group ``label``
            or group 1); overrides/fills every box label; records that do not match are rejected.
        **options: format-specific (csv: ``columns``, ``class_map``, ``delimiter``).

    Returns:
        the :class:`Dataset`; ``Dataset.rejected`` lists what could not be parsed (file, record,
        reason) and ``Dataset.warnings`` what was kept with a doubt.

    Boxes are in absolute pixels XYXY of the image after EXIF orientation (see ``record.py``).
    """
    spec = READERS.lookup(format)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        known = list(spec.options) + list(COMMON_OPTIONS)
        raise ConfigError(
            "\n".join(
                f"{format} reader: unknown option {u!r}.{did_you_mean(u, known)} Options: {', '.join(sorted(known))}."
                for u in unknown
            )
        )
    inputs = as_path_list(path)
    if not inputs:
        raise ConfigError(f"{format} reader: no annotation path given")
    image_dirs = as_path_list(images)
    for d in image_dirs:
        if not d.is_dir():
            raise ConfigError(f"images folder {d} does not exist")
    ctx = ReadContext(
        root=dataset_root(inputs, image_dirs, root),
        format=format,
        label_pattern=label_pattern(class_from_filename),
        default_label=(
            str(classes[0]) if isinstance(classes, (list, tuple)) and len(classes) == 1 else None
        ),
        image_folders=image_dirs,
    )
    records, native = spec.fn(ctx, inputs, image_dirs, **options)
    records = apply_class_from_filename(records, ctx.label_pattern, ctx)
    if isinstance(classes, (str, os.PathLike)):
        from training.annotations.writers import read_label_map

        order: Sequence[str] | None = read_label_map(Path(classes))
    else:
        order = list(classes) if classes is not None else native
    return build_dataset(ctx, records, order)
