"""Where a run executes: ``local``, ``azureml``, ``sagemaker`` -- one interface, thin adapters.

``get_backend(name)`` returns a :class:`~training.backends.base.Backend`; an unknown name raises
:class:`training.errors.NotFoundError` listing the known ones. Cloud SDKs are imported only inside
the adapter that needs them, never at module top of :mod:`training`.
"""

from __future__ import annotations

import importlib
from typing import Any

from training.backends.base import Backend, Submission
from training.errors import unknown_name_error

#: Backend name -> "module:Class" (imported lazily).
BACKENDS: dict[str, str] = {
    "local": "training.backends.local:LocalBackend",
    "azureml": "training.backends.azureml:AzureMLBackend",
    "sagemaker": "training.backends.sagemaker:SageMakerBackend",
}


def get_backend(name: str, **kwargs: Any) -> Backend:
    """Instantiate the backend ``name`` (``kwargs`` go to its constructor).

    Raises:
        NotFoundError: unknown name (with a near-match suggestion and the known names).
    """
    if name not in BACKENDS:
        raise unknown_name_error("backend", name, list(BACKENDS))
    module_name, _, cls_name = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module_name), cls_name)(**kwargs)


__all__ = ["BACKENDS", "Backend", "Submission", "get_backend"]
