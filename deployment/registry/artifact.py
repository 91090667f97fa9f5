"""The identity of a registered artifact: a sha256 manifest of the run's ``export/`` folder.

At registration (:meth:`deployment.registry.approval.ApprovalService.register`) every file under
``export/`` is hashed; the manifest ``{relative path: sha256 hex}`` is stored with the model version
(tag ``artifact.manifest``) together with its own digest (tag ``artifact.sha256``: the sha256 of the
manifest's canonical JSON, :func:`manifest_digest`), and written next to the files as
``export/detops-manifest.json`` so that every copy of the folder (SageMaker's ``/opt/ml/model``,
an Azure ML model asset, a promoted copy) carries it.

Two checks use it:

- :func:`verify_artifact` -- ``detops deploy`` and ``detops promote`` hash the folder again before
  creating anything; a changed, missing or added file raises :class:`ArtifactIntegrityError`
  naming it (exit code 4).
- :func:`verify_model_dir` -- the serving container, before loading the SavedModel: it reads
  ``detops-manifest.json`` from the model folder, checks its digest against ``$DETOPS_MODEL_SHA256``
  (set by the deploy target from the registry, so a rewritten manifest is caught too) and every
  file against the manifest. The app then never becomes ready.

The manifest file itself is not part of the manifest. Digests are hex sha256 of the file bytes.
"""

from __future__ import annotations

import json
from typing import Any

from training import storage
from training.errors import GateError
from training.manifest import MANIFEST_FILE as MANIFEST_FILE  # one definition (the export stage's), re-exported
from training.manifest import compute_manifest as compute_manifest
from training.manifest import manifest_digest as manifest_digest

#: Tags under which a model version stores the manifest and its digest.
MANIFEST_TAG = "artifact.manifest"
DIGEST_TAG = "artifact.sha256"
#: Environment variable through which deploy targets pin the manifest digest in the serving container.
DIGEST_ENV = "DETOPS_MODEL_SHA256"

class ArtifactIntegrityError(GateError):
    """An artifact does not match the manifest recorded at registration (names the file)."""


def manifest_document(manifest: dict[str, str]) -> dict[str, Any]:
    """The JSON document written as :data:`MANIFEST_FILE`: ``{"algorithm", "sha256", "files"}``."""
    return {"algorithm": "sha256", "sha256": manifest_digest(manifest), "files": dict(sorted(manifest.items()))}


def diff_manifest(expected: dict[str, str], actual: dict[str, str]) -> list[str]:
    """Human-readable differences, one per file: ``changed: a``, ``missing: b``, ``unexpected: c``."""
    out = [f"changed: {p}" for p in sorted(expected) if p in actual and actual[p] != expected[p]]
    out += [f"missing: {p}" for p in sorted(expected) if p not in actual]
    out += [f"unexpected: {p}" for p in sorted(actual) if p not in expected]
    return out


def verify_artifact(folder_url: str, expected: dict[str, str], what: str = "artifact") -> str:
    """Hash ``folder_url`` again and compare with ``expected``; return the digest when they match.

    Raises:
        ArtifactIntegrityError: a file changed, is missing or was added; the message names the
            files (``changed: saved_model/saved_model.pb``) and the folder.
    """
    actual = compute_manifest(folder_url)
    problems = diff_manifest(expected, actual)
    if problems:
        raise ArtifactIntegrityError(
            f"{what} at {folder_url} does not match the manifest recorded at registration: "
            + "; ".join(problems[:10])
            + (f" (and {len(problems) - 10} more)" if len(problems) > 10 else "")
        )
    return manifest_digest(actual)


def stored_manifest(tags: dict[str, str]) -> dict[str, str] | None:
    """The manifest a model version's tags carry (:data:`MANIFEST_TAG`), checked against
    :data:`DIGEST_TAG`; None for versions registered before manifests existed.

    Raises:
        ArtifactIntegrityError: the stored manifest does not hash to the stored digest.
    """
    raw = tags.get(MANIFEST_TAG)
    if not raw:
        return None
    manifest = json.loads(raw)
    want = tags.get(DIGEST_TAG, "")
    if manifest_digest(manifest) != want:
        raise ArtifactIntegrityError(f"the stored manifest does not hash to its recorded digest {want[:12]}...")
    return manifest


def verify_model_dir(model_dir: str, expected_digest: str | None = None) -> str | None:
    """Check a model folder against its ``detops-manifest.json`` before it is loaded (serving).

    ``model_dir`` is the run's ``export/`` copy or the ``saved_model/`` folder inside it (the manifest
    is looked for in the folder and its parent). ``expected_digest`` defaults to
    ``$DETOPS_MODEL_SHA256``. Returns the verified digest, or None when there is neither a manifest
    nor an expected digest (a development model folder).

    Raises:
        ArtifactIntegrityError: an expected digest but no manifest; a manifest whose digest differs;
            a file that differs from the manifest (named).
    """
    if expected_digest is None:
        from training.settings import CommonSettings

        expected_digest = CommonSettings.load().model_sha256 or None
    url = model_dir.rstrip("/").removeprefix("file://")
    root = None
    for cand in (url, url.rsplit("/", 1)[0] if "/" in url else None):
        if cand and storage.exists(storage.join(cand, MANIFEST_FILE)):
            root = cand
            break
    if root is None:
        if expected_digest:
            raise ArtifactIntegrityError(
                f"{model_dir}: no {MANIFEST_FILE}, but {DIGEST_ENV} expects artifact {expected_digest[:12]}..."
            )
        return None
    doc = storage.read_json(storage.join(root, MANIFEST_FILE))
    files = dict(doc.get("files") or {})
    digest = manifest_digest(files)
    if expected_digest and digest != expected_digest:
        raise ArtifactIntegrityError(
            f"{storage.join(root, MANIFEST_FILE)} describes artifact {digest[:12]}..., "
            f"but the registered version is {expected_digest[:12]}..."
        )
    return verify_artifact(root, files, what="model folder")


def manifest_tags(folder_url: str) -> dict[str, str]:
    """The version tags recording the artifact at ``folder_url`` (:data:`DIGEST_TAG`, :data:`MANIFEST_TAG`)."""
    files = compute_manifest(folder_url)
    return {DIGEST_TAG: manifest_digest(files), MANIFEST_TAG: json.dumps(files, sort_keys=True, separators=(",", ":"))}


def expected_under(url: str) -> dict[str, str] | None:
    """The manifest's entries for the files under ``url`` (paths relative to ``url``), from the
    ``detops-manifest.json`` in ``url`` or its parent (a model folder or the ``saved_model/`` in it);
    None when there is no manifest (a development model folder)."""
    url = url.rstrip("/").removeprefix("file://")
    for root in (url, url.rsplit("/", 1)[0] if "/" in url else None):
        if root and storage.exists(storage.join(root, MANIFEST_FILE)):
            files = dict(storage.read_json(storage.join(root, MANIFEST_FILE)).get("files") or {})
            prefix = url[len(root):].strip("/")
            if not prefix:
                return files
            return {k[len(prefix) + 1:]: v for k, v in files.items() if k.startswith(prefix + "/")}
    return None


def verified_local_copy(url: str, local: str, fetch: Any, expected: dict[str, str] | None) -> str:
    """``local``, a cached copy of the folder ``url``, checked against ``expected`` on every load.

    A missing or changed copy is fetched again with ``fetch(url, local)``; a copy that still differs after
    that raises :class:`ArtifactIntegrityError` naming the files. With ``expected`` None (no manifest) the
    copy is fetched when missing and used as it is.
    """
    import os
    import shutil

    if os.path.exists(local) and expected is not None and diff_manifest(expected, compute_manifest(local)):
        shutil.rmtree(local)  # an edited cache is never served: fetch it again
    if not os.path.exists(local):
        fetch(url, local)
    if expected is not None:
        verify_artifact(local, expected, what=f"cached copy of {url}")
    return local
