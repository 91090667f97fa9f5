"""Run URLs open everywhere (issue 10, item 4): what ``submit --backend azureml`` returns,
``azureml://datastores/<name>/paths/...``, is opened by the next CI steps (gate, register, Run.open)
as the datastore's ``az://<container>@<account>...`` location -- here against Azurite."""

from __future__ import annotations

import secrets

import pytest

from training import storage
from training.cloud import azure as aml
from training.errors import ConfigError

pytestmark = pytest.mark.integration


@pytest.fixture
def datastore(azure_env, monkeypatch):
    """A fresh Azurite container standing in for the workspace's default datastore."""
    from azure.storage.blob import BlobServiceClient

    container = f"azureml-blobstore-{secrets.token_hex(4)}"
    BlobServiceClient.from_connection_string(azure_env).create_container(container)
    monkeypatch.setenv("DETOPS_AML_DATASTORE", "workspaceblobstore")
    monkeypatch.setenv("DETOPS_AML_DATASTORE_CONTAINER", container)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "devstoreaccount1")
    monkeypatch.setattr(aml, "_LOCATIONS", {})
    return container


def _published_run(tmp_path, container, test_ap=0.3, name="20261201T120000-abc123") -> str:
    from deployment.testing import make_fake_run

    stub = tmp_path / "stub" / "saved_model"
    stub.mkdir(parents=True)
    (stub / "saved_model.pb").write_bytes(b"")
    local = make_fake_run(tmp_path / "local run" / name, saved_model_src=str(stub), test_ap=test_ap)
    storage.publish_run(local, f"az://{container}/bccd/runs/{name}")
    return f"azureml://datastores/workspaceblobstore/paths/bccd/runs/{name}/"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("azureml://datastores/workspaceblobstore/paths/bccd/runs/x/", "az://C@devstoreaccount1.blob.core.windows.net/bccd/runs/x/"),
        ("azureml://subscriptions/s/resourcegroups/rg/workspaces/ws/datastores/workspaceblobstore/paths/a b/run.json",
         "az://C@devstoreaccount1.blob.core.windows.net/a b/run.json"),
        ("az://other/x", "az://other/x"),
        ("/local/path", "/local/path"),
    ],
)
def test_resolve_offline_from_settings(monkeypatch, url, expected):
    monkeypatch.setattr(aml, "_LOCATIONS", {})
    monkeypatch.setenv("DETOPS_AML_DATASTORE", "workspaceblobstore")
    monkeypatch.setenv("DETOPS_AML_DATASTORE_CONTAINER", "C")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "devstoreaccount1")
    assert aml.resolve_datastore_url(url) == expected


def test_resolve_asks_the_workspace_for_another_datastore(monkeypatch):
    from azure.ai.ml.entities import AzureBlobDatastore

    monkeypatch.setattr(aml, "_LOCATIONS", {})
    asked = []

    class Datastores:
        def get(self, name):
            asked.append(name)
            return AzureBlobDatastore(name=name, account_name="acct9", container_name="runs-9")

    client = type("C", (), {"datastores": Datastores()})()
    url = "azureml://datastores/runs/paths/p/q"
    assert aml.resolve_datastore_url(url, client) == "az://runs-9@acct9.blob.core.windows.net/p/q"
    assert aml.resolve_datastore_url(url, client) == "az://runs-9@acct9.blob.core.windows.net/p/q"
    assert asked == ["runs"]  # once per process


def test_unresolvable_datastore_names_the_settings(monkeypatch):
    monkeypatch.setattr(aml, "_LOCATIONS", {})
    for var in ("AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZUREML_WORKSPACE", "AZURE_STORAGE_ACCOUNT_NAME"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match="AZURE_STORAGE_ACCOUNT_NAME and DETOPS_AML_DATASTORE_CONTAINER") as e:
        storage.exists("azureml://datastores/workspaceblobstore/paths/x")
    assert "AZUREML_WORKSPACE" in str(e.value)


def test_non_datastore_azureml_url_is_refused():
    with pytest.raises(ConfigError, match="only azureml://datastores"):
        aml.resolve_datastore_url("azureml://jobs/abc/outputs/run")


def test_submit_result_opens_in_gate_register_and_run_open(datastore, tmp_path, monkeypatch):
    from deployment.registry.approval import ApprovalService
    from deployment.registry.mlflow import MlflowRegistry
    from training.pipeline import Run

    monkeypatch.setenv("DETOPS_HOME", str(tmp_path / "home"))
    url = _published_run(tmp_path, datastore)
    assert storage.read_json(storage.join(url, "run.json"))["status"] == "complete"
    assert Run.open(url).manifest["status"] == "complete"
    service = ApprovalService(MlflowRegistry(tracking_uri=f"sqlite:///{(tmp_path / 'm.db').as_posix()}"))
    assert service.gate(url, "bccd").passed
    mv = service.register(url, "bccd", "ci-registration")
    assert mv.tags["run_url"] == url  # lineage keeps the URL submit returned
    assert storage.exists(mv.artifact_uri)


def test_without_resolution_the_url_is_not_openable(datastore, monkeypatch):
    """The crossing this fixes: plain fsspec does not know azureml://."""
    from fsspec.core import url_to_fs

    with pytest.raises(ValueError, match="Protocol not known: azureml"):
        url_to_fs("azureml://datastores/workspaceblobstore/paths/bccd/runs/x/run.json")
