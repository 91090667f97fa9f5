"""MLflow Model Registry adapter: versions are MLflow model versions, status and audit are tags.

Storage only (the rules are in :mod:`deployment.registry.approval`). Each version carries tags that
``mlflow ui`` shows on the version page:

- ``approval_status``: ``PendingManualApproval`` | ``Approved`` | ``Rejected`` (SageMaker spelling);
- ``registered_by``, ``created_at`` (ISO 8601 UTC);
- ``metric.<key>`` for each metric (e.g. ``metric.test/AP50``), as decimal strings;
- ``audit.0000``, ``audit.0001``, ...: one JSON :class:`AuditEntry` each, in order;
- every other tag given at registration (dataset hash, code version, run URL, gate decision).

The MLflow version's ``source`` is the artifact URI (the run's ``export/`` folder) and its
``run_id`` links the MLflow run logged by :func:`training.tracking.log_run` when there is one
(tag ``mlflow_run_id``). The tracking/registry URI defaults to :func:`training.tracking.default_tracking_uri`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from deployment.registry.base import ApprovalStatus, AuditEntry, ModelRegistry, ModelVersion
from training.errors import BackendError, ConfigError, NotFoundError

STATUS_TAG = "approval_status"
BY_TAG = "registered_by"
CREATED_TAG = "created_at"
METRIC_PREFIX = "metric."
AUDIT_PREFIX = "audit."
_RESERVED = (STATUS_TAG, BY_TAG, CREATED_TAG)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def version_from_tags(name: str, version: str, source: str, tags: dict[str, str]) -> ModelVersion:
    """A :class:`ModelVersion` from this module's tag layout (also used for Azure ML model assets)."""
    status_raw = tags.get(STATUS_TAG, ApprovalStatus.PENDING.value)
    try:
        status = ApprovalStatus(status_raw)
    except ValueError as e:
        raise BackendError(f"model {name} version {version}: unknown approval_status {status_raw!r}") from e
    metrics = {}
    other = {}
    for k, v in tags.items():
        if k.startswith(METRIC_PREFIX):
            try:
                metrics[k[len(METRIC_PREFIX) :]] = float(v)
            except ValueError:
                other[k] = v
        elif k.startswith(AUDIT_PREFIX):
            continue
        elif k not in _RESERVED:
            other[k] = v
    audit = [AuditEntry(**json.loads(tags[k])) for k in sorted(t for t in tags if t.startswith(AUDIT_PREFIX))]
    return ModelVersion(
        name=name,
        version=str(version),
        status=status,
        artifact_uri=source,
        registered_by=tags.get(BY_TAG, ""),
        created_at=tags.get(CREATED_TAG, ""),
        metrics=metrics,
        tags=other,
        audit=audit,
    )


def local_store_path(tracking_uri: str) -> str | None:
    """The file of a local MLflow store (``sqlite:///<path>``, ``file://<path>`` or a plain path), else None."""
    if tracking_uri.startswith("sqlite:///"):
        return tracking_uri.removeprefix("sqlite:///")
    if tracking_uri.startswith("file://"):
        return tracking_uri.removeprefix("file://")
    if "://" in tracking_uri or tracking_uri.startswith("databricks"):
        return None
    return tracking_uri


class MlflowRegistry(ModelRegistry):
    """Model versions in an MLflow model registry (local SQLite by default, or any tracking URI).

    Args:
        tracking_uri: MLflow tracking/registry URI; default ``$MLFLOW_TRACKING_URI`` or the
            SQLite store under ``$DETOPS_HOME`` (``~/.detops/mlflow.db``).
    """

    def __init__(self, tracking_uri: str | None = None) -> None:
        from mlflow.tracking import MlflowClient

        from training.tracking import default_tracking_uri

        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    #: register writes a registration record beside the decisions; four-eyes reads the registrant from it.
    records_registration = True

    def approval_records(self) -> Any:
        """``$DETOPS_APPROVALS_URI``; else, for a local store (SQLite or a folder), a folder beside it
        (``<db>-approvals/``: whoever may write the database may write it too, docs/contracts.md).

        Raises:
            ConfigError: a remote tracking server without ``DETOPS_APPROVALS_URI``: its tags can be set by
                anyone who may register, so approvals there fail closed.
        """
        from deployment.registry.records import ApprovalRecords
        from training.settings import CommonSettings

        uri = CommonSettings.load().approvals_uri
        if uri:
            return ApprovalRecords(uri)
        local = local_store_path(self.tracking_uri)
        if local is None:
            raise ConfigError(
                f"MLflow server {self.tracking_uri}: approval status needs DETOPS_APPROVALS_URI, a store only "
                "approvers may write (a server's version tags can be set by anyone who may register)"
            )
        return ApprovalRecords(f"{local}-approvals")

    # -- helpers -------------------------------------------------------------------------------
    def _to_version(self, mv) -> ModelVersion:
        return version_from_tags(mv.name, str(mv.version), mv.source, dict(mv.tags or {}))

    def _append_audit(self, name: str, version: str, entry: AuditEntry, existing: dict[str, str]) -> None:
        n = sum(1 for k in existing if k.startswith(AUDIT_PREFIX))
        self.client.set_model_version_tag(name, version, f"{AUDIT_PREFIX}{n:04d}", json.dumps(entry.__dict__))

    # -- ModelRegistry -------------------------------------------------------------------------
    def create_version(self, name: str, artifact_uri: str, registered_by: str, metrics: dict[str, float],
                       tags: dict[str, str]) -> ModelVersion:
        """Create an MLflow model version (status ``PendingManualApproval``) and return it."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException:
            try:
                self.client.create_registered_model(
                    name, description="detops object detector; versions gated by approval_status tag"
                )
            except MlflowException as e:
                if "RESOURCE_ALREADY_EXISTS" not in str(e) and "already exists" not in str(e):
                    raise ConfigError(f"cannot create registered model {name!r}: {e}") from e
        all_tags = {k: str(v) for k, v in tags.items() if k not in _RESERVED}
        all_tags.update({f"{METRIC_PREFIX}{k}": repr(float(v)) for k, v in metrics.items()})
        all_tags[STATUS_TAG] = ApprovalStatus.PENDING.value
        all_tags[BY_TAG] = registered_by
        all_tags[CREATED_TAG] = _now()
        run_id = tags.get("mlflow_run_id") or None
        mv = self.client.create_model_version(
            name,
            source=artifact_uri,
            run_id=run_id,
            tags=all_tags,
            description=f"registered by {registered_by} from {tags.get('run_url', artifact_uri)}",
        )
        return self._to_version(self.client.get_model_version(name, mv.version))

    def get_version(self, name: str, version: str) -> ModelVersion:
        """Return one version; :class:`NotFoundError` if the model or version does not exist."""
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version(name, str(version))
        except MlflowException as e:
            raise NotFoundError(f"model {name!r} version {version!r} not found in {self.tracking_uri}") from e
        return self._to_version(mv)

    def list_versions(self, name: str | None = None) -> list[ModelVersion]:
        """All versions (of one model, or of every model), oldest first (by name, then version number)."""
        flt = f"name = '{name.replace(chr(39), '')}'" if name else None
        found: list[Any] = []  # mlflow.entities.model_registry.ModelVersion
        token = None
        while True:
            page = self.client.search_model_versions(filter_string=flt, max_results=1000, page_token=token)
            found.extend(page)
            token = getattr(page, "token", None)
            if not token:
                break
        found.sort(key=lambda mv: (mv.name, int(mv.version)))
        return [self._to_version(mv) for mv in found]

    def set_status(self, name: str, version: str, status: ApprovalStatus, entry: AuditEntry) -> ModelVersion:
        """Store ``status`` in the ``approval_status`` tag and append ``entry`` as the next ``audit.NNNN`` tag."""
        mv = self.client.get_model_version(name, str(version))
        self._append_audit(name, str(version), entry, dict(mv.tags or {}))
        self.client.set_model_version_tag(name, str(version), STATUS_TAG, ApprovalStatus(status).value)
        return self.get_version(name, version)
