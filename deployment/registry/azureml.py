"""The Azure ML workspace's model registry: model *assets* (azure-ai-ml ``Model``), not MLflow runs.

A version is a model asset ``azureml:<name>:<version>`` of type ``custom_model`` whose ``path`` is
one of Azure ML's model path forms: a datastore path
``azureml://datastores/<datastore>/paths/<run>/export/`` (the run's ``export/`` folder on the
workspace's blob datastore, ``$DETOPS_AML_DATASTORE``, default ``workspaceblobstore``). The approval
status, registrant, metrics, the artifact manifest and the audit trail are the asset's tags, in the
layout of :mod:`deployment.registry.mlflow` (``approval_status``, ``registered_by``, ``metric.*``,
``audit.NNNN`` ...). Every entity is checked by the SDK's own schema before it is sent
(:func:`validate_model`: dump to YAML, ``load_model`` back). Deployments reference the asset
(``azureml:<name>:<version>``), i.e. what the platform registered, not a folder CI can still write.

The MLflow helpers (:func:`https_tracking_uri`, :func:`workspace_tracking_uri`) stay for tracking
runs on the workspace's MLflow endpoint.

Settings: ``AZURE_SUBSCRIPTION_ID``, ``AZURE_RESOURCE_GROUP``, ``AZUREML_WORKSPACE`` (the
workspace; authentication ``DefaultAzureCredential``), ``DETOPS_AML_DATASTORE``. Another workspace (the
dev workspace ``detops promote`` reads from) is named by a workspace URI
``azureml://subscriptions/<sub>/resourceGroups/<rg>/workspaces/<ws>`` (:func:`parse_workspace_uri`);
its artifact URLs name their storage account (``az://<container>@<account>.blob.<suffix>/<path>``),
because ``AZURE_STORAGE_ACCOUNT_NAME`` is this stack's account.
"""

from __future__ import annotations

import json
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deployment.registry.base import ApprovalStatus, AuditEntry, ModelRegistry, ModelVersion
from deployment.registry.mlflow import AUDIT_PREFIX, BY_TAG, CREATED_TAG, METRIC_PREFIX, STATUS_TAG, version_from_tags
from training import storage
from training.errors import ConfigError, NotFoundError

#: Token audience of the Azure ML MLflow endpoint (the Azure Resource Manager scope).
TOKEN_SCOPE = "https://management.azure.com/.default"


def https_tracking_uri(uri: str) -> str:
    """``azureml://host/mlflow/...`` -> ``https://host/mlflow/...`` (other URIs unchanged).

    Raises:
        ConfigError: an ``azureml://`` URI that is not a workspace MLflow endpoint.
    """
    if not uri.startswith("azureml://"):
        return uri
    rest = uri[len("azureml://"):]
    if "/mlflow/" not in rest:
        raise ConfigError(f"{uri!r} is not an Azure ML MLflow tracking URI (no /mlflow/ path)")
    return "https://" + rest


def workspace_tracking_uri(ml_client: Any = None) -> str:
    """The workspace's MLflow URI: ``$MLFLOW_TRACKING_URI`` if set, else asked from the workspace.

    Raises:
        ConfigError: neither ``MLFLOW_TRACKING_URI`` nor AZURE_SUBSCRIPTION_ID / AZURE_RESOURCE_GROUP /
            AZUREML_WORKSPACE are set.
    """
    from training.cloud import azure
    from training.settings import CommonSettings

    uri = CommonSettings.load().mlflow_tracking_uri
    if uri:
        return uri
    if ml_client is None:
        ml_client = azure.ml_client(what="find the workspace's MLflow registry (or set MLFLOW_TRACKING_URI)")
    return ml_client.workspaces.get(ml_client.workspace_name).mlflow_tracking_uri


#: The stacks' container of approval records (infra/azure/program.py, CONTAINERS).
APPROVALS_CONTAINER = "approvals"

#: Azure ML's datastore path forms of a model asset (short, and the long one the service returns).
_DATASTORE_PATH = re.compile(
    r"^azureml://(?:subscriptions/[^/]+/resource[gG]roups/[^/]+/(?:providers/Microsoft\.MachineLearningServices/)?"
    r"workspaces/[^/]+/)?datastores/(?P<ds>[^/]+)/paths/(?P<path>.+)$"
)


def datastore_path(artifact_uri: str, datastore: str | None = None) -> str:
    """``az://<container>/<path>`` (or an ``azureml://`` datastore path) -> ``azureml://datastores/<ds>/paths/<path>/``.

    The container of an ``az://`` URL is the datastore's container (``$DETOPS_AML_DATASTORE``, default
    ``workspaceblobstore``). Raises :class:`ConfigError` for any other form (``s3://``, local paths).
    """
    if _DATASTORE_PATH.match(artifact_uri):
        return artifact_uri.rstrip("/") + "/"
    if not artifact_uri.startswith(("az://", "abfs://")):
        raise ConfigError(
            f"Azure ML model assets need the artifact on the workspace datastore (az:// or azureml://), got {artifact_uri!r}"
        )
    rest = artifact_uri.split("://", 1)[1]
    _container, _, path = rest.partition("/")
    ds = datastore or _datastore_setting()
    return f"azureml://datastores/{ds}/paths/{path.strip('/')}/"


def _datastore_setting() -> str:
    """``DETOPS_AML_DATASTORE`` (default ``workspaceblobstore``), from :class:`training.settings.AzureSettings`."""
    from training.settings import AzureSettings

    return AzureSettings.load().datastore


#: A workspace named by URI (Azure ML's own resource-id form, with or without the provider segment).
_WORKSPACE_URI = re.compile(
    r"^azureml://subscriptions/(?P<sub>[^/]+)/resource[gG]roups/(?P<rg>[^/]+)/"
    r"(?:providers/Microsoft\.MachineLearningServices/)?workspaces/(?P<ws>[^/]+)/?$"
)


def parse_workspace_uri(uri: str) -> tuple[str, str, str]:
    """``azureml://subscriptions/<sub>/resourceGroups/<rg>/workspaces/<ws>`` -> ``(sub, rg, ws)``.

    Raises:
        ConfigError: any other form (the message shows the expected one).
    """
    m = _WORKSPACE_URI.match(uri.strip())
    if not m:
        raise ConfigError(
            f"{uri!r} is not an Azure ML workspace URI; expected "
            "azureml://subscriptions/<subscription>/resourceGroups/<resource group>/workspaces/<workspace>"
        )
    return m["sub"], m["rg"], m["ws"]


def validate_model(model: Any) -> Any:
    """Round-trip an ``azure.ai.ml.entities.Model`` through its YAML schema (``dump`` + ``load_model``)
    and return the loaded entity. Raises :class:`ConfigError` with the SDK's message when it is invalid."""
    from azure.ai.ml import load_model

    from training.cloud.azure import quiet_sdk

    quiet_sdk()
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "model.yaml"
        try:
            model.dump(f)
            loaded = load_model(f)
        except Exception as e:  # marshmallow / azure-ai-ml ValidationError
            raise ConfigError(f"Azure ML model asset {model.name}:{model.version} is invalid: {e}") from e
    if loaded.type != "custom_model" or not _DATASTORE_PATH.match(str(loaded.path)):
        raise ConfigError(f"Azure ML model asset {model.name}:{model.version}: expected a custom_model on a datastore path")
    return loaded


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class AzureMLRegistry(ModelRegistry):
    """Model assets of an Azure ML workspace as a :class:`ModelRegistry` (module docstring).

    Args:
        ml_client: an ``azure.ai.ml.MLClient`` of the workspace (default: one from the AZURE_* settings
            and ``DefaultAzureCredential``).
        datastore: the datastore holding the runs (default ``$DETOPS_AML_DATASTORE`` or ``workspaceblobstore``).
        workspace_uri: another workspace than the settings' one
            (``azureml://subscriptions/<sub>/resourceGroups/<rg>/workspaces/<ws>``, e.g. the dev workspace
            ``detops promote`` reads from); its artifact URLs then name the datastore's storage account.

    Raises:
        ConfigError: ``workspace_uri`` is not a workspace URI.
    """

    def __init__(self, ml_client: Any = None, datastore: str | None = None, workspace_uri: str | None = None) -> None:
        self._ml_client = ml_client
        self.datastore = datastore or _datastore_setting()
        self.workspace_uri = workspace_uri
        self._workspace = parse_workspace_uri(workspace_uri) if workspace_uri else None
        self._storage: dict[str, str] = {}

    @property
    def ml(self) -> Any:
        """The workspace's ``MLClient`` (created on first use)."""
        if self._ml_client is None:
            from training.cloud import azure
            from training.settings import AzureSettings

            settings = AzureSettings.load()
            if self._workspace is not None:
                sub, rg, ws = self._workspace
                settings = settings.model_copy(update={"subscription_id": sub, "resource_group": rg, "workspace": ws})
            what = f"read the model registry of workspace {settings.workspace!r}" if self._workspace else "read the Azure ML model registry"
            self._ml_client = azure.ml_client(settings, what=what)
        return self._ml_client

    #: The approver identity may read the workspace, not write model assets: the record is the only copy.
    mirrors_decisions = False

    def approval_records(self) -> Any:
        """The records of this workspace's versions, under ``<root>/<workspace name>/``.

        The root is ``$DETOPS_APPROVALS_URI`` (this stack's ``approvals`` container, which only the approver
        identity may write); for another stack's workspace (``workspace_uri``: the promotion source) it
        is that stack's ``approvals`` container, in the storage account of its datastore (the stacks give
        the promoting identity read access to it).

        Raises:
            ConfigError: ``DETOPS_APPROVALS_URI`` unset: a model asset's tags can be set by every identity
                that may write the workspace, so the status fails closed.
        """
        from deployment.registry.records import ApprovalRecords
        from training.settings import CommonSettings

        if self._workspace is not None:
            ds = self._call(f"get datastore {self.datastore!r}", self.ml.datastores.get, self.datastore)
            root = f"az://{APPROVALS_CONTAINER}@{ds.account_name}.blob.{getattr(ds, 'endpoint', None) or 'core.windows.net'}"
        else:
            root = CommonSettings.load().approvals_uri or ""
        if not root:
            raise ConfigError("Azure ML approvals need DETOPS_APPROVALS_URI (stack output: the approvals container, "
                              "which only the approver identity may write)")
        return ApprovalRecords(storage.join(root, str(self.ml.workspace_name)))

    def promotion_source_records(self, origin: str) -> Any:
        """The dev workspace's records of the version ``origin`` names
        (``AzureMLRegistry:azureml://subscriptions/.../workspaces/<ws>#<name>/<version>``), or None for
        another form."""
        label, _, ref = origin.partition("#")
        kind, _, workspace_uri = label.partition(":")
        name, _, version = ref.rpartition("/")
        if kind != type(self).__name__ or not workspace_uri or not name:
            return None
        source = AzureMLRegistry(workspace_uri=workspace_uri, datastore=self.datastore)
        return source.approval_records(), name, version

    def _call(self, what: str, fn, *args, **kwargs):
        from training.cloud.azure import azure_error

        try:
            return fn(*args, **kwargs)
        except Exception as e:  # azure.core.exceptions.HttpResponseError and friends
            raise azure_error(e, what) from e

    def storage_url(self, path: str) -> str:
        """``azureml://datastores/<ds>/paths/<p>`` -> ``az://<container>/<p>`` (to hash the files with fsspec);
        ``az://<container>@<account>.blob.<suffix>/<p>`` for a registry of another workspace (``workspace_uri``)."""
        m = _DATASTORE_PATH.match(path)
        if not m:
            return path
        if m["ds"] not in self._storage:
            ds = self._call(f"get datastore {m['ds']!r}", self.ml.datastores.get, m["ds"])
            root = ds.container_name
            if self._workspace is not None:
                root = f"{root}@{ds.account_name}.blob.{getattr(ds, 'endpoint', None) or 'core.windows.net'}"
            self._storage[m["ds"]] = root
        return f"az://{self._storage[m['ds']]}/{m['path'].strip('/')}"

    def model_entity(self, name: str, version: str, artifact_uri: str, tags: dict[str, str], description: str = ""):
        """The ``Model`` asset (type ``custom_model``, datastore path) for ``artifact_uri``, validated."""
        from azure.ai.ml.entities import Model

        model = Model(name=name, version=str(version), type="custom_model",
                      path=datastore_path(artifact_uri, self.datastore), tags=dict(tags), description=description)
        validate_model(model)
        return model

    def _to_version(self, model: Any) -> ModelVersion:
        tags = {k: str(v) for k, v in (model.tags or {}).items()}
        mv = version_from_tags(model.name, str(model.version), self.storage_url(str(model.path)), tags)
        mv.tags["azureml:asset_id"] = f"azureml:{model.name}:{model.version}"
        mv.tags["azureml:path"] = str(model.path)
        return mv

    def _get(self, name: str, version: str) -> Any:
        from training.errors import DetopsError

        try:
            return self._call(f"get model {name}:{version}", self.ml.models.get, name=name, version=str(version))
        except NotFoundError:
            raise
        except DetopsError as e:
            if "not found" in str(e).lower():
                raise NotFoundError(f"model {name!r} version {version!r} not found in the Azure ML workspace") from e
            raise

    # -- ModelRegistry -------------------------------------------------------------------------
    def create_version(self, name: str, artifact_uri: str, registered_by: str,
                       metrics: dict[str, float], tags: dict[str, str]) -> ModelVersion:
        """Register model asset ``name`` at the next version number, status ``PendingManualApproval``."""
        existing = [int(v.version) for v in self.list_versions(name) if v.version.isdigit()]
        version = str(max(existing, default=0) + 1)
        all_tags = {k: str(v) for k, v in tags.items() if k not in (STATUS_TAG, BY_TAG, CREATED_TAG)}
        all_tags.update({f"{METRIC_PREFIX}{k}": repr(float(v)) for k, v in metrics.items()})
        all_tags.update({STATUS_TAG: ApprovalStatus.PENDING.value, BY_TAG: registered_by, CREATED_TAG: _now()})
        model = self.model_entity(name, version, artifact_uri, all_tags,
                                  f"registered by {registered_by} from {tags.get('run_url', artifact_uri)}")
        created = self._call(f"register model {name}:{version}", self.ml.models.create_or_update, model)
        return self._to_version(created)

    def get_version(self, name: str, version: str) -> ModelVersion:
        """One model asset version; :class:`NotFoundError` when absent."""
        return self._to_version(self._get(name, version))

    def list_versions(self, name: str | None = None) -> list[ModelVersion]:
        """Versions of one model (or of every model), oldest first."""
        from training.errors import DetopsError

        if name is None:
            names = sorted({m.name for m in self._call("list models", self.ml.models.list)})
        else:
            names = [name]
        out: list[ModelVersion] = []
        for n in names:
            try:
                found = list(self._call(f"list versions of {n!r}", self.ml.models.list, name=n))
            except DetopsError as e:
                if isinstance(e, NotFoundError) or "not found" in str(e).lower():
                    continue
                raise
            out.extend(self._to_version(m) for m in found)
        return sorted(out, key=lambda v: (v.name, int(v.version) if v.version.isdigit() else 10**12))

    def set_status(self, name: str, version: str, status: ApprovalStatus, entry: AuditEntry) -> ModelVersion:
        """Set the ``approval_status`` tag and append ``entry`` as the next ``audit.NNNN`` tag (asset update)."""
        model = self._get(name, version)
        tags = dict(model.tags or {})
        n = sum(1 for k in tags if k.startswith(AUDIT_PREFIX))
        tags[f"{AUDIT_PREFIX}{n:04d}"] = json.dumps(entry.__dict__)
        tags[STATUS_TAG] = ApprovalStatus(status).value
        model.tags = tags
        validate_model(model)
        updated = self._call(f"update model {name}:{version}", self.ml.models.create_or_update, model)
        return self._to_version(updated)
