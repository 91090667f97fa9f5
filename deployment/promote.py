"""Promotion: the exact Approved artifact of the dev registry becomes a version of the prod registry.

dev and prod are separate stacks (workspaces, accounts). The production release must deploy what was
evaluated and approved in dev, byte for byte. :func:`promote`:

1. asks the source (dev) registry for the version and refuses anything not Approved;
2. verifies the source artifact against the manifest recorded at registration;
3. copies every file of the manifest to ``<artifact_root>/<name>/v<version>-<digest[:12]>/`` in the
   destination's storage (plus ``detops-manifest.json``) and verifies the copy -- same digest;
4. registers it in the destination (prod) registry with the same manifest, metrics and lineage, tag
   ``promoted_from`` (``<source registry>#<name>/<version>``) and the source's approval audit entries,
   and moves it to Approved with a ``promote`` audit entry by the promoting principal. The approval
   carries over only because the digest is the same; nothing else can create an Approved version
   without the four-eyes approval.

Promoting the same source version again returns the existing destination version (idempotent).
This copy-and-verify path works between two registries of the same kind (mlflow, sagemaker, azureml)
and is what the release workflows run; the source is named by ``DETOPS_PROMOTE_SOURCE_URI`` (an
MLflow tracking URI, the dev stack's SageMaker registry metadata URI, or the dev Azure ML workspace
``azureml://subscriptions/<sub>/resourceGroups/<rg>/workspaces/<ws>``). The infra stacks grant the
prod identity read access to the dev registry and storage when configured (docs/contracts.md).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from deployment.registry import artifact
from deployment.registry.approval import REGISTRANT_ID_TAG, ApprovalService
from deployment.registry.base import ApprovalStatus, AuditEntry, ModelRegistry, ModelVersion
from deployment.registry.identity import Principal, as_principal
from training import storage
from training.errors import GateError

#: Tags a destination version must not inherit (they name the source registry's own resources).
_LOCAL_TAGS = ("sagemaker:model_package_arn", "mlflow_run_id", "azureml:asset_id", "azureml:path")


def _registry_label(reg: ModelRegistry) -> str:
    where = (getattr(reg, "tracking_uri", None) or getattr(reg, "metadata_uri", None)
             or getattr(reg, "workspace_uri", None) or "")
    return f"{type(reg).__name__}:{where}"


def copy_artifact(src_url: str, dest_url: str, manifest: dict[str, str]) -> str:
    """Copy the files of ``manifest`` from ``src_url`` to ``dest_url`` (any fsspec URLs) and verify
    the copy; returns its digest. Raises :class:`artifact.ArtifactIntegrityError` naming a differing file."""
    for rel in manifest:
        storage.write_bytes(storage.join(dest_url, rel), storage.read_bytes(storage.join(src_url, rel)))
    storage.write_json(storage.join(dest_url, artifact.MANIFEST_FILE), artifact.manifest_document(manifest))
    return artifact.verify_artifact(dest_url, manifest, what="promoted copy")


def promote(
    source: ModelRegistry,
    dest: ModelRegistry,
    name: str,
    version: str,
    artifact_root: str,
    by: str | Principal,
    source_name: str | None = None,
) -> ModelVersion:
    """Promote Approved ``name`` version ``version`` from ``source`` to ``dest`` (module docstring).

    ``source_name``: the model's name in the source registry when it differs (a SageMaker model package
    group is named after its stack, ``<dev prefix>-detector`` vs ``<prod prefix>-detector``); default ``name``.

    Raises:
        GateError: the source version is not Approved, or has no manifest.
        ArtifactIntegrityError: the source artifact or the copy differs from the manifest (names the file).
        NotFoundError: no such source version.
    """
    who = as_principal(by)
    src_name = source_name or name
    src = ApprovalService(source).require_approved(src_name, str(version))
    manifest = artifact.stored_manifest(src.tags)
    if manifest is None:
        raise GateError(f"model {src_name!r} version {version} has no artifact manifest; it cannot be promoted")
    digest = artifact.verify_artifact(src.artifact_uri, manifest, what=f"source {src_name!r} version {version}")
    origin = f"{_registry_label(source)}#{src_name}/{version}"
    service = ApprovalService(dest)
    for v in service.list_versions(name):
        if v.tags.get("promoted_from") == origin and v.tags.get(artifact.DIGEST_TAG) == digest:
            if v.status == ApprovalStatus.PENDING:  # a promote killed before its last step: finish it
                service.record_registration(v, Principal(v.tags.get(REGISTRANT_ID_TAG, ""), v.registered_by, "promoted"))
                return _approve_copy(service, v, who, origin, digest, approvals_of(src))
            return v
    dest_url = storage.join(artifact_root, name, f"v{version}-{digest[:12]}")
    copy_artifact(src.artifact_uri, dest_url, manifest)
    approvals = approvals_of(src)
    tags = {k: v for k, v in src.tags.items() if k not in _LOCAL_TAGS}
    tags.update({
        "promoted_from": origin,
        "promoted.approvals": json.dumps(approvals),
        REGISTRANT_ID_TAG: src.tags.get(REGISTRANT_ID_TAG) or src.registered_by,
    })
    mv = dest.create_version(name, dest_url, src.registered_by, dict(src.metrics), tags)
    # the copy's registrant is the source's (as its tag says); recorded where dest keeps registration records
    service.record_registration(mv, Principal(tags[REGISTRANT_ID_TAG], src.registered_by, "promoted"))
    now = datetime.now(UTC).isoformat(timespec="seconds")
    details: dict[str, Any] = {"principal": who.to_dict(), "from": origin, "artifact_sha256": digest,
                               "source_approvals": approvals}
    mv = dest.set_status(name, mv.version, ApprovalStatus.PENDING,
                         AuditEntry(who.name, now, "register", f"promoted from {origin}", details))
    return _approve_copy(service, mv, who, origin, digest, approvals)


def approvals_of(src: ModelVersion) -> list[dict[str, Any]]:
    """The ``approve`` audit entries of the source version (carried into the promoted one)."""
    return [e.__dict__ for e in src.audit if e.action == "approve"]


def _approve_copy(service: ApprovalService, mv: ModelVersion, who: Principal, origin: str, digest: str,
                  approvals: list[dict[str, Any]]) -> ModelVersion:
    """Move the promoted copy ``mv`` (PendingManualApproval) to Approved with a ``promote`` decision; where
    the promoting identity may not write records (Azure ML), the copy is Approved by the source's record."""
    mv, recs = service.decided(mv)
    comment = f"same artifact {digest[:12]} approved in the source"
    details = {"from_registry": origin, "artifact_sha256": digest, "source_approvals": approvals}
    if service.registry.mirrors_decisions:
        return service.decide(mv, recs, ApprovalStatus.APPROVED, who, comment, "promote", details)
    if mv.status != ApprovalStatus.APPROVED:
        raise GateError(f"promoted copy {mv.name} version {mv.version}: the source's approval record does not "
                        f"approve artifact {digest[:12]}...")
    if not any(e.action == "promote" for e in mv.audit):  # the audit entry only: the status is the source's record
        entry = AuditEntry(who.name, datetime.now(UTC).isoformat(timespec="seconds"), "promote", comment,
                           {**details, "principal": who.to_dict(), "to": ApprovalStatus.APPROVED.value})
        mv = service.decided(service.registry.set_status(mv.name, mv.version, ApprovalStatus.APPROVED, entry))[0]
    return mv
