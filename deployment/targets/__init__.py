"""Deploy targets: ``get_target("local" | "azureml" | "sagemaker")``, imported lazily.

Approval is checked once above the targets, in :mod:`deployment.deploy`.
"""

from __future__ import annotations

import importlib
from typing import Any

from deployment.targets.base import Deployment, DeployTarget
from training.errors import unknown_name_error

#: Target name -> "module:Class" (cloud SDKs load only when their target is asked for).
TARGETS: dict[str, str] = {
    "local": "deployment.targets.local:LocalTarget",
    "azureml": "deployment.targets.azureml:AzureMLTarget",
    "sagemaker": "deployment.targets.sagemaker:SageMakerTarget",
}


def get_target(kind: str, **kwargs: Any) -> DeployTarget:
    """Instantiate the deploy target ``kind``; :class:`training.errors.NotFoundError` listing the
    known targets when the name is unknown. ``kwargs`` go to the target's constructor."""
    if kind not in TARGETS:
        raise unknown_name_error("deploy target", kind, list(TARGETS))
    module_name, _, cls_name = TARGETS[kind].partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(**kwargs)


__all__ = ["TARGETS", "DeployTarget", "Deployment", "get_target"]
