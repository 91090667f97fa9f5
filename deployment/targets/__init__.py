"""Deploy targets: ``get_target("local" | "azureml" | "sagemaker")``, imported lazily.

Approval is checked once above the targets, in :mod:`deployment.deploy`.
"""

from __future__ import annotations

from typing import Any

from deployment.targets.base import Deployment, DeployTarget
from training.catalog import Catalog

#: Target name -> "module:Class" (cloud SDKs load only when their target is asked for).
TARGETS: Catalog[str] = Catalog(
    "deploy target",
    {
        "local": "deployment.targets.local:LocalTarget",
        "azureml": "deployment.targets.azureml:AzureMLTarget",
        "sagemaker": "deployment.targets.sagemaker:SageMakerTarget",
    },
)


def get_target(kind: str, **kwargs: Any) -> DeployTarget:
    """Instantiate the deploy target ``kind``; :class:`training.errors.NotFoundError` listing the
    known targets when the name is unknown. ``kwargs`` go to the target's constructor."""
    return TARGETS.load(kind, **kwargs)


__all__ = ["TARGETS", "DeployTarget", "Deployment", "get_target"]
