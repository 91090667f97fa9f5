"""Datastore paths through fsspec: a local folder by default, ``az://`` (adlfs) or ``s3://`` (s3fs).

Every artifact of a run is written through these helpers so that pointing the datastore root at a
cloud URL changes nothing else. Local paths are plain paths (no ``file://`` needed).
"""

from __future__ import annotations

import json
import os
from typing import Any

import fsspec
from fsspec.core import url_to_fs


def join(root: str, *parts: str) -> str:
    """Join URL or path parts with ``/`` (fsspec URLs always use ``/``, also on Windows)."""
    out = root.rstrip("/")
    for p in parts:
        p = str(p).strip("/")
        if p:
            out = f"{out}/{p}"
    return out


def filesystem(url: str, **storage_options: Any) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return ``(filesystem, path)`` for a local path or an fsspec URL.

    Credentials for ``az://`` and ``s3://`` come from the environment (``AZURE_STORAGE_*``,
    ``AWS_*``) or managed/workload identity; never from files in the repository.
    """
    return url_to_fs(url, **storage_options)


def is_local(url: str) -> bool:
    """True for a plain path or ``file://`` URL."""
    return "://" not in url or url.startswith("file://")


def write_bytes(url: str, data: bytes) -> None:
    """Write ``data`` to ``url``, creating parent folders where the filesystem has folders."""
    fs, path = filesystem(url)
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    with fs.open(path, "wb") as f:
        f.write(data)


def read_bytes(url: str) -> bytes:
    """Read the whole object at ``url``."""
    fs, path = filesystem(url)
    with fs.open(path, "rb") as f:
        return f.read()


def write_json(url: str, obj: Any) -> None:
    """Write ``obj`` as indented UTF-8 JSON."""
    write_bytes(url, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode())


def read_json(url: str) -> Any:
    """Read a JSON document."""
    return json.loads(read_bytes(url).decode())


def write_text(url: str, text: str) -> None:
    """Write UTF-8 text."""
    write_bytes(url, text.encode())


def exists(url: str) -> bool:
    """True if a file or folder exists at ``url``."""
    fs, path = filesystem(url)
    return fs.exists(path)


def upload_dir(local_dir: str, url: str) -> None:
    """Copy a local folder tree to ``url`` (idempotent: files are overwritten, not duplicated)."""
    fs, path = filesystem(url)
    for dirpath, _dirs, files in os.walk(local_dir):
        rel = os.path.relpath(dirpath, local_dir)
        for name in files:
            src = os.path.join(dirpath, name)
            dst = join(path, rel if rel != "." else "", name)
            fs.makedirs(dst.rsplit("/", 1)[0], exist_ok=True)
            fs.put_file(src, dst)
