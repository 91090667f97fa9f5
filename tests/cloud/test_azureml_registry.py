"""Azure ML registry = the MLflow adapter on the workspace's MLflow endpoint: URI and token handling."""

from __future__ import annotations

import pytest

from deployment.registry.azureml import AzureMLRegistry, https_tracking_uri, workspace_tracking_uri
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


def test_registry_uses_https_and_a_bearer_token(no_cloud_credentials, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "placeholder")  # so teardown restores the original state
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN")
    asked = []

    class Cred:
        def get_token(self, scope):
            asked.append(scope)
            return type("T", (), {"token": "eyJ.test.token"})()

    reg = AzureMLRegistry(tracking_uri=URI, credential=Cred())
    assert reg.tracking_uri.startswith("https://westeurope.api.azureml.ms/mlflow/v1.0/")
    assert asked == ["https://management.azure.com/.default"]
    import os

    assert os.environ["MLFLOW_TRACKING_TOKEN"] == "eyJ.test.token"
