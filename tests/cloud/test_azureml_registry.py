"""Azure ML registry: model assets (azure-ai-ml ``Model``, custom_model, datastore path) validated by the
SDK, approval status and audit as asset tags, the artifact on Azurite verified; MLflow URI helpers."""

from __future__ import annotations

import json

import pytest

from deployment.registry.azureml import (
    AzureMLRegistry,
    datastore_path,
    https_tracking_uri,
    parse_workspace_uri,
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
    """``MLClient`` of one workspace: its models, and every datastore on ``container`` of ``account``."""

    def __init__(self, container: str, account: str = "devstoreaccount1", workspace: str = "ws") -> None:
        self.models = FakeModels()
        self.workspace_name = workspace
        ds = type("Datastore", (), {"container_name": container, "account_name": account, "endpoint": "core.windows.net"})()
        self.datastores = type("Datastores", (), {"get": staticmethod(lambda name: ds)})()


def create_container(connection_string: str, container: str) -> None:
    """Create ``container`` on Azurite (the server lives for the session: an existing one is kept)."""
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.blob import BlobServiceClient

    try:
        BlobServiceClient.from_connection_string(connection_string).create_container(container)
    except ResourceExistsError:
        pass


def upload_fake_run(tmp_path, connection_string: str, run_url: str) -> str:
    """A fake run (stub SavedModel, manifest) uploaded to ``run_url`` on Azurite (its container created)."""
    from deployment.testing import make_fake_run
    from training import storage

    container = run_url.split("://", 1)[1].split("/", 1)[0]
    create_container(connection_string, container)
    run = tmp_path / container / "run"
    stub = tmp_path / container / "stub" / "saved_model"
    stub.mkdir(parents=True)
    (stub / "saved_model.pb").write_bytes(b"pb")
    make_fake_run(run, saved_model_src=str(stub))
    storage.upload_dir(str(run), run_url)
    return run_url


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
    from deployment import deploy as deploy_mod
    from deployment.registry.approval import ApprovalService
    from deployment.registry.artifact import ArtifactIntegrityError
    from deployment.registry.base import ApprovalStatus
    from deployment.targets.azureml import AzureMLTarget
    from training import storage

    run_url = upload_fake_run(tmp_path, azure_env, "az://runs/bccd/runs/20261122T120000-r1")

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
    # the decision is a record in the approvals container (the approver may not write model assets)
    (record,) = storage.filesystem("az://approvals/ws/bccd-detector/1")[0].ls("approvals/ws/bccd-detector/1")
    assert record.endswith("/0000.json")
    assert storage.read_json("az://" + record)["to"] == "Approved"
    assert client.models.get("bccd-detector", "1").tags["approval_status"] == "PendingManualApproval"
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


def test_an_asset_tag_set_by_a_workspace_writer_does_not_approve(azure_env, tmp_path, monkeypatch):
    """The probe of issue 33: trainer, registrar and deployer may all write model assets (AzureML Data
    Scientist); only the approver may write the approvals container. A forged tag approves nothing, and
    the Azure ML target asks the records again right before it deploys."""
    from deployment.registry.approval import ApprovalService
    from deployment.registry.base import ApprovalStatus
    from deployment.targets.azureml import AzureMLTarget
    from training.errors import GateError

    run_url = upload_fake_run(tmp_path, azure_env, "az://runs/bccd/runs/20261122T120000-r9")
    client = FakeClient("runs")
    registry = AzureMLRegistry(ml_client=client)
    service = ApprovalService(registry)
    mv = service.register(run_url, "bccd-detector", by="ci")
    asset = client.models.get("bccd-detector", mv.version)
    asset.tags = {**asset.tags, "approval_status": "Approved"}  # a workspace writer's forgery
    client.models.create_or_update(asset)
    assert service.get_version("bccd-detector", mv.version).status == ApprovalStatus.PENDING
    monkeypatch.setenv("DETOPS_SERVING_IMAGE", "detopsacr.azurecr.io/detops-serving@sha256:" + "a" * 64)
    with pytest.raises(GateError, match="PendingManualApproval"):
        AzureMLTarget(ml_client=client).deploy(registry.get_version("bccd-detector", mv.version), "bccd-prod")
    monkeypatch.delenv("DETOPS_APPROVALS_URI")
    with pytest.raises(ConfigError, match="DETOPS_APPROVALS_URI"):  # no record store: fail closed
        service.require_approved("bccd-detector", mv.version)


# -- promotion from the dev workspace into the prod workspace ------------------------------------------

DEV_URI = "azureml://subscriptions/0000/resourceGroups/rg-dev/workspaces/mlw-dev"


def test_workspace_uri_forms():
    assert parse_workspace_uri(DEV_URI) == ("0000", "rg-dev", "mlw-dev")
    assert parse_workspace_uri(
        "azureml://subscriptions/0000/resourcegroups/rg-dev/providers/Microsoft.MachineLearningServices/workspaces/mlw-dev/"
    ) == ("0000", "rg-dev", "mlw-dev")
    for bad in ("azureml://datastores/x/paths/y", "https://ml.azure.com/workspaces/mlw-dev", URI):
        with pytest.raises(ConfigError, match="not an Azure ML workspace URI"):
            parse_workspace_uri(bad)
    with pytest.raises(ConfigError, match="not an Azure ML workspace URI"):
        AzureMLRegistry(ml_client=FakeClient("c"), workspace_uri="azureml://workspaces/mlw-dev")


_CONTAINERS = iter(range(10**6))


@pytest.fixture
def dev_and_prod(azure_env, tmp_path, monkeypatch):
    """``(dev registry named by DEV_URI, prod registry, dev client, prod client, registered dev version, dev
    container, prod container)``: each workspace's runs on its own fresh Azurite container."""
    from deployment.registry.approval import ApprovalService

    n = next(_CONTAINERS)
    dev_c, prod_c = f"dev-runs-{n}", f"prod-runs-{n}"
    dev_client, prod_client = FakeClient(dev_c, workspace="mlw-dev"), FakeClient(prod_c, workspace="mlw-prod")
    run_url = upload_fake_run(tmp_path, azure_env, f"az://{dev_c}/bccd/runs/20261122T120000-r1")
    create_container(azure_env, prod_c)
    mv = ApprovalService(AzureMLRegistry(ml_client=dev_client)).register(run_url, "bccd-detector", by="alice")
    dev = AzureMLRegistry(ml_client=dev_client, workspace_uri=DEV_URI)
    # prod reads the dev workspace (its records) through the one MLClient factory, as `detops deploy` in prod does
    monkeypatch.setattr("training.cloud.azure.ml_client", lambda settings=None, cred=None, *, what="": dev_client)
    return dev, AzureMLRegistry(ml_client=prod_client), dev_client, prod_client, mv, dev_c, prod_c


def test_promotion_registers_the_approved_asset_in_prod_with_the_same_digest(dev_and_prod):
    from deployment.deploy import verify_version_artifact
    from deployment.promote import promote
    from deployment.registry import artifact
    from deployment.registry.approval import ApprovalService
    from deployment.registry.base import ApprovalStatus
    from training.errors import GateError

    dev, prod, dev_client, prod_client, mv, dev_c, prod_c = dev_and_prod
    root = f"az://{prod_c}/promoted"
    with pytest.raises(GateError, match="PendingManualApproval"):
        promote(dev, prod, "bccd-detector", mv.version, root, by="release-bot")
    assert prod_client.models.store == {}
    ApprovalService(dev).approve("bccd-detector", mv.version, by="bob", comment="ok")
    src = dev.get_version("bccd-detector", mv.version)
    assert src.artifact_uri == f"az://{dev_c}@devstoreaccount1.blob.core.windows.net/bccd/runs/20261122T120000-r1/export"

    out = promote(dev, prod, "bccd-detector", mv.version, root, by="release-bot")
    digest = mv.tags[artifact.DIGEST_TAG]
    assert out.status == ApprovalStatus.APPROVED and out.tags[artifact.DIGEST_TAG] == digest
    asset = prod_client.models.get("bccd-detector", out.version)
    assert asset.type == "custom_model"
    assert asset.path == f"azureml://datastores/workspaceblobstore/paths/promoted/bccd-detector/v1-{digest[:12]}/"
    # Approved by the dev record of the same digest (the prod deployer may read, not write, approval records)
    assert ApprovalService(prod).get_version("bccd-detector", out.version).status == ApprovalStatus.APPROVED
    assert asset.tags["promoted_from"] == f"AzureMLRegistry:{DEV_URI}#bccd-detector/1"
    assert "azureml:asset_id" not in asset.tags and "azureml:path" not in asset.tags
    assert json.loads(asset.tags["promoted.approvals"])[0]["actor"] == "bob"
    assert [e.action for e in out.audit][-2:] == ["register", "promote"]
    assert out.artifact_uri == f"az://{prod_c}/promoted/bccd-detector/v1-{digest[:12]}"
    assert verify_version_artifact(out) == digest
    # idempotent: nothing is copied or registered twice
    calls = list(prod_client.models.calls)
    again = promote(dev, prod, "bccd-detector", mv.version, root, by="release-bot")
    assert again.version == out.version and prod_client.models.calls == calls
    assert [v.version for v in prod.list_versions("bccd-detector")] == ["1"]
    # the dev version is untouched: still Approved by its record, its asset unchanged by promotion
    assert ApprovalService(dev).get_version("bccd-detector", "1").status == ApprovalStatus.APPROVED
    assert dev_client.models.get("bccd-detector", "1").tags["approval_status"] == "PendingManualApproval"


def test_promotion_refuses_a_tampered_dev_artifact(dev_and_prod):
    from deployment.promote import promote
    from deployment.registry.approval import ApprovalService
    from deployment.registry.artifact import ArtifactIntegrityError
    from training import storage

    dev, prod, _dev_client, prod_client, mv, dev_c, prod_c = dev_and_prod
    ApprovalService(dev).approve("bccd-detector", mv.version, by="bob", comment="ok")
    storage.write_bytes(f"az://{dev_c}/bccd/runs/20261122T120000-r1/export/parity.json", b"{}")
    with pytest.raises(ArtifactIntegrityError, match="changed: parity.json"):
        promote(dev, prod, "bccd-detector", mv.version, f"az://{prod_c}/promoted", by="release-bot")
    assert prod_client.models.store == {}
    assert not storage.exists(f"az://{prod_c}/promoted/bccd-detector")


def test_promote_cli_reads_the_dev_workspace_named_by_the_source_uri(dev_and_prod, monkeypatch, capsys):
    from deployment.registry.approval import ApprovalService
    from deployment.registry.base import ApprovalStatus
    from deployment.registry.identity import Principal
    from detops import cli as cli_mod
    from training.errors import ExitCode

    dev, _prod, dev_client, prod_client, mv, _dev_c, prod_c = dev_and_prod
    ApprovalService(dev).approve("bccd-detector", mv.version, by="bob", comment="ok")
    asked: list[tuple] = []

    def fake_client(settings=None, credential=None, *, what=""):
        asked.append((settings.subscription_id, settings.resource_group, settings.workspace))
        return {"mlw-dev": dev_client, "mlw-prod": prod_client}[settings.workspace]

    monkeypatch.setattr("training.cloud.azure.ml_client", fake_client)
    # the azureml registry takes the token's principal (no Entra here: the deployer's, as its token would give)
    monkeypatch.setattr("training.cloud.azure.caller_principal",
                        lambda credential=None: Principal("oid-deployer", "detops-deployer", "azure"))
    monkeypatch.delenv("DETOPS_IDENTITY", raising=False)
    for k, v in {"AZURE_SUBSCRIPTION_ID": "1111", "AZURE_RESOURCE_GROUP": "rg-prod", "AZUREML_WORKSPACE": "mlw-prod"}.items():
        monkeypatch.setenv(k, v)

    def run(*args: str) -> int:
        try:
            cli_mod.main(["promote", "--registry", "azureml", "--name", "bccd-detector", "--version", "1", *args])
        except SystemExit as e:
            return int(e.code or 0)
        return 0

    assert run("--source-uri", DEV_URI, "--artifact-root", f"az://{prod_c}/promoted", "--print-version") == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "1"
    assert ("0000", "rg-dev", "mlw-dev") in asked and ("1111", "rg-prod", "mlw-prod") in asked
    prod = AzureMLRegistry(ml_client=prod_client)
    assert ApprovalService(prod).get_version("bccd-detector", "1").status == ApprovalStatus.APPROVED
    assert run("--source-uri", "azureml://workspaces/mlw-dev", "--artifact-root", f"az://{prod_c}/promoted") == ExitCode.USAGE
    assert "not an Azure ML workspace URI" in capsys.readouterr().err
