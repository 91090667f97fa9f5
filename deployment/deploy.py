"""Deploy and roll back model versions: the "only Approved, unchanged artifacts deploy" rule, once,
above every target.

Every path that puts a model behind an endpoint (``detops deploy``, ``detops rollback``, CI release
jobs) goes through :func:`deploy` or :func:`rollback`, which ask the approval service for an
Approved version and verify its artifact against the manifest recorded at registration
(:mod:`deployment.registry.artifact`) before calling the target.

Exact rollback. Before it switches traffic, a deploy records on the endpoint which version was live
(``previous``: the target stores it with the new deployment -- local state file, SageMaker endpoint
config tags, Azure ML deployment tags). :func:`rollback` goes back to exactly that version, never
to "the newest Approved version older than the current one" (which could be a version approved but
never released). With ``if_serving`` (the version a release tried to ship) a rollback changes nothing
unless the endpoint really serves that version: a deploy that was refused or failed before the
traffic switch leaves the endpoint as it was, and it is not downgraded.
"""

from __future__ import annotations

from typing import Any

from deployment.registry import artifact, get_registry
from deployment.registry.approval import ApprovalService
from deployment.registry.base import ModelRegistry, ModelVersion
from deployment.targets import get_target
from deployment.targets.base import Deployment, DeployTarget
from training.errors import ConfigError, GateError, NotFoundError

#: How many older "live before" records a deployment keeps (for repeated rollbacks).
MAX_CHAIN = 4


def verify_version_artifact(mv: ModelVersion) -> str:
    """Check the artifact of ``mv`` (its ``artifact_uri``) against the manifest stored at registration.

    Returns the artifact digest. Raises :class:`artifact.ArtifactIntegrityError` (exit 4) naming the
    changed, missing or added file, or when the version carries no manifest.
    """
    manifest = artifact.stored_manifest(mv.tags)
    if manifest is None:
        raise artifact.ArtifactIntegrityError(
            f"model {mv.name!r} version {mv.version} has no artifact manifest ({artifact.MANIFEST_TAG}); "
            "register the run again so that what deploys can be checked against what was approved"
        )
    return artifact.verify_artifact(mv.artifact_uri, manifest, what=f"model {mv.name!r} version {mv.version}")


def _previous_of(live: Deployment | None, mv: ModelVersion) -> dict[str, Any] | None:
    """What to record as "live before" for a deploy of ``mv`` over ``live``."""
    if live is None or not live.model_version:
        return None
    if live.model_name == mv.name and live.model_version == str(mv.version):
        return live.details.get("previous")  # a redeploy of the live version keeps its own record
    record: dict[str, Any] = {"model_name": live.model_name, "model_version": live.model_version,
                              **{k: v for k, v in live.details.items() if k in ("endpoint_config", "color")}}
    chain, depth, node = live.details.get("previous"), 0, record
    while isinstance(chain, dict) and depth < MAX_CHAIN:  # older records, for repeated rollbacks
        node["previous"] = {k: v for k, v in chain.items() if k != "previous"}
        node, chain, depth = node["previous"], chain.get("previous"), depth + 1
    return record


def deploy(
    name: str,
    version: str,
    target: str | DeployTarget,
    endpoint: str | None = None,
    *,
    dry_run: bool = False,
    registry: ModelRegistry | None = None,
    runtime: str = "savedmodel",
    **target_kwargs: Any,
) -> Deployment:
    """Deploy model ``name`` version ``version`` to ``target`` if, and only if, it is Approved and
    its artifact is unchanged since registration.

    ``runtime`` (``savedmodel``, ``tflite-float``, ``tflite-int8``) is what the deployment spec tells
    the serving container to run (``DETOPS_RUNTIME``); a TFLite runtime is refused before anything is
    created unless the version's ``export/parity.json`` says that variant passed its parity check.

    The version live at ``endpoint`` before the switch is recorded with the new deployment and
    returned in ``details["previous"]`` (None on a first deploy).

    Raises:
        GateError: the version is PendingManualApproval or Rejected (exit code 4).
        ArtifactIntegrityError: a file of the artifact differs from the registered manifest (exit 4).
        NotFoundError: no such version, or an unknown target name.
        ConfigError: an unknown runtime, or a TFLite runtime whose parity failed or was never checked.
    """
    from deployment.serving.runtime import RUNTIMES, check_parity

    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown serving runtime {runtime!r}: use one of {', '.join(RUNTIMES)}")
    service = ApprovalService(registry or get_registry())
    mv = service.require_approved(name, str(version))
    if runtime != "savedmodel":
        check_parity(mv.artifact_uri, runtime)
    t = get_target(target, **target_kwargs) if isinstance(target, str) else target
    t.runtime = runtime
    if dry_run:
        d = t.deploy(mv, endpoint, dry_run=True)
    else:
        verify_version_artifact(mv)
        previous = _previous_of(t.describe(endpoint), mv)
        d = t.deploy(mv, endpoint, previous=previous)
        d.details["previous"] = previous
    d.details["runtime"] = runtime
    return d


def rollback(
    target: str | DeployTarget,
    name: str,
    endpoint: str | None = None,
    *,
    if_serving: str | None = None,
    registry: ModelRegistry | None = None,
    **target_kwargs: Any,
) -> Deployment:
    """Put back on ``endpoint`` exactly the version that was live before the current one.

    ``if_serving``: the version the failed release tried to ship. When the endpoint does not serve
    it (the deploy was refused, or failed before switching traffic) nothing is changed and the
    returned deployment has ``details["rollback"] == "none"``.

    Raises:
        NotFoundError: nothing of ``name`` is deployed at ``endpoint`` (without ``if_serving``).
        GateError: no previous version is recorded, or it is no longer Approved.
    """
    service = ApprovalService(registry or get_registry())
    t = get_target(target, **target_kwargs) if isinstance(target, str) else target
    current = t.describe(endpoint)
    serving = current.model_version if current is not None and current.model_name == name else None
    if if_serving is not None and serving != str(if_serving):
        what = f"version {serving}" if serving else "no version of this model"
        reason = (f"endpoint serves {what}, not {if_serving}: the release never switched traffic, "
                  "so there is nothing to roll back")
        if current is not None:
            current.details.update({"rollback": "none", "reason": reason})
            return current
        return Deployment(t.name, endpoint or "", name, "", "absent", details={"rollback": "none", "reason": reason})
    if current is None or serving is None:
        raise NotFoundError(f"model {name!r} is not deployed at {t.name} endpoint {endpoint or '(default)'}")
    previous = current.details.get("previous")
    if not previous or not previous.get("model_version"):
        raise GateError(
            f"no version was recorded as live before {name!r} version {serving} on {t.name} endpoint "
            f"{endpoint or '(default)'}; nothing to roll back to"
        )
    mv = service.require_approved(previous.get("model_name") or name, str(previous["model_version"]))
    verify_version_artifact(mv)
    d = t.rollback(mv, endpoint, previous=previous)
    d.details.update({"rollback": "exact", "rolled_back_from": serving})
    return d
