"""Datastore paths through fsspec: a local folder by default, ``az://`` (adlfs) or ``s3://`` (s3fs).

Every artifact of a run is written through these helpers so that pointing the datastore root at a
cloud URL changes nothing else. Local paths are plain paths (no ``file://`` needed).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
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
    ``azureml://datastores/<name>/paths/...`` URLs are opened as the datastore's ``az://`` location
    (:func:`training.cloud.azure.resolve_datastore_url`).
    """
    if url.startswith("azureml://"):  # what `submit --backend azureml` returns: open it on a CI runner too
        from training.cloud.azure import resolve_datastore_url

        url = resolve_datastore_url(url)
    return url_to_fs(url, **storage_options)


@contextlib.contextmanager
def _denied_as_error(url: str, verb: str):
    """Turn an object store's refusal of ``url`` (Azure Blob's HTTP 403, e.g. ``AuthorizationPermissionMismatch``:
    the identity in use lacks a data role on the container) into :class:`training.errors.AccessDeniedError`
    (or S3's ``AccessDenied``, also when s3fs re-raised it as ``PermissionError``) naming the URL, what was
    tried and the store's own message (:func:`training.errors.access_denied`); every
    other error passes unchanged."""
    from training.errors import access_denied

    try:
        yield
    except Exception as e:
        # s3fs raises PermissionError from botocore's ClientError (s3fs.errors.translate_boto_error): look at both
        denied = access_denied(e, f"{verb} {url}") or (e.__cause__ and access_denied(e.__cause__, f"{verb} {url}"))
        if denied is None:
            raise
        raise denied from e


def is_local(url: str) -> bool:
    """True for a plain path or ``file://`` URL."""
    return "://" not in url or url.startswith("file://")


def write_bytes(url: str, data: bytes) -> None:
    """Write ``data`` to ``url`` whole or not at all, creating parent folders where the filesystem has them.

    Locally the bytes go to a temporary file beside the target, are flushed to disk and renamed over
    it (``os.replace`` is atomic on POSIX), so a kill mid-write leaves the old file or the new one,
    never a truncated one. On object stores (``s3://``, ``az://``) one put of the whole object does
    the same: a reader sees the old object or the new one.

    Raises:
        AccessDeniedError: the store refused the write (HTTP 403: the identity lacks write on it).
    """
    if is_local(url):
        _write_local_atomic(Path(url.removeprefix("file://")), data)
        return
    fs, path = filesystem(url)
    with _denied_as_error(url, "write"):
        fs.pipe_file(path, data)


def _write_local_atomic(path: Path, data: bytes) -> None:
    """Temp file in ``path``'s folder, fsync, rename over ``path``; the temp file is removed on any error."""
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def create_bytes(url: str, data: bytes) -> None:
    """Create the object ``url`` with ``data`` only if it does not exist yet (compare-and-set on a name).

    Local files are opened with ``O_EXCL`` (``"xb"``); on S3 the put carries ``If-None-Match: *`` and on
    Azure Blob ``overwrite=False`` (the same header): of two writers racing for one name, exactly one
    wins. Parent folders are created.

    Raises:
        FileExistsError: the object already exists (another writer was first).
        AccessDeniedError: the store refused the write (HTTP 403: the identity lacks write on it).
    """
    if is_local(url):
        path = Path(url.removeprefix("file://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "xb") as f:
            f.write(data)
            f.flush()
        return
    fs, path = filesystem(url)
    try:
        with _denied_as_error(url, "create"):
            fs.pipe_file(path, data, mode="create")
    except FileExistsError:
        raise
    except OSError as e:  # s3fs: 412 PreconditionFailed
        if "PreconditionFailed" in str(e) or "412" in str(e) or "exists" in str(e).lower():
            raise FileExistsError(url) from e
        raise


def read_bytes(url: str) -> bytes:
    """Read the whole object at ``url``.

    Raises:
        AccessDeniedError: the store refused the read (HTTP 403: the identity lacks read on it).
    """
    fs, path = filesystem(url)
    with _denied_as_error(url, "read"), fs.open(path, "rb") as f:
        return f.read()


def write_json(url: str, obj: Any) -> None:
    """Write ``obj`` as indented UTF-8 JSON (``default=str`` for dates and paths), ending in a newline.

    ``url`` is a local path or an fsspec URL; parent folders are created.
    """
    write_bytes(url, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode())


def read_json(url: str) -> Any:
    """Read a JSON document (``ValueError`` if it is not JSON; see :func:`read_json_object`)."""
    return json.loads(read_bytes(url).decode())


def read_json_object(url: str, what: str = "a JSON object") -> dict[str, Any]:
    """Read a JSON document that must be an object, e.g. ``run.json``, ``metrics.json``, ``parity.json``.

    Raises:
      DataError: naming ``url``, when the file is not valid JSON (with the parser's message) or
        not an object (``what`` says what was expected, e.g. "a JSON object of COCO metrics").
    """
    from training.errors import DataError

    try:
        doc = read_json(url)
    except ValueError as e:
        raise DataError(f"{url}: not valid JSON ({e})") from e
    if not isinstance(doc, dict):
        raise DataError(f"{url}: expected {what}")
    return doc


def write_text(url: str, text: str) -> None:
    """Write UTF-8 text."""
    write_bytes(url, text.encode())


def exists(url: str) -> bool:
    """True if a file or folder exists at ``url``.

    Raises:
        AccessDeniedError: the store refused to say (HTTP 403), rather than answering "no".
    """
    fs, path = filesystem(url)
    with _denied_as_error(url, "look for"):
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


def download_dir(url: str, local_dir: str) -> None:
    """Copy the folder tree at ``url`` (``s3://``, ``az://``, a local path) into ``local_dir`` (created).

    Raises:
        FileNotFoundError: nothing is at ``url``.
    """
    fs, path = filesystem(url)
    if not fs.isdir(path):
        raise FileNotFoundError(f"no folder at {url}")
    for src in fs.find(path):
        dst = os.path.join(local_dir, os.path.relpath(src, path))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        fs.get_file(src, dst)


RUN_MANIFEST = "run.json"


def _local_md5(path: str) -> str:
    import hashlib

    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _remote_md5(info: dict[str, Any]) -> str | None:
    """The MD5 an object store reports for a whole object, or None when it reports none.

    S3: the ``ETag`` of a single-part upload is the hex MD5 (multipart ETags contain ``-``).
    Azure Blob (adlfs): ``content_settings.content_md5`` (bytes), set by the SDK on upload.
    """
    etag = info.get("ETag") or info.get("etag")
    if isinstance(etag, str):
        etag = etag.strip('"')
        if len(etag) == 32 and "-" not in etag:
            return etag.lower()
    settings = info.get("content_settings")
    md5 = getattr(settings, "content_md5", None) if settings is not None else None
    if md5 is None and isinstance(settings, dict):
        md5 = settings.get("content_md5")
    if md5:
        return bytes(md5).hex()
    return None


def _unchanged(fs: fsspec.AbstractFileSystem, src: str, dst: str) -> bool:
    """True when ``dst`` already holds the bytes of local ``src`` (same size and, where known, MD5)."""
    try:
        info = fs.info(dst)
    except (FileNotFoundError, OSError):
        return False
    if info.get("type") == "directory" or info.get("size") != os.path.getsize(src):
        return False
    if "local" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        return False  # cheap to copy; local mtimes/sizes are not proof of equal content
    remote = _remote_md5(info)
    return remote is not None and remote == _local_md5(src)


def publish_run(local_run_dir: str, dest_url: str, *, status: str | None = None) -> dict[str, int]:
    """Upload a run folder to ``dest_url`` so that a reader never sees a complete run half-uploaded.

    Order (the contract of docs/contracts.md, "A run is complete only when status == complete"):

    1. If ``dest_url/run.json`` exists and says ``"complete"``, it is first overwritten with the
       same manifest and status ``"running"`` (a re-published run is not complete while it changes).
    2. Every other file of ``local_run_dir`` is uploaded (relative paths kept, ``/`` separators);
       a file whose remote copy has the same size and MD5 (S3 ETag, Azure ``Content-MD5``) is
       skipped, so publishing twice uploads nothing new (idempotent).
    3. ``run.json`` is uploaded last, with ``status`` if given (``"running"``, ``"complete"``,
       ``"failed"``), else with the status the local manifest holds.

    An exception during step 2 (network error, interruption) propagates and leaves the remote
    ``run.json`` absent or not ``"complete"``; publishing again finishes the job. Remote files that
    no longer exist locally are left in place (nothing is ever deleted). The bucket (S3) or
    container (Azure Blob) must exist: it is infrastructure (Pulumi), not created here.

    Args:
        local_run_dir: a local run folder holding ``run.json``.
        dest_url: the run folder's URL (local path, ``az://container/...``, ``s3://bucket/...``).
        status: overrides the manifest's ``status`` in the uploaded ``run.json`` (the local file
            is left unchanged).

    Returns:
        ``{"uploaded": n, "skipped": m}``: file counts of step 2, plus 1 for ``run.json``.

    Raises:
        NotFoundError: ``local_run_dir`` has no ``run.json``, or the bucket / container is missing.
        ConfigError: ``status`` is not one of ``running``, ``complete``, ``failed``.
    """
    from training.errors import ConfigError, NotFoundError

    manifest_path = os.path.join(local_run_dir, RUN_MANIFEST)
    if not os.path.isfile(manifest_path):
        raise NotFoundError(f"no run at {local_run_dir} ({RUN_MANIFEST} missing)")
    if status is not None and status not in ("running", "complete", "failed"):
        raise ConfigError(f"run status must be running, complete or failed, got {status!r}")
    with open(manifest_path, "rb") as f:
        manifest_bytes = f.read()
    if status is not None:  # the uploaded copy gets the new status; the local file stays as it is
        manifest = json.loads(manifest_bytes.decode())
        manifest["status"] = status
        manifest_bytes = (json.dumps(manifest, indent=2, default=str) + "\n").encode()

    fs, root = filesystem(dest_url)
    root = root.rstrip("/")
    remote_manifest = join(root, RUN_MANIFEST)
    _mark_remote_running(fs, remote_manifest)
    counts = _upload_artifacts(fs, local_run_dir, root, dest_url)
    fs.makedirs(root, exist_ok=True)
    with fs.open(remote_manifest, "wb") as f:
        f.write(manifest_bytes)
    counts["uploaded"] += 1
    return counts


def _mark_remote_running(fs: fsspec.AbstractFileSystem, remote_manifest: str) -> None:
    """Step 1 of :func:`publish_run`: a remote ``run.json`` saying ``complete`` now says ``running``."""
    if not fs.exists(remote_manifest):
        return
    with fs.open(remote_manifest, "rb") as f:
        try:
            previous = json.loads(f.read().decode())
        except ValueError:
            previous = {}
    if previous.get("status") == "complete":
        previous["status"] = "running"
        with fs.open(remote_manifest, "wb") as f:
            f.write((json.dumps(previous, indent=2, default=str) + "\n").encode())


def _upload_artifacts(fs: fsspec.AbstractFileSystem, local_run_dir: str, root: str, dest_url: str) -> dict[str, int]:
    """Step 2 of :func:`publish_run`: every file but ``run.json``, skipping unchanged remote copies."""
    from training.errors import NotFoundError

    counts = {"uploaded": 0, "skipped": 0}
    made: set[str] = set()
    for dirpath, dirs, files in os.walk(local_run_dir):
        dirs.sort()
        rel = os.path.relpath(dirpath, local_run_dir)
        for name in sorted(files):
            if rel == "." and name == RUN_MANIFEST:
                continue
            src = os.path.join(dirpath, name)
            dst = join(root, *(rel.split(os.sep) if rel != "." else []), name)
            if _unchanged(fs, src, dst):
                counts["skipped"] += 1
                continue
            parent = dst.rsplit("/", 1)[0]
            if parent not in made:
                fs.makedirs(parent, exist_ok=True)
                made.add(parent)
            try:
                fs.put_file(src, dst)
            except FileNotFoundError as e:
                if is_local(dest_url):
                    raise
                raise NotFoundError(
                    f"cannot upload to {dest_url}: {e} (the bucket or container must exist; infra creates it)"
                ) from e
            counts["uploaded"] += 1
    return counts


def sync_dir(
    local_dir: str, url: str, *, dry_run: bool = False, storage_options: dict[str, Any] | None = None, on_file=None
) -> dict[str, int]:
    """Copy the local folder tree ``local_dir`` to ``url`` (relative paths kept, ``/`` separators), skipping every
    file whose copy at ``url`` already has the same size and hash: on S3 and Azure Blob the MD5 the store reports
    (:func:`_unchanged`), on a local destination the MD5 of both files. Nothing is deleted at ``url``.

    Args:
      dry_run: decide and report (``on_file``) but copy nothing.
      storage_options: fsspec options of ``url``'s filesystem (e.g. ``account_name`` for ``az://``).
      on_file: called per file with ``("copy" | "skip", local path, destination URL, size in bytes)``.

    Returns:
      ``{"uploaded": n, "skipped": m, "bytes_uploaded": b, "bytes_skipped": c}`` (with ``dry_run``: what would be).

    Raises:
      AccessDeniedError: the store refused a read or write (HTTP 403, AWS ``AccessDenied``).
      NotFoundError: the bucket or container does not exist.
    """
    from training.errors import NotFoundError

    fs, root = filesystem(url, **(storage_options or {}))
    root = root.rstrip("/")
    local = is_local(url)
    counts = {"uploaded": 0, "skipped": 0, "bytes_uploaded": 0, "bytes_skipped": 0}
    made: set[str] = set()
    for dirpath, dirs, files in os.walk(local_dir):
        dirs.sort()
        rel = os.path.relpath(dirpath, local_dir)
        for name in sorted(files):
            src = os.path.join(dirpath, name)
            parts = rel.split(os.sep) if rel != "." else []
            dst = join(root, *parts, name)
            shown = join(url.rstrip("/"), *parts, name)
            size = os.path.getsize(src)
            with _denied_as_error(shown, "read"):
                same = _same_local(src, dst) if local else _unchanged(fs, src, dst)
            action = "skip" if same else "copy"
            if on_file:
                on_file(action, src, shown, size)
            counts["skipped" if same else "uploaded"] += 1
            counts["bytes_skipped" if same else "bytes_uploaded"] += size
            if same or dry_run:
                continue
            parent = dst.rsplit("/", 1)[0]
            try:
                with _denied_as_error(shown, "write"):
                    if parent not in made:
                        fs.makedirs(parent, exist_ok=True)
                        made.add(parent)
                    fs.put_file(src, dst)
            except FileNotFoundError as e:
                if local:
                    raise
                raise NotFoundError(
                    f"cannot upload to {url}: {e} (the bucket or container must exist; infra creates it)"
                ) from e
    return counts


def _same_local(src: str, dst: str) -> bool:
    """True when the local file ``dst`` has the size and MD5 of ``src``."""
    dst = dst.removeprefix("file://")
    return os.path.isfile(dst) and os.path.getsize(dst) == os.path.getsize(src) and _local_md5(dst) == _local_md5(src)
