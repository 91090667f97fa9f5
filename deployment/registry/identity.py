"""Who is acting: the authenticated principal behind ``register``, ``approve``, ``reject`` and ``promote``.

The registrant and the approver are not typed in; they are the identity the cloud authenticated:

- ``aws``: STS ``GetCallerIdentity`` (:func:`training.cloud.aws.caller_principal`) -- id = ``UserId``
  (``AROA...:session`` for an assumed role, ``AIDA...`` for an IAM user), name = the ARN;
- ``azure``: the access token of the credential (:func:`training.cloud.azure.caller_principal`;
  ``DefaultAzureCredential``: ``az login``, workload identity in CI, managed identity) -- id = the
  ``oid`` claim (Entra object id), name = ``name``, ``upn``, ``app_displayname`` or ``appid``;
- ``os``: the operating-system user on this machine (local MLflow registry);
- ``declared``: the ``--by`` value, trusted as given. Only for a local single-machine setup and
  tests; chosen explicitly with ``DETOPS_IDENTITY=declared``.

``DETOPS_IDENTITY`` (``auto`` by default) picks the source; ``auto`` follows the registry:
``sagemaker`` -> ``aws``, ``azureml`` -> ``azure``, ``mlflow`` -> ``os``. Four-eyes compares the
principal ids (:mod:`deployment.registry.approval`), never display names.
"""

from __future__ import annotations

import getpass
import socket
from typing import Any

from training.cloud import Principal as Principal  # one definition (the cloud layer's), re-exported
from training.errors import ConfigError

SOURCES = ("auto", "aws", "azure", "os", "declared")
_AUTO = {"sagemaker": "aws", "azureml": "azure", "mlflow": "os"}


def as_principal(by: str | Principal) -> Principal:
    """A :class:`Principal` as is; a plain string as a declared identity (id = name = the string)."""
    if isinstance(by, Principal):
        return by
    value = (by or "").strip()
    return Principal(value, value, "declared")


def github_environment_reviewer(approvals: Any, environment: str) -> str:
    """Who approved ``environment``'s gate in a GitHub Actions run: the ``user.login`` of the last
    ``approved`` entry naming that environment.

    ``approvals`` is the JSON of ``GET /repos/{owner}/{repo}/actions/runs/{run_id}/approvals``
    (GitHub REST API, "Get the review history for a workflow run"): a list of
    ``{"state": "approved"|"rejected", "comment": str, "environments": [{"name": str, ...}],
    "user": {"login": str, "id": int, ...}}``, oldest first.

    Raises:
        ConfigError: the document is not that list, or no approval of ``environment`` is in it
            (the job ran without its reviewer: the environment has no required reviewers).
    """
    if not isinstance(approvals, list):
        raise ConfigError("the workflow run's approvals are not a JSON list (GET .../actions/runs/{run_id}/approvals)")
    found = None
    for i, entry in enumerate(approvals):
        if not isinstance(entry, dict):
            raise ConfigError(f"approval #{i} of the workflow run is not an object")
        names = {str(e.get("name")) for e in entry.get("environments") or [] if isinstance(e, dict)}
        login = (entry.get("user") or {}).get("login") if isinstance(entry.get("user"), dict) else None
        if entry.get("state") == "approved" and environment in names and login:
            found = str(login)
    if found is None:
        raise ConfigError(
            f"no reviewer approved the {environment!r} environment in this workflow run: give it required "
            "reviewers (docs/cicd.md), or the job's human gate is missing"
        )
    return found


def os_principal() -> Principal:
    """The operating-system user on this host (``user@host``)."""
    user = getpass.getuser()
    return Principal(f"{user}@{socket.gethostname()}", user, "os")


def identity_source(registry_kind: str | None = None) -> str:
    """``$DETOPS_IDENTITY`` resolved: ``auto`` (the default) follows the registry kind."""
    from training.settings import CommonSettings

    common = CommonSettings.load()
    source = (common.identity or "auto").strip().lower()
    if source not in SOURCES:
        raise ConfigError(f"DETOPS_IDENTITY={source!r}: use one of {', '.join(SOURCES)}")
    if source == "auto":
        kind = registry_kind or common.registry
        source = _AUTO.get(kind, "os")
    return source


def current_principal(
    registry_kind: str | None = None, declared: str | None = None, *, sts_client: Any = None, credential: Any = None
) -> Principal:
    """Who is acting now (module docstring). ``declared`` is the ``--by`` value.

    Raises:
        ConfigError: ``--by`` given while the identity comes from an authenticated source, or
            ``DETOPS_IDENTITY=declared`` without ``--by``.
    """
    source = identity_source(registry_kind)
    declared = (declared or "").strip() or None
    if source == "declared":
        if not declared:
            raise ConfigError("DETOPS_IDENTITY=declared needs --by (who is acting)")
        return Principal(declared, declared, "declared")
    if declared:
        raise ConfigError(
            f"--by is not accepted: the acting identity is the authenticated {source} principal "
            "(set DETOPS_IDENTITY=declared only for a local single-machine setup)"
        )
    if source == "aws":
        from training.cloud import aws

        return aws.caller_principal(sts_client)
    if source == "azure":
        from training.cloud import azure

        return azure.caller_principal(credential)
    return os_principal()
