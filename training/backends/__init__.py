"""Where a run executes: ``local``, ``azureml``, ``sagemaker`` -- one interface, thin adapters.

``get_backend(name)`` returns a :class:`~training.backends.base.Backend`; an unknown name raises
:class:`training.errors.NotFoundError` listing the known ones. Cloud SDKs are imported only inside
the adapter that needs them, never at module top of :mod:`training`.
"""

from __future__ import annotations

from typing import Any

from training.backends.base import Backend, Submission, SubmitOptions
from training.catalog import Catalog

#: Backend name -> "module:Class" (imported lazily).
BACKENDS: Catalog[str] = Catalog(
    "backend",
    {
        "local": "training.backends.local:LocalBackend",
        "azureml": "training.backends.azureml:AzureMLBackend",
        "sagemaker": "training.backends.sagemaker:SageMakerBackend",
    },
)


def get_backend(name: str, **kwargs: Any) -> Backend:
    """Instantiate the backend ``name`` (``kwargs`` go to its constructor).

    Raises:
        NotFoundError: unknown name (with a near-match suggestion and the known names).
    """
    return BACKENDS.load(name, **kwargs)


__all__ = ["BACKENDS", "Backend", "Submission", "SubmitOptions", "get_backend"]
