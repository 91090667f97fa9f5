"""The deploy-target interface: where an Approved model version runs (local, Azure ML, SageMaker).

Targets only deploy; they do not check approval. The rule "only Approved versions deploy" is
enforced once, above every target, in :mod:`deployment.deploy`.
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from typing import Any

from deployment.registry.base import ModelVersion


@dataclass
class Deployment:
    """A model version running (or planned, with ``dry_run``) behind an endpoint.

    ``status`` is ``"planned"`` (dry run), ``"running"``, ``"stopped"`` or a target's own state
    (``"Creating"``, ``"InService"`` ...); ``url`` is the scoring base URL when known; ``details``
    holds target-specific facts (process id, endpoint config name, rendered specs of a dry run).
    """

    target: str
    endpoint: str
    model_name: str
    model_version: str
    status: str
    url: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def container_env(version: ModelVersion, runtime: str = "savedmodel") -> dict[str, str]:
    """The model environment every target gives the serving container (deployment/serving/settings.py):
    ``DETOPS_MODEL_NAME``, ``DETOPS_MODEL_VERSION``, ``DETOPS_MODEL_SHA256`` (the registered artifact
    digest, verified at load) and ``DETOPS_RUNTIME`` (``savedmodel``, ``tflite-float`` or ``tflite-int8``)."""
    return {
        "DETOPS_MODEL_NAME": version.name,
        "DETOPS_MODEL_VERSION": str(version.version),
        "DETOPS_MODEL_SHA256": version.tags.get("artifact.sha256", ""),
        "DETOPS_RUNTIME": runtime,
    }


class DeployTarget(abc.ABC):
    """One place a model version can be deployed to."""

    #: Short name used on the command line (``--target``).
    name: str = ""
    #: The serving runtime the deployment spec sets (``DETOPS_RUNTIME``); :func:`deployment.deploy.deploy`
    #: sets it after checking the version's parity verdict for a TFLite runtime.
    runtime: str = "savedmodel"

    @abc.abstractmethod
    def deploy(self, version: ModelVersion, endpoint: str | None = None, *, dry_run: bool = False,
               previous: dict[str, Any] | None = None) -> Deployment:
        """Deploy ``version`` (already checked to be Approved, its artifact verified) to ``endpoint``.

        ``previous`` (``{"model_name", "model_version", ...}`` or None) is what was live before; the
        target stores it with the new deployment *before* it switches traffic, and :meth:`describe`
        returns it in ``details["previous"]`` (exact rollback, :func:`deployment.deploy.rollback`).
        The container gets ``DETOPS_MODEL_SHA256`` (the registered artifact digest) so that it
        verifies the files it loads. With ``dry_run`` nothing is created; the returned
        :class:`Deployment` (status ``planned``) describes what would be.
        """

    @abc.abstractmethod
    def describe(self, endpoint: str | None = None) -> Deployment | None:
        """What runs at ``endpoint`` now (name, version, ``details["previous"]``), or None when
        nothing is deployed there."""

    def rollback(self, version: ModelVersion, endpoint: str | None = None,
                 previous: dict[str, Any] | None = None) -> Deployment:
        """Put ``version`` (the one recorded as live before, chosen by :func:`deployment.deploy.rollback`)
        back on ``endpoint``; ``previous`` is that record (with its own ``previous``, kept as the new
        record). Default: deploy it again; targets that keep the old deployment (Azure ML colours,
        SageMaker endpoint configs) switch back to it."""
        return self.deploy(version, endpoint, previous=(previous or {}).get("previous"))
