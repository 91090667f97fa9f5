"""The model registry interface every backend implements (MLflow, SageMaker Model Registry).

Approval statuses mirror SageMaker's ``ModelApprovalStatus``. The rules that move a version from
one status to another (who may approve, what is audited) live in one place on top of this
interface, not in each backend.
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass, field
from typing import Any


class ApprovalStatus(enum.StrEnum):
    """Approval status of a model version, spelled as SageMaker's ``ModelApprovalStatus``."""

    PENDING = "PendingManualApproval"
    APPROVED = "Approved"
    REJECTED = "Rejected"


@dataclass
class AuditEntry:
    """One audited decision on a model version: who, when (ISO 8601 UTC), what and why."""

    actor: str
    at: str
    action: str  # "register", "approve", "reject", "gate", "force"
    comment: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelVersion:
    """A registered model version.

    ``artifact_uri`` points at the run's ``export/`` folder (holding ``saved_model/`` and
    ``model.tflite``); ``metrics`` are flat floats such as ``test/AP50``; ``tags`` hold the dataset
    hash, code version, run id and the quality-gate decision.
    """

    name: str
    version: str
    status: ApprovalStatus
    artifact_uri: str
    registered_by: str
    created_at: str
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    audit: list[AuditEntry] = field(default_factory=list)


class ModelRegistry(abc.ABC):
    """Storage of model versions and their approval status (no business rules here)."""

    #: True when :meth:`set_status` of an approve/reject also writes the status and audit entry into the
    #: version itself (MLflow tags: ``mlflow ui`` shows them); False when the approval record is the only
    #: copy (Azure ML: the approver identity may read the workspace, not write its model assets).
    mirrors_decisions: bool = True

    #: True when ``register`` also writes a create-only registration record into :meth:`approval_records`
    #: and four-eyes reads the registrant from it, never from the ``registered_by.id`` tag (MLflow: anyone
    #: who may write the tracking server may rewrite the tag). False where the registrant may not write the
    #: record store (Azure ML: only the approver writes the approvals container) or there is none (SageMaker).
    records_registration: bool = False

    def approval_records(self) -> Any:
        """Where approve/reject decisions are recorded (:class:`deployment.registry.records.ApprovalRecords`),
        or None when the registry's own status is the guard (SageMaker: ``ModelApprovalStatus``, which
        IAM lets only the approver role change). With records, a version's status is what they say
        (:func:`deployment.registry.records.status_of`), never a tag.

        Raises:
            ConfigError: the registry needs a record store and none is configured (fail closed).
        """
        return None

    def promotion_source_records(self, origin: str) -> Any:
        """``(records, name, version)`` of the source version a promoted copy came from (``origin``: its
        ``promoted_from`` tag), for registries whose promoting identity may not write approval records
        (Azure ML: the prod deployer reads the dev stack's approvals container); None otherwise."""
        return None

    @abc.abstractmethod
    def create_version(self, name: str, artifact_uri: str, registered_by: str, metrics: dict[str, float],
                       tags: dict[str, str]) -> ModelVersion:
        """Create a version with status ``PendingManualApproval`` and return it."""

    @abc.abstractmethod
    def get_version(self, name: str, version: str) -> ModelVersion:
        """Return one version; raise ``training.errors.NotFoundError`` if absent."""

    @abc.abstractmethod
    def list_versions(self, name: str | None = None) -> list[ModelVersion]:
        """All versions (of one model, or of every model), oldest first."""

    @abc.abstractmethod
    def set_status(self, name: str, version: str, status: ApprovalStatus, entry: AuditEntry) -> ModelVersion:
        """Store a new status and append ``entry`` to the version's audit trail."""
