"""Azure ML registry: model assets (azure-ai-ml ``Model``, custom_model, datastore path) validated by the
SDK, approval status and audit as asset tags, the artifact on Azurite verified; MLflow URI helpers."""

from __future__ import annotations

import json

import pytest

from deployment.registry.azureml import (
    AzureMLRegistry,
    datastore_path,
    https_tracking_uri,
    validate_model,
    workspace_tracking_uri,
)
from training.errors import ConfigError

URI = "azureml://westeurope.api.azureml.ms/mlflow/v1.0/subscriptions/0000/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws"


def test_https_tracking_uri():
    assert https_tracking_uri(URI) == "https://" + URI[len("azureml://"):]
    assert https_tracking_uri("sqlite:///x.db") == "sqlite:///x.db"
    with pytest.raises(ConfigError, match="not an Azure ML MLflow"):
        https_tracking_uri("azureml://datastores/x/paths/y")


def test_workspace_uri_from_client_and_missing_settings(no_cloud_credentials, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    class WS:
        mlflow_tracking_uri = URI

    class Client:
        workspace_name = "ws"

        class workspaces:  # noqa: N801 - mimics MLClient.workspaces
            @staticmethod
            def get(name):
                assert name == "ws"
                return WS()

    assert workspace_tracking_uri(Client()) == URI
    with pytest.raises(ConfigError, match="AZUREML_WORKSPACE"):
        workspace_tracking_uri()


class FakeModels:
    """``MLClient.models`` in memory; every entity goes through the SDK's YAML schema as the service would."""

    def __init__(self) -> None:
        self.store: dict[tuple[str, str], object] = {}
        self.calls: list[str] = []

    def create_or_update(self, model):
        self.calls.append(f"{model.name}:{model.version}")
        self.store[(model.name, str(model.version))] = validate_model(model)
        return self.store[(model.name, str(model.version))]

    def get(self, name, version):
        from azure.core.exceptions import ResourceNotFoundError

        if (name, str(version)) not in self.store:
            raise ResourceNotFoundError(f"model {name}:{version} not found")
        return self.store[(name, str(version))]

    def list(self, name=None):
        return [m for (n, _), m in sorted(self.store.items()) if name is None or n == name]


class FakeClient:
    def __init__(self, container: str) -> None:
        self.models = FakeModels()
        ds = type("Datastore", (), {"container_name": container})()
        self.datastores = type("Datastores", (), {"get": staticmethod(lambda name: ds)})()


def test_datastore_paths():
    assert datastore_path("az://runs-container/bccd/runs/r1/export") == \
        "azureml://datastores/workspaceblobstore/paths/bccd/runs/r1/export/"
    assert datastore_path("az://c/x", "detopsruns") == "azureml://datastores/detopsruns/paths/x/"
    long = "azureml://subscriptions/0/resourcegroups/rg/workspaces/ws/datastores/d/paths/p/export"
    assert datastore_path(long) == long + "/"
    with pytest.raises(ConfigError, match="workspace datastore"):
        datastore_path("s3://bucket/run/export")


def test_model_asset_is_validated_by_the_sdk():
    from azure.ai.ml.entities import Model

    ok = Model(name="bccd-detector", version="1", type="custom_model",
               path="azureml://datastores/workspaceblobstore/paths/r/export/", tags={"approval_status": "Approved"})
    assert validate_model(ok).tags == {"approval_status": "Approved"}
    with pytest.raises(ConfigError, match="custom_modelx|not in set"):
        validate_model(Model(name="bccd-detector", version="1", type="custom_modelx", path=ok.path))
    with pytest.raises(ConfigError, match="datastore path"):
        validate_model(Model(name="bccd-detector", version="1", type="custom_model", path="az://c/r/export"))


def test_register_approve_deploy_from_the_asset_with_the_digest_checked(azure_env, tmp_path, monkeypatch):
    from azure.storage.blob import BlobServiceClient

    from deployment import deploy as deploy_mod
    from deployment.registry.approval import ApprovalService
    from deployment.registry.artifact import ArtifactIntegrityError
    from deployment.registry.base import ApprovalStatus
    from deployment.targets.azureml import AzureMLTarget
    from training import storage

    BlobServiceClient.from_connection_string(azure_env).create_container("runs")
    run_url = "az://runs/bccd/runs/20261122T120000-r1"
    run = tmp_path / "run"
    from deployment.testing import make_fake_run

    stub = tmp_path / "stub" / "saved_model"
    stub.mkdir(parents=True)
    (stub / "saved_model.pb").write_bytes(b"pb")
    make_fake_run(run, saved_model_src=str(stub))
    storage.upload_dir(str(run), run_url)

    client = FakeClient("runs")
    registry = AzureMLRegistry(ml_client=client)
    service = ApprovalService(registry)
    mv = service.register(run_url, "bccd-detector", by="ci")
    asset = client.models.get("bccd-detector", mv.version)
    assert asset.type == "custom_model"
    assert asset.path == "azureml://datastores/workspaceblobstore/paths/bccd/runs/20261122T120000-r1/export/"
    assert asset.tags["approval_status"] == "PendingManualApproval"
    assert [json.loads(asset.tags[f"audit.{i:04d}"])["action"] for i in range(2)] == ["gate", "register"]
    assert mv.artifact_uri == run_url + "/export" and mv.tags["azureml:asset_id"] == "azureml:bccd-detector:1"
    approved = service.approve("bccd-detector", mv.version, by="bob", comment="ok")
    assert approved.status == ApprovalStatus.APPROVED
    assert client.models.get("bccd-detector", "1").tags["approval_status"] == "Approved"
    assert [v.version for v in registry.list_versions("bccd-detector")] == ["1"]

    # the deployment references the asset and pins the digest; a changed blob is refused first
    d = deploy_mod.deploy("bccd-detector", "1", AzureMLTarget(), "bccd-prod", dry_run=True, registry=registry)
    assert "model: azureml:bccd-detector:1" in d.details["specs"]["deployment"]
    assert mv.tags["artifact.sha256"] in d.details["specs"]["deployment"]
    storage.write_bytes(run_url + "/export/parity.json", b"{}")

    class NoClient(AzureMLTarget):
        def ml_client(self):
            raise AssertionError("nothing may be created for a tampered artifact")

    with pytest.raises(ArtifactIntegrityError, match="changed: parity.json"):
        deploy_mod.deploy("bccd-detector", "1", NoClient(), "bccd-prod", registry=registry)
