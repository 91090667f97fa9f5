"""The identity of an export: a sha256 manifest of a run's ``export/`` folder (``{relative path: sha256 hex}``).

The export stage records the manifest's digest in ``run.json`` (``stages.export.artifact_sha256``) as
soon as the folder is complete (SavedModel, TFLite models, ``parity.json``): the files that were
evaluated. Registration hashes the folder again and refuses it when the digest differs
(:mod:`deployment.registry.approval`); :mod:`deployment.registry.artifact` builds the checks of
deploy, promote and serving on the same two functions.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from training import storage

#: File name of the manifest written into ``export/`` at registration (excluded from the manifest itself).
MANIFEST_FILE = "detops-manifest.json"

_CHUNK = 1 << 20


def _sha256_file(fs: Any, path: str) -> str:
    h = hashlib.sha256()
    with fs.open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def compute_manifest(folder_url: str) -> dict[str, str]:
    """``{relative path (with /): sha256 hex}`` of every file under ``folder_url``, sorted by path.

    ``folder_url`` is a local path or an fsspec URL (``s3://``, ``az://``). The manifest file
    :data:`MANIFEST_FILE` at the top of the folder is skipped. Raises :class:`training.errors.NotFoundError`
    when the folder holds no file.
    """
    from training.errors import NotFoundError

    fs, root = storage.filesystem(folder_url)
    root = root.rstrip("/")
    fs.invalidate_cache(root)  # hash what is there now, not a cached listing (s3fs/adlfs keep ETags)
    found = fs.find(root) if fs.exists(root) else []
    out: dict[str, str] = {}
    for path in sorted(found):
        rel = path[len(root) :].lstrip("/")
        if not rel or rel == MANIFEST_FILE or fs.isdir(path):
            continue
        out[rel] = _sha256_file(fs, path)
    if not out:
        raise NotFoundError(f"no files under {folder_url!r} to register")
    return out


def manifest_digest(manifest: dict[str, str]) -> str:
    """sha256 hex of the manifest's canonical JSON (keys sorted, no spaces): the artifact's identity."""
    canon = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canon).hexdigest()
