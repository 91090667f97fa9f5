"""Azure ML online endpoint target (azure-ai-ml SDK v2), blue/green.

One endpoint (``auth_mode: key``) on managed compute or on an AKS cluster attached to the
workspace as Kubernetes compute; two deployments, ``blue`` and ``green``. A new version goes to
the colour that does not take traffic, then traffic moves to it (100/0; the other colour stays,
so a rollback is a traffic shift back when it still holds the previous Approved version). Every
deployment runs the serving image (the FastAPI app: liveness ``/healthz``, readiness ``/readyz``,
scoring ``/score`` on port 8080), with Application Insights and the model data collector on
(request and response payloads logged to the workspace's blob store).

Only Approved versions reach :meth:`AzureMLTarget.deploy` (:mod:`deployment.deploy` checks); the
model is the registered model asset ``azureml:<name>:<version>`` (:mod:`deployment.registry.azureml`),
i.e. what Azure ML registered, and the container gets ``DETOPS_MODEL_SHA256`` to verify the files it
loads. Each deployment's tags name its version and the version live before it
(``detops.previous_model_*``, exact rollback).

Settings (environment): ``AZURE_SUBSCRIPTION_ID``, ``AZURE_RESOURCE_GROUP``, ``AZUREML_WORKSPACE``
(to deploy; authentication ``DefaultAzureCredential``), ``DETOPS_SERVING_IMAGE`` (in ACR),
``DETOPS_AML_ENDPOINT`` (default ``detops``), ``DETOPS_AML_DEPLOY_COMPUTE`` (``managed``, the
default, or the name of the attached Kubernetes compute), ``DETOPS_AML_INSTANCE_TYPE``
(``Standard_DS3_v2`` managed; the Kubernetes instance type otherwise, default
``defaultinstancetype``), ``DETOPS_AML_INSTANCE_COUNT`` (default 1). The API key is Azure ML's
endpoint key (``az ml online-endpoint get-credentials``); the container reads ``DETOPS_API_KEYS``
from a Key Vault reference set by infra, never from this code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deployment.registry.base import ModelVersion
from deployment.targets.base import Deployment, DeployTarget, container_env
from training.errors import BackendError, ConfigError, GateError

COLORS = ("blue", "green")
PORT = 8080
DRY_RUN_IMAGE = "detopsacr.azurecr.io/detops-serving:0.1.0"


def _other(color: str | None) -> str:
    return "green" if color == "blue" else "blue"


class AzureMLTarget(DeployTarget):
    """Deploy to an Azure ML online endpoint with blue/green deployments (module docstring)."""

    name = "azureml"

    def __init__(self, ml_client: Any = None, compute: str | None = None, image: str | None = None,
                 approvals: Any = None) -> None:
        from training.settings import AzureSettings, CommonSettings

        self._ml_client = ml_client
        #: what answers "is it Approved now?" before a deploy: the workspace registry's
        #: :class:`~deployment.registry.approval.ApprovalService` unless given
        self._approvals = approvals
        self.settings = AzureSettings.load()  # ConfigError naming DETOPS_AML_INSTANCE_COUNT etc. when invalid
        self.compute = compute or self.settings.deploy_compute
        self.image = image or CommonSettings.load().serving_image
        default_type = "Standard_DS3_v2" if self.compute == "managed" else "defaultinstancetype"
        self.instance_type = self.settings.instance_type or default_type
        self.instance_count = self.settings.instance_count

    @property
    def kubernetes(self) -> bool:
        """True when deploying to AKS attached as Kubernetes compute."""
        return self.compute != "managed"

    def ml_client(self):
        """``azure.ai.ml.MLClient`` of the workspace (created on first use; a dry run never calls it)."""
        if self._ml_client is None:
            from training.cloud import azure

            self._ml_client = azure.ml_client(self.settings, what="deploy to Azure ML")
        return self._ml_client

    def _endpoint_name(self, endpoint: str | None) -> str:
        import re

        name = endpoint or self.settings.endpoint or "detops"
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]", name):
            raise ConfigError(f"Azure ML endpoint name {name!r}: 3-32 characters, a letter first, letters, digits, hyphens")
        return name

    # -- entities ------------------------------------------------------------------------------
    def build_endpoint(self, endpoint: str, traffic: dict[str, int] | None = None):
        """The ``ManagedOnlineEndpoint`` / ``KubernetesOnlineEndpoint`` entity (``auth_mode: key``)."""
        from training.cloud.azure import quiet_sdk

        quiet_sdk()
        from azure.ai.ml.entities import (
            IdentityConfiguration,
            KubernetesOnlineEndpoint,
            ManagedIdentityConfiguration,
            ManagedOnlineEndpoint,
        )

        common: dict[str, Any] = {"name": endpoint, "auth_mode": "key", "description": "detops object detector",
                  "tags": {"managed-by": "detops"}, "traffic": traffic or {}}
        if self.settings.endpoint_identity:
            # the stack's serving identity pulls the model files and the image (docs/infra.md, "Identities")
            common["identity"] = IdentityConfiguration(type="user_assigned", user_assigned_identities=[
                ManagedIdentityConfiguration(resource_id=self.settings.endpoint_identity)])
        if self.kubernetes:
            return KubernetesOnlineEndpoint(compute=self.compute, **common)
        return ManagedOnlineEndpoint(**common)

    def build_deployment(self, version: ModelVersion, endpoint: str, color: str,
                         previous: dict[str, Any] | None = None):
        """The online deployment entity of ``version`` as colour ``color`` on ``endpoint``.

        Serving image with probes on port 8080, App Insights on, data collector on (payload
        logging of requests and responses), ``DETOPS_MODEL_*`` environment naming the version.
        """
        from azure.ai.ml.entities import (
            DataCollector,
            DeploymentCollection,
            Environment,
            KubernetesOnlineDeployment,
            ManagedOnlineDeployment,
            OnlineRequestSettings,
            ProbeSettings,
        )

        if color not in COLORS:
            raise ConfigError(f"deployment colour must be blue or green, got {color!r}")
        env = Environment(
            name="detops-serving",
            image=self.image or DRY_RUN_IMAGE,
            inference_config={
                "liveness_route": {"port": PORT, "path": "/healthz"},
                "readiness_route": {"port": PORT, "path": "/readyz"},
                "scoring_route": {"port": PORT, "path": "/score"},
            },
        )
        kwargs: dict[str, Any] = {
            "name": color,
            "endpoint_name": endpoint,
            "model": f"azureml:{version.name}:{version.version}",
            "environment": env,
            "instance_type": self.instance_type,
            "instance_count": self.instance_count,
            "app_insights_enabled": True,
            "data_collector": DataCollector(
                # payload logging of the HTTP request and response: needs no code in the container
                collections={
                    "request": DeploymentCollection(enabled="true"),
                    "response": DeploymentCollection(enabled="true"),
                },
                sampling_rate=1.0,
            ),
            "environment_variables": {
                **container_env(version, self.runtime),
                "DETOPS_PORT": str(PORT),
                # the endpoint's key auth (auth_mode: key) checks callers before the container;
                # the model is mounted under $AZUREML_MODEL_DIR, which the app searches
                "DETOPS_AUTH": "platform",
            },
            "request_settings": OnlineRequestSettings(request_timeout_ms=30000, max_concurrent_requests_per_instance=4),
            "liveness_probe": ProbeSettings(initial_delay=30, period=10),
            "readiness_probe": ProbeSettings(initial_delay=30, period=10),
            "tags": {"detops.model_name": version.name, "detops.model_version": str(version.version),
                     **{f"detops.previous_{k}": str(previous[k]) for k in ("model_name", "model_version")
                        if previous and previous.get(k)}},
        }
        cls = KubernetesOnlineDeployment if self.kubernetes else ManagedOnlineDeployment
        return cls(**kwargs)

    def dump_specs(self, version: ModelVersion, endpoint: str | None, folder: str | Path, color: str = "blue") -> dict[str, str]:
        """Write ``endpoint.yaml`` and ``deployment-<color>.yaml``; both load with azure-ai-ml's
        ``load_online_endpoint`` / ``load_online_deployment`` (tested)."""
        name = self._endpoint_name(endpoint)
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        ep = self.build_endpoint(name)
        dep = self.build_deployment(version, name, color)
        paths = {"endpoint": str(folder / "endpoint.yaml"), "deployment": str(folder / f"deployment-{color}.yaml")}
        # OnlineEndpoint.dump() in azure-ai-ml 1.35 ignores its destination and returns the dict
        import yaml

        plain = json.loads(json.dumps(ep.dump()))  # OrderedDict -> dict for safe_dump
        for identity in (plain.get("identity") or {}).get("user_assigned_identities") or []:
            # the dump writes the ids Azure assigns as nulls, which its own loader rejects
            for key in [k for k, v in identity.items() if v is None]:
                del identity[key]
        Path(paths["endpoint"]).write_text(yaml.safe_dump(plain, sort_keys=True))
        dep.dump(paths["deployment"])
        return paths

    # -- DeployTarget --------------------------------------------------------------------------
    def _current(self, client, name: str):
        from azure.core.exceptions import ResourceNotFoundError

        try:
            ep = client.online_endpoints.get(name)
        except ResourceNotFoundError:
            return None, {}
        traffic = {k: int(v) for k, v in (ep.traffic or {}).items()}
        return ep, traffic

    def require_approved(self, version: ModelVersion, client: Any = None) -> None:
        """Ask the workspace's registry again, here, right before deploying: the version must be Approved by
        its approval records and still carry the artifact digest ``version`` was approved with (as the
        SageMaker target re-reads ``ModelApprovalStatus``).

        Raises:
            GateError: not Approved now, or its artifact digest changed since ``version`` was read.
        """
        from deployment.registry.approval import ApprovalService
        from deployment.registry.artifact import DIGEST_TAG
        from deployment.registry.azureml import AzureMLRegistry

        approvals = self._approvals or ApprovalService(AzureMLRegistry(ml_client=client or self.ml_client()))
        now = approvals.require_approved(version.name, str(version.version))
        if now.tags.get(DIGEST_TAG) != version.tags.get(DIGEST_TAG):
            raise GateError(f"model {version.name} version {version.version}: its artifact digest changed since it "
                            "was read for this deploy; run deploy again")

    def deploy(self, version: ModelVersion, endpoint: str | None = None, *, dry_run: bool = False,
               previous: dict[str, Any] | None = None) -> Deployment:
        """Deploy ``version`` to the idle colour, then move all traffic to it (the switch).

        Raises:
            ConfigError: missing settings. BackendError: Azure ML refused or failed.
        """
        name = self._endpoint_name(endpoint)
        if dry_run:
            import tempfile

            folder = tempfile.mkdtemp(prefix="detops-aml-deploy-")
            paths = self.dump_specs(version, name, folder)
            return Deployment(self.name, name, version.name, str(version.version), "planned",
                              details={"specs": {k: Path(p).read_text() for k, p in paths.items()},
                                       "compute": self.compute, "color": "blue (or the idle colour)"})
        if not self.image:
            raise ConfigError("set DETOPS_SERVING_IMAGE (the serving image in ACR) to deploy")
        client = self.ml_client()
        self.require_approved(version, client)
        try:
            ep, traffic = self._current(client, name)
            if ep is None:
                client.online_endpoints.begin_create_or_update(self.build_endpoint(name)).result()
            live = max(traffic, key=traffic.get) if traffic and max(traffic.values()) > 0 else None
            color = _other(live)
            dep = self.build_deployment(version, name, color, previous)
            client.online_deployments.begin_create_or_update(dep).result()
            ep = client.online_endpoints.get(name)
            ep.traffic = {color: 100, **({live: 0} if live else {})}
            client.online_endpoints.begin_create_or_update(ep).result()
            ep = client.online_endpoints.get(name)
        except ConfigError:
            raise
        except Exception as e:  # azure.core.exceptions.HttpResponseError and friends
            from training.cloud.azure import azure_error

            raise azure_error(e, f"deploy to endpoint {name!r}") from e
        return Deployment(self.name, name, version.name, str(version.version), str(ep.provisioning_state),
                          url=getattr(ep, "scoring_uri", None), details={"color": color, "traffic": dict(ep.traffic or {})})

    def describe(self, endpoint: str | None = None) -> Deployment | None:
        """The version behind the colour taking the most traffic, or None without an endpoint."""
        name = self._endpoint_name(endpoint)
        client = self.ml_client()
        try:
            ep, traffic = self._current(client, name)
            if ep is None or not traffic or max(traffic.values()) == 0:
                return None
            color = max(traffic, key=traffic.get)
            dep = client.online_deployments.get(name=color, endpoint_name=name)
        except Exception as e:
            raise BackendError(f"Azure ML endpoint {name!r}: {type(e).__name__}: {e}") from e
        tags = dep.tags or {}
        previous = None
        if tags.get("detops.previous_model_version"):
            previous = {"model_name": tags.get("detops.previous_model_name", tags.get("detops.model_name", "")),
                        "model_version": tags["detops.previous_model_version"]}
        return Deployment(self.name, name, tags.get("detops.model_name", ""), tags.get("detops.model_version", ""),
                          str(ep.provisioning_state), url=getattr(ep, "scoring_uri", None),
                          details={"color": color, "traffic": traffic, "previous": previous})

    def rollback(self, version: ModelVersion, endpoint: str | None = None,
                 previous: dict[str, Any] | None = None) -> Deployment:
        """Shift traffic back to the idle colour when it holds ``version`` (its tags keep its own
        ``previous``); else deploy it there."""
        name = self._endpoint_name(endpoint)
        client = self.ml_client()
        try:
            ep, traffic = self._current(client, name)
            for color in COLORS:
                if traffic.get(color, 0) > 0:
                    continue
                try:
                    dep = client.online_deployments.get(name=color, endpoint_name=name)
                except Exception:
                    continue
                if (dep.tags or {}).get("detops.model_version") == str(version.version) and \
                        (dep.tags or {}).get("detops.model_name") == version.name:
                    ep.traffic = {color: 100, _other(color): 0}
                    client.online_endpoints.begin_create_or_update(ep).result()
                    return Deployment(self.name, name, version.name, str(version.version), "Succeeded",
                                      details={"color": color, "traffic": ep.traffic, "rollback": "traffic shift"})
        except Exception as e:
            raise BackendError(f"Azure ML rollback on endpoint {name!r}: {type(e).__name__}: {e}") from e
        return self.deploy(version, name, previous=(previous or {}).get("previous"))
