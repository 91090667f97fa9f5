"""Model registries: one interface (:mod:`deployment.registry.base`), one adapter per backend.

``get_registry("mlflow")`` returns the MLflow registry (local SQLite by default, or any MLflow
tracking URI such as Azure ML's); ``get_registry("sagemaker")`` the SageMaker Model Registry adapter.
The approval rules live once in :mod:`deployment.registry.approval`, above every adapter.
"""

from __future__ import annotations

from typing import Any

from deployment.registry.base import ApprovalStatus, AuditEntry, ModelRegistry, ModelVersion
from training.catalog import Catalog

#: Registry kind -> "module:Class", imported lazily (cloud SDKs load only when asked for).
REGISTRIES: Catalog[str] = Catalog(
    "registry",
    {
        "mlflow": "deployment.registry.mlflow:MlflowRegistry",
        "sagemaker": "deployment.registry.sagemaker:SageMakerRegistry",
        "azureml": "deployment.registry.azureml:AzureMLRegistry",
    },
)


def get_registry(kind: str | None = None, **kwargs: Any) -> ModelRegistry:
    """Instantiate the registry ``kind`` (default ``$DETOPS_REGISTRY``, else ``"mlflow"``).

    ``kwargs`` go to the adapter's constructor (e.g. ``tracking_uri=`` for MLflow).
    Raises :class:`training.errors.NotFoundError` (listing the known kinds) for an unknown name.
    """
    if not kind:
        from training.settings import CommonSettings

        kind = CommonSettings.load().registry
    return REGISTRIES.load(kind, **kwargs)


__all__ = ["REGISTRIES", "ApprovalStatus", "AuditEntry", "ModelRegistry", "ModelVersion", "get_registry"]
