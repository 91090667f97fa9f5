"""An Azure ML workspace for a rehearsal: ``MLClient``'s operations the code uses, kept in files so every ``detops``
process of a rehearsed job sees the same workspace, and each call authorized as the job's identity with Azure RBAC.

The rehearsal (scripts/rehearse_azure.py) writes ``world.json`` into a state folder and gives each job the
folder (``REHEARSAL_AML_STATE``) and the job's identity (``REHEARSAL_AZURE_PRINCIPAL``: ``trainer``,
``registrar``, ``approver``, ``deployer``, ...), with ``tests/ci/rehearsal_site`` on ``PYTHONPATH``; that folder's
``sitecustomize`` then replaces :func:`training.cloud.azure.ml_client` and :func:`training.cloud.azure.credential`
by :func:`install`'s (the code under test is not changed).

``world.json``: the workspace's ARM id, the stack's role assignments (:class:`azure_rbac.Assignment` fields)
and principal ids by name, the user-assigned identities' resource ids by name, the compute clusters (size,
``max_instances``, tier, location), the region's VM sizes and quota usages, the datastores (container), the
Azurite connection string (the setup key: what the service itself reads with) and the front door's URL.
``state.json``: jobs, model versions, endpoints and deployments. ``calls.jsonl``: every call with its RBAC
decision (principal, operation, action, scope, allowed, reason).

What the service would do and this does:
- every operation is checked with :func:`azure_rbac.required` (the action and scope Microsoft documents) against
  the caller's role assignments x the built-in role definitions (tests/infra/azure_rbac.py); a denial is Azure's
  403 ``AuthorizationFailed`` (the message azure-core raises, which :func:`training.cloud.azure.azure_error` reads);
- entities go through azure-ai-ml's own YAML schema on the way in (``dump`` + ``load_*``), as the service validates;
- an online deployment pulls its model as the endpoint's identity (the user-assigned identity the endpoint names,
  else its system-assigned one, which holds no role): every file of the model asset is read under RBAC
  (``blobs/read`` on the runs container) and verified against ``DETOPS_MODEL_SHA256`` as the serving container does
  (:func:`deployment.registry.artifact.verify_model_dir`); a refused read or a changed file fails the deployment.

What it cannot show: ARM's HTTP surface (azure-ai-ml's REST models and retries are not exercised), the job's
containers (the rehearsal runs the steps' commands itself), and a scoring container (the front door answers
with the version of the deployment taking the traffic).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import secrets
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [p for p in (str(HERE.parent / "infra"),) if p not in sys.path]
if str(HERE.parents[1]) not in sys.path:  # the checkout: azure_rbac reads infra/'s role ids
    sys.path.append(str(HERE.parents[1]))

import azure_rbac  # noqa: E402


class Workspace:
    """The state folder of one rehearsed workspace (module docstring)."""

    def __init__(self, folder: str | Path, principal: str) -> None:
        self.folder = Path(folder)
        self.world = json.loads((self.folder / "world.json").read_text())
        self.principal = principal
        assigned = [azure_rbac.Assignment(**a) for a in self.world["assignments"]]
        self.rbac = azure_rbac.Rbac(assigned, azure_rbac.definitions())

    # -- state -------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def state(self) -> Iterator[dict[str, Any]]:
        """The workspace's state, locked for this block and written back at its end."""
        path = self.folder / "state.json"
        with (self.folder / "state.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = json.loads(path.read_text()) if path.exists() else {}
            for key in ("jobs", "models", "endpoints", "deployments"):
                data.setdefault(key, {})
            yield data
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            tmp.replace(path)

    # -- authorization -----------------------------------------------------------------------------
    def principal_id(self, name: str) -> str:
        return self.world["principals"].get(name, name)

    def authorize(self, operation: str, principal: str | None = None, **resource: str) -> None:
        """Check ``operation`` on ``resource`` (:func:`azure_rbac.required`'s keywords; ``workspace`` is this
        workspace) as ``principal`` (default the caller); log the decision.

        Raises:
            azure.core.exceptions.HttpResponseError: 403 AuthorizationFailed, in Azure's words.
        """
        who = principal or self.principal
        if not operation.startswith("compute.list_"):
            resource.setdefault("workspace", self.world["workspace_id"])
        action, scope = azure_rbac.required(operation, **resource)
        decision = self.rbac.check(who, action, scope)
        with (self.folder / "calls.jsonl").open("a") as log:
            log.write(json.dumps({"principal": who, "operation": operation, "action": action, "scope": scope,
                                  "allowed": decision.allowed, "reason": decision.reason}) + "\n")
        if not decision.allowed:
            from azure.core.exceptions import HttpResponseError

            pid = self.principal_id(who)
            error = HttpResponseError(message=(
                f"(AuthorizationFailed) The client '{pid}' with object id '{pid}' does not have authorization to "
                f"perform action '{action}' over scope '{scope}' or the scope is invalid."))
            error.status_code = 403
            raise error

    def container_id(self, name: str) -> str:
        return f"{self.world['storage_account_id']}/blobServices/default/containers/{name}"


def _not_found(what: str) -> Exception:
    from azure.core.exceptions import ResourceNotFoundError

    error = ResourceNotFoundError(message=f"(ResourceNotFound) {what} was not found.")
    error.status_code = 404
    return error


class _Poller:
    def __init__(self, value: Any) -> None:
        self._value = value

    def result(self, timeout: float | None = None) -> Any:
        return self._value

    def wait(self, timeout: float | None = None) -> None:
        return None

    def done(self) -> bool:
        return True


def _round_trip(entity: Any, loader: str) -> Any:
    """``entity`` through azure-ai-ml's YAML schema (``dump`` then ``azure.ai.ml.<loader>``), as the service
    validates what it is sent. Raises the SDK's ValidationError for an invalid entity."""
    import azure.ai.ml as aml
    import yaml

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "entity.yaml"
        dumped = entity.dump(path)
        if dumped is not None and not path.exists():  # OnlineEndpoint.dump returns the dict (azure-ai-ml 1.x)
            plain = json.loads(json.dumps(dumped))
            for identity in (plain.get("identity") or {}).get("user_assigned_identities") or []:
                for key in [k for k, v in identity.items() if v is None]:
                    del identity[key]
            path.write_text(yaml.safe_dump(plain))
        return getattr(aml, loader)(path)


# -- operation groups ---------------------------------------------------------------------------------


class _Jobs:
    def __init__(self, ws: Workspace) -> None:
        self.ws = ws

    def create_or_update(self, job: Any) -> Any:
        name = job.name or f"detops_{uuid.uuid4().hex[:10]}"
        self.ws.authorize("jobs.create_or_update", name=name)
        steps = {}
        for step, node in job.jobs.items():
            steps[step] = {"command": node.command, "environment_variables": dict(node.environment_variables or {}),
                           "identity": type(node.identity).__name__ if node.identity is not None else None,
                           "compute": node.compute or job.settings.default_compute}
        record = {"name": name, "status": "Running", "display_name": job.display_name,
                  "experiment_name": job.experiment_name, "steps": steps,
                  "inputs": {k: getattr(v, "path", None) for k, v in job.inputs.items()},
                  "outputs": {k: getattr(v, "path", None) for k, v in job.outputs.items()},
                  "submitted_by": self.ws.principal}
        with self.ws.state() as s:
            s["jobs"][name] = record
        return self.get(name, _checked=True)

    def get(self, name: str, _checked: bool = False) -> Any:
        if not _checked:
            self.ws.authorize("jobs.get", name=name)
        with self.ws.state() as s:
            record = s["jobs"].get(name)
        if record is None:
            raise _not_found(f"job {name}")
        return type("Job", (), {"name": name, "status": record["status"], "display_name": record["display_name"],
                                "studio_url": f"https://ml.azure.com/runs/{name}"})()

    def stream(self, name: str) -> None:
        self.ws.authorize("jobs.stream", name=name)

    def begin_cancel(self, name: str) -> _Poller:
        self.ws.authorize("jobs.begin_cancel", name=name)
        with self.ws.state() as s:
            if name not in s["jobs"]:
                raise _not_found(f"job {name}")
            s["jobs"][name]["status"] = "Canceled"
        return _Poller(None)


class _Models:
    def __init__(self, ws: Workspace) -> None:
        self.ws = ws

    def create_or_update(self, model: Any) -> Any:
        from deployment.registry.azureml import validate_model

        self.ws.authorize("models.create_or_update", name=model.name, version=str(model.version))
        loaded = validate_model(model)
        with self.ws.state() as s:
            s["models"][f"{model.name}:{model.version}"] = {
                "name": loaded.name, "version": str(loaded.version), "type": loaded.type, "path": str(loaded.path),
                "tags": dict(loaded.tags or {}), "description": loaded.description}
        return self._entity(s["models"][f"{model.name}:{model.version}"])

    @staticmethod
    def _entity(record: dict[str, Any]) -> Any:
        from azure.ai.ml.entities import Model

        return Model(name=record["name"], version=record["version"], type=record["type"], path=record["path"],
                     tags=dict(record["tags"]), description=record.get("description"))

    def get(self, name: str, version: str | None = None, label: str | None = None) -> Any:
        self.ws.authorize("models.get", name=name, version=str(version))
        with self.ws.state() as s:
            record = s["models"].get(f"{name}:{version}")
        if record is None:
            raise _not_found(f"model {name}:{version}")
        return self._entity(record)

    def list(self, name: str | None = None, **_: Any) -> list[Any]:
        self.ws.authorize("models.list")
        with self.ws.state() as s:
            records = list(s["models"].values())
        if name is None:  # one entry per model name (the service lists containers)
            latest: dict[str, dict[str, Any]] = {}
            for r in records:
                if r["name"] not in latest or int(r["version"]) > int(latest[r["name"]]["version"]):
                    latest[r["name"]] = r
            records = list(latest.values())
        return [self._entity(r) for r in sorted(records, key=lambda r: (r["name"], int(r["version"])))
                if name is None or r["name"] == name]


class _Endpoints:
    def __init__(self, ws: Workspace) -> None:
        self.ws = ws

    def _entity(self, record: dict[str, Any]) -> Any:
        from azure.ai.ml.entities import IdentityConfiguration, ManagedIdentityConfiguration, ManagedOnlineEndpoint

        identity = None
        if record["identities"]:
            identity = IdentityConfiguration(type="user_assigned", user_assigned_identities=[
                ManagedIdentityConfiguration(resource_id=i) for i in record["identities"]])
        ep = ManagedOnlineEndpoint(name=record["name"], auth_mode=record["auth_mode"], traffic=dict(record["traffic"]),
                                   identity=identity, tags=dict(record["tags"]))
        ep._provisioning_state = "Succeeded"  # noqa: SLF001 - set by the service
        ep._scoring_uri = f"{self.ws.world['front_door']}/{record['name']}/score"  # noqa: SLF001
        return ep

    def _record(self, operation: str, name: str) -> dict[str, Any]:
        self.ws.authorize(operation, endpoint=name)
        with self.ws.state() as s:
            record = s["endpoints"].get(name)
        if record is None:
            raise _not_found(f"online endpoint {name}")
        return record

    def get(self, name: str) -> Any:
        return self._entity(self._record("online_endpoints.get", name))

    def begin_create_or_update(self, endpoint: Any) -> _Poller:
        self.ws.authorize("online_endpoints.begin_create_or_update", endpoint=endpoint.name)
        loaded = _round_trip(endpoint, "load_online_endpoint")
        ids = [i.resource_id for i in ((loaded.identity.user_assigned_identities or []) if loaded.identity else [])]
        with self.ws.state() as s:
            old = s["endpoints"].get(endpoint.name)
            traffic = {k: int(v) for k, v in (endpoint.traffic or {}).items()}
            missing = [c for c, share in traffic.items() if share and f"{endpoint.name}/{c}" not in s["deployments"]]
            if missing:
                from azure.core.exceptions import HttpResponseError

                raise HttpResponseError(message=f"(BadRequest) traffic to deployment(s) {missing} that do not exist")
            s["endpoints"][endpoint.name] = {
                "name": endpoint.name, "auth_mode": loaded.auth_mode, "traffic": traffic, "identities": ids,
                "tags": dict(loaded.tags or {}), "key": old["key"] if old else secrets.token_urlsafe(24)}
            record = s["endpoints"][endpoint.name]
        return _Poller(self._entity(record))

    def get_keys(self, name: str) -> Any:
        record = self._record("online_endpoints.get_keys", name)
        return type("EndpointAuthKeys", (), {"primary_key": record["key"], "secondary_key": record["key"][::-1]})()


class _Deployments:
    def __init__(self, ws: Workspace) -> None:
        self.ws = ws

    def get(self, name: str, endpoint_name: str) -> Any:
        self.ws.authorize("online_deployments.get", endpoint=endpoint_name, deployment=name)
        with self.ws.state() as s:
            record = s["deployments"].get(f"{endpoint_name}/{name}")
        if record is None:
            raise _not_found(f"deployment {name} of endpoint {endpoint_name}")
        return type("OnlineDeployment", (), {"name": name, "endpoint_name": endpoint_name, "tags": dict(record["tags"]),
                                             "model": record["model"], "provisioning_state": "Succeeded"})()

    def begin_create_or_update(self, deployment: Any) -> _Poller:
        endpoint = deployment.endpoint_name
        self.ws.authorize("online_deployments.begin_create_or_update", endpoint=endpoint, deployment=deployment.name)
        loaded = _round_trip(deployment, "load_online_deployment")
        with self.ws.state() as s:
            ep = s["endpoints"].get(endpoint)
            model = s["models"].get(str(deployment.model).removeprefix("azureml:"))
        if ep is None:
            raise _not_found(f"online endpoint {endpoint}")
        if model is None:
            raise _not_found(f"model {deployment.model}")
        self._pull(ep, model, dict(loaded.environment_variables or {}))
        with self.ws.state() as s:
            s["deployments"][f"{endpoint}/{deployment.name}"] = {
                "name": deployment.name, "endpoint": endpoint, "model": str(deployment.model),
                "tags": dict(loaded.tags or {}), "environment_variables": dict(loaded.environment_variables or {})}
        return _Poller(self.get(deployment.name, endpoint))

    def _pull(self, endpoint: dict[str, Any], model: dict[str, Any], env: dict[str, str]) -> None:
        """The deployment's container start: the model's files read as the endpoint's identity, then verified
        against ``DETOPS_MODEL_SHA256`` (module docstring). Raises HttpResponseError (deployment failed)."""
        from azure.core.exceptions import HttpResponseError
        from azure.storage.blob import ContainerClient

        from deployment.registry.artifact import verify_model_dir
        from training.errors import DetopsError

        names = {v: k for k, v in self.ws.world["identities"].items()}
        who = next((names[i] for i in endpoint["identities"] if i in names), f"endpoint:{endpoint['name']}")
        store, _, prefix = model["path"].split("/datastores/", 1)[1].partition("/paths/")
        container = self.ws.world["datastores"][store]
        client = ContainerClient.from_connection_string(self.ws.world["connection_string"], container)
        with tempfile.TemporaryDirectory() as d:
            for blob in client.list_blobs(name_starts_with=prefix):
                try:
                    self.ws.authorize("blob.read", who, container=self.ws.container_id(container), path=blob.name)
                except HttpResponseError as e:
                    raise HttpResponseError(message=(
                        f"(DeploymentFailed) the model could not be mounted as {who}: {e.message}")) from e
                local = Path(d) / blob.name.removeprefix(prefix)
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_bytes(client.download_blob(blob.name).readall())
            try:
                verify_model_dir(d, env.get("DETOPS_MODEL_SHA256") or "")
            except DetopsError as e:
                raise HttpResponseError(message=f"(DeploymentFailed) the container refused the model: {e}") from e


class _Compute:
    def __init__(self, ws: Workspace) -> None:
        self.ws = ws

    def get(self, name: str) -> Any:
        self.ws.authorize("compute.get", name=name)
        found = self.ws.world["computes"].get(name)
        if found is None:
            raise _not_found(f"compute {name}")
        return type("AmlCompute", (), {"name": name, **found})()

    def _region(self, location: str | None) -> dict[str, str]:
        return {"subscription": self.ws.world["subscription_id"], "location": location or "westeurope"}

    def list_sizes(self, location: str | None = None, **_: Any) -> list[dict[str, Any]]:
        self.ws.authorize("compute.list_sizes", **self._region(location))
        return list(self.ws.world["sizes"])

    def list_usage(self, location: str | None = None, **_: Any) -> list[dict[str, Any]]:
        self.ws.authorize("compute.list_usage", **self._region(location))
        return list(self.ws.world["usages"])


class FakeMLClient:
    """``azure.ai.ml.MLClient`` of the rehearsed workspace, acting as ``principal`` (module docstring)."""

    def __init__(self, folder: str | Path, principal: str) -> None:
        ws = Workspace(folder, principal)
        self.workspace = ws
        self.subscription_id = ws.world["subscription_id"]
        self.resource_group_name = ws.world["resource_group"]
        self.workspace_name = ws.world["workspace"]
        self.jobs = _Jobs(ws)
        self.models = _Models(ws)
        self.online_endpoints = _Endpoints(ws)
        self.online_deployments = _Deployments(ws)
        self.compute = _Compute(ws)
        stores = ws.world["datastores"]
        account = ws.world["account"]

        def datastore(name: str) -> Any:
            ws.authorize("datastores.get", name=name)
            if name not in stores:
                raise _not_found(f"datastore {name}")
            return type("AzureBlobDatastore", (), {"name": name, "container_name": stores[name], "account_name": account,
                                                  "endpoint": "core.windows.net"})()

        self.datastores = type("Datastores", (), {"get": staticmethod(datastore)})()

        def workspace(name: str) -> Any:
            ws.authorize("workspaces.get")
            return type("Workspace", (), {"name": name, "mlflow_tracking_uri": ws.world.get("mlflow_tracking_uri")})()

        self.workspaces = type("Workspaces", (), {"get": staticmethod(workspace)})()


class FakeCredential:
    """A credential whose access token names ``principal`` (``oid`` = its principal id, ``name``), unsigned: the
    code reads the claims only (:func:`training.cloud.azure.caller_principal`)."""

    def __init__(self, folder: str | Path, principal: str) -> None:
        self.principal = principal
        self.oid = Workspace(folder, principal).principal_id(principal)

    def get_token(self, *scopes: str, **_: Any) -> Any:
        def part(doc: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")

        token = f"{part({'alg': 'none', 'typ': 'JWT'})}.{part({'oid': self.oid, 'name': self.principal})}.sig"
        return type("AccessToken", (), {"token": token, "expires_on": 2**31 - 1})()


def install() -> None:
    """Replace :mod:`training.cloud.azure`'s ``ml_client`` and ``credential`` by the fakes of
    ``$REHEARSAL_AML_STATE`` as ``$REHEARSAL_AZURE_PRINCIPAL`` (called by tests/ci/rehearsal_site/sitecustomize.py)."""
    folder, principal = os.environ["REHEARSAL_AML_STATE"], os.environ.get("REHEARSAL_AZURE_PRINCIPAL", "")
    from training.cloud import azure

    def ml_client(settings: Any = None, cred: Any = None, *, what: str = "reach the Azure ML workspace") -> Any:
        from training.settings import AzureSettings

        (settings or AzureSettings.load()).workspace_ids(what)  # the same ConfigError when a setting is unset
        if not principal:
            from training.errors import BackendError

            raise BackendError(f"{what}: no Azure login in this job (DefaultAzureCredential found no identity)")
        return FakeMLClient(folder, principal)

    def credential() -> Any:
        return FakeCredential(folder, principal)

    azure.ml_client = ml_client
    azure.credential = credential
