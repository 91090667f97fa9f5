"""The Azure ML workspace model registry through its MLflow endpoint (reuses :class:`MlflowRegistry`).

Azure ML workspaces expose an MLflow tracking/registry server. The approval rules and the tag
layout are the MLflow adapter's (:mod:`deployment.registry.mlflow`); this module only finds the
workspace's URI and authenticates:

- the URI comes from the workspace (``MLClient.workspaces.get(name).mlflow_tracking_uri``,
  ``azureml://<region>.api.azureml.ms/mlflow/v1.0/subscriptions/...``) or ``$MLFLOW_TRACKING_URI``;
- plain MLflow speaks to it over ``https://`` with a bearer token from ``DefaultAzureCredential``
  (managed identity, workload identity / OIDC in CI, ``az login``), passed as
  ``MLFLOW_TRACKING_TOKEN`` for this process only. (The ``azureml-mlflow`` plugin would do the same,
  but it pins ``mlflow-skinny`` 3.9 against the project's mlflow 3.17.)

Inside an Azure ML job ``MLFLOW_TRACKING_URI`` is already set by the platform.
"""

from __future__ import annotations

import os
from typing import Any

from deployment.registry.mlflow import MlflowRegistry
from training.errors import ConfigError

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
    from training.settings import CommonSettings, azure_ml_client

    uri = CommonSettings.load().mlflow_tracking_uri
    if uri:
        return uri
    if ml_client is None:
        ml_client = azure_ml_client(what="find the workspace's MLflow registry (or set MLFLOW_TRACKING_URI)")
    return ml_client.workspaces.get(ml_client.workspace_name).mlflow_tracking_uri


class AzureMLRegistry(MlflowRegistry):
    """:class:`MlflowRegistry` on the Azure ML workspace's MLflow endpoint.

    Args:
        tracking_uri: the workspace MLflow URI (default :func:`workspace_tracking_uri`).
        credential: an ``azure.core.credentials.TokenCredential`` (default ``DefaultAzureCredential``);
            not used when ``MLFLOW_TRACKING_TOKEN`` is already set.
    """

    def __init__(self, tracking_uri: str | None = None, credential: Any = None) -> None:
        uri = https_tracking_uri(tracking_uri or workspace_tracking_uri())
        if uri.startswith("https://") and not os.environ.get("MLFLOW_TRACKING_TOKEN"):
            if credential is None:
                from azure.identity import DefaultAzureCredential

                credential = DefaultAzureCredential()
            os.environ["MLFLOW_TRACKING_TOKEN"] = credential.get_token(TOKEN_SCOPE).token
        super().__init__(tracking_uri=uri)
