"""Copy a run config's dataset to the stack's datasets location (``detops dataset upload``).

The run config names its data as ``${DETOPS_DATASETS}/<rel>`` (configs/bccd.yaml: ``${DETOPS_DATASETS}/bccd/BCCD``).
The folders are read with ``DETOPS_DATASETS`` set to the local root (``source``) and copied to
``<destination>/<rel>``: the layout below the root stays the same, so a cloud job whose ``DETOPS_DATASETS`` is
the destination (the stack output of infra/aws, ``s3://<bucket>``, or infra/azure, ``az://datasets``) reads the
same records, and the pin (:func:`training.pipeline.dataset_hash`, the config's ``data.sha256``) still matches.

The copy is idempotent: a file whose copy at the destination has the same size and hash (local: sha256 of both;
S3: the ETag MD5; Azure Blob: ``Content-MD5``, :func:`training.storage.sync_dir`) is skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from training import storage
from training.errors import ConfigError, DataError

#: fsspec protocols a datasets location may use: a local folder, S3 (s3fs), Azure Blob (adlfs).
SCHEMES = ("file", "s3", "az", "abfs")


@dataclass
class UploadPlan:
    """What :func:`upload_dataset` copies: ``folders`` as ``(local folder, destination URL)`` pairs, and the pin."""

    source: str
    destination: str
    folders: list[tuple[str, str]]
    sha256: str
    counts: dict[str, int] = field(default_factory=dict)


def check_destination(url: str) -> str:
    """``url`` without a trailing ``/``. Raises ConfigError when its scheme is not one of :data:`SCHEMES`."""
    scheme = url.split("://", 1)[0] if "://" in url else "file"
    if scheme not in SCHEMES:
        raise ConfigError(
            f"dataset destination {url}: unknown scheme {scheme}:// (use a local folder, s3://BUCKET or az://CONTAINER)"
        )
    return url.rstrip("/")


def dataset_folders(config: str | Path, source: str) -> tuple[list[str], object]:
    """The local folders of ``config``'s ``data.path`` / ``data.images`` with ``DETOPS_DATASETS=source``, nested
    ones dropped, and the loaded config's ``data`` section.

    Raises:
      ConfigError: the config is unreadable, or a folder does not lie under ``source`` (it must say
        ``${DETOPS_DATASETS}/...``, else its place at the destination is unknown).
      DataError: a folder is missing.
    """
    from unittest import mock

    from training.config import load_run_config

    with mock.patch.dict(os.environ, DETOPS_DATASETS=source):  # the config's ${DETOPS_DATASETS}, restored after
        data = load_run_config(config).data
    root = Path(source).resolve()
    folders = []
    for value in _as_list(data.path) + _as_list(data.images):
        folder = Path(value).resolve()
        if not storage.is_local(value) or not folder.is_relative_to(root):
            raise ConfigError(
                f"{config}: data folder {value} is not under the datasets root {source} "
                "(write it as ${DETOPS_DATASETS}/... in the run config)"
            )
        if not folder.is_dir():
            raise DataError(f"{config}: dataset folder {folder} does not exist (the datasets root is {source})")
        folders.append(folder)
    kept = [f for f in folders if not any(f != o and f.is_relative_to(o) for o in folders)]
    return sorted({str(f) for f in kept}), data


def upload_dataset(
    config: str | Path,
    source: str,
    destination: str,
    *,
    dry_run: bool = False,
    storage_options: dict | None = None,
    on_file=None,
) -> UploadPlan:
    """Copy ``config``'s dataset folders from the local datasets root ``source`` to ``destination`` (same layout).

    Args:
      config: the run config (YAML) whose ``data:`` section names the folders as ``${DETOPS_DATASETS}/...``.
      source: the local datasets root (``DETOPS_DATASETS`` on this machine, or ``--from``).
      destination: the stack's datasets root (a local folder, ``s3://BUCKET[/prefix]``, ``az://CONTAINER[/prefix]``).
      dry_run: list what would be copied (``on_file(action, src, dst, size)``), copy nothing.
      storage_options: passed to fsspec (e.g. ``account_name`` for ``az://``).
      on_file: called per file with ``("copy" | "skip", local path, destination URL, bytes)``.

    Returns:
      The plan, with ``sha256`` (the ``data.sha256`` pin of the dataset as read, :func:`training.pipeline.dataset_hash`)
      and ``counts`` (``uploaded``, ``skipped``, ``bytes_uploaded``, ``bytes_skipped``).

    Raises:
      ConfigError: bad config or destination scheme. DataError: missing folder or unreadable annotations.
      AccessDeniedError: the store refused a read or write (HTTP 403).
    """
    from training.pipeline import dataset_hash, read_config_dataset

    destination = check_destination(destination)
    source = os.path.abspath(os.path.expanduser(source))
    folders, data = dataset_folders(config, source)
    pin = dataset_hash(read_config_dataset(data).records)
    pairs = [(f, storage.join(destination, *Path(os.path.relpath(f, source)).parts)) for f in folders]
    counts = {"uploaded": 0, "skipped": 0, "bytes_uploaded": 0, "bytes_skipped": 0}
    for local, url in pairs:
        found = storage.sync_dir(local, url, dry_run=dry_run, storage_options=storage_options or {}, on_file=on_file)
        for k in counts:
            counts[k] += found[k]
    return UploadPlan(source=source, destination=destination, folders=pairs, sha256=pin, counts=counts)


def _as_list(value) -> list:
    return [] if value is None else list(value) if isinstance(value, list) else [value]
