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
``sagemaker`` -> ``aws``, ``azureml`` -> ``azure``, ``mlflow`` -> ``os``. A cloud registry
(:data:`CLOUD_REGISTRIES`) accepts only its own cloud's authenticated principal: ``declared`` (free
text) and ``os`` (``$USER``, which any process sets) would let whoever runs the command name the
approver, so :func:`identity_source` refuses them there. Four-eyes compares the principal ids
(:mod:`deployment.registry.approval`), never display names; on AWS it also needs the approver to be a
person's IAM Identity Center session (:func:`aws_person`).
"""

from __future__ import annotations

import getpass
import re
import socket
from typing import Any

from training.cloud import Principal as Principal  # one definition (the cloud layer's), re-exported
from training.errors import ConfigError

SOURCES = ("auto", "aws", "azure", "os", "declared")
_AUTO = {"sagemaker": "aws", "azureml": "azure", "mlflow": "os"}
#: Registry kind -> the only identity source it accepts (its cloud's authenticated principal).
CLOUD_REGISTRIES = {"sagemaker": "aws", "azureml": "azure"}

#: IAM Identity Center's permission-set roles: ``AWSReservedSSO_<permission set>_<16 hex>`` (path
#: ``/aws-reserved/sso.amazonaws.com/``), created and trusted by Identity Center alone (only its SAML
#: provider may assume them); a session of one is a person signed in through Identity Center, and
#: Identity Center sets the session name to the user's name (commonly the e-mail address), which is
#: how CloudTrail and ``GetCallerIdentity`` name the person:
#: ``arn:aws:sts::<account>:assumed-role/AWSReservedSSO_<set>_<hash>/alice@example.com``.
SSO_ROLE_PREFIX = "AWSReservedSSO_"
_ASSUMED_ROLE = re.compile(r"^arn:aws[a-z-]*:sts::\d{12}:assumed-role/([^/]+)/([^/]+)$")


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


def aws_person(p: Principal) -> str | None:
    """The person behind AWS principal ``p`` (an STS caller: ``name`` is the ARN), or None for any other session.

    A person is an IAM Identity Center session: ``arn:aws:sts::<account>:assumed-role/AWSReservedSSO_<set>_<hash>/<user>``
    (UserId ``AROA...:<user>``); the person is ``<user>``, which Identity Center sets and the user cannot choose.
    Every other principal -- a CI role's session (GitHub OIDC sessions such as ``GitHubActions``, the stack's
    trainer/registrar/approver/deployer roles, whatever session name the caller chose), an IAM user's
    long-lived keys, the account root -- is None: its session name is chosen by whoever assumed the role.
    """
    if p.source != "aws":
        return None
    m = _ASSUMED_ROLE.match(p.name or "")
    if not m or not m.group(1).startswith(SSO_ROLE_PREFIX):
        return None
    role_id, _, session = (p.id or "").partition(":")
    if session != m.group(2) or not role_id.startswith("AROA"):  # UserId of that session: AROA<role id>:<session>
        return None
    return session


def person_names(person: str) -> set[str]:
    """The names one person goes by, for comparing people across systems: ``person`` lower-cased, and for an
    e-mail address also its local part (``Alice@Example.com`` -> ``{"alice@example.com", "alice"}``), so that
    an Identity Center user ``alice@example.com`` and the GitHub login ``alice`` are taken for one person."""
    value = (person or "").strip().lower()
    if not value:
        return set()
    return {value, value.split("@", 1)[0]}


def os_principal() -> Principal:
    """The operating-system user on this host (``user@host``)."""
    user = getpass.getuser()
    return Principal(f"{user}@{socket.gethostname()}", user, "os")


def identity_source(registry_kind: str | None = None) -> str:
    """``$DETOPS_IDENTITY`` resolved: ``auto`` (the default) follows the registry kind (``registry_kind``, else
    ``$DETOPS_REGISTRY``).

    Raises:
        ConfigError: an unknown source, or a cloud registry (:data:`CLOUD_REGISTRIES`) with any source but its
            cloud's (``declared`` or ``os`` with ``sagemaker`` / ``azureml``): one line naming the setting and
            the registry; the CLI exits with ConfigError's code (2).
    """
    from training.settings import CommonSettings

    common = CommonSettings.load()
    source = (common.identity or "auto").strip().lower()
    if source not in SOURCES:
        raise ConfigError(f"DETOPS_IDENTITY={source!r}: use one of {', '.join(SOURCES)}")
    kind = registry_kind or common.registry
    if source == "auto":
        source = _AUTO.get(kind, "os")
    cloud = CLOUD_REGISTRIES.get(kind)
    if cloud and source != cloud:
        raise ConfigError(
            f"DETOPS_IDENTITY={source} is refused with the {kind} registry: who registers and approves there is "
            f"the authenticated {cloud} principal (unset DETOPS_IDENTITY or set it to {cloud})"
        )
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
