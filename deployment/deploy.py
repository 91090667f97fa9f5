"""Deploy and roll back model versions: the "only Approved versions deploy" rule, once, above every target.

Every path that puts a model behind an endpoint (``detops deploy``, ``detops rollback``, CI release
jobs) goes through :func:`deploy` or :func:`rollback`, which ask the approval service for an
Approved version before calling the target.
"""

from __future__ import annotations

from typing import Any

from deployment.registry import get_registry
from deployment.registry.approval import ApprovalService
from deployment.registry.base import ModelRegistry
from deployment.targets import get_target
from deployment.targets.base import Deployment, DeployTarget
from training.errors import GateError, NotFoundError


def deploy(
    name: str,
    version: str,
    target: str | DeployTarget,
    endpoint: str | None = None,
    *,
    dry_run: bool = False,
    registry: ModelRegistry | None = None,
    **target_kwargs: Any,
) -> Deployment:
    """Deploy model ``name`` version ``version`` to ``target`` if, and only if, it is Approved.

    Raises:
        GateError: the version is PendingManualApproval or Rejected (exit code 4).
        NotFoundError: no such version, or an unknown target name.
    """
    service = ApprovalService(registry or get_registry())
    mv = service.require_approved(name, str(version))
    t = get_target(target, **target_kwargs) if isinstance(target, str) else target
    return t.deploy(mv, endpoint, dry_run=dry_run)


def rollback(
    target: str | DeployTarget,
    name: str,
    endpoint: str | None = None,
    *,
    registry: ModelRegistry | None = None,
    **target_kwargs: Any,
) -> Deployment:
    """Redeploy the newest Approved version of ``name`` older than the one running at ``endpoint``.

    Raises:
        NotFoundError: nothing of ``name`` is deployed at ``endpoint``.
        GateError: there is no earlier Approved version to go back to.
    """
    service = ApprovalService(registry or get_registry())
    t = get_target(target, **target_kwargs) if isinstance(target, str) else target
    current = t.describe(endpoint)
    if current is None or current.model_name != name:
        raise NotFoundError(f"model {name!r} is not deployed at {t.name} endpoint {endpoint or '(default)'}")
    previous = service.previous_approved(name, current.model_version)
    if previous is None:
        raise GateError(f"no Approved version of {name!r} older than version {current.model_version} to roll back to")
    mv = service.require_approved(name, previous.version)
    return t.rollback(mv, endpoint)
