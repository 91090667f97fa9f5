"""AWS access: one boto3 session and client factory, the caller, listing, waiting, and error mapping.

Credentials come from boto3's own chain (OIDC web identity in CI, an instance or task role, SSO;
never keys in files). Every client of the project is made by :func:`client`, so the region, the
endpoint override (``AWS_ENDPOINT_URL``: a moto server in tests), the retry mode and the user agent
are the same everywhere. boto3 is imported inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from training.cloud import Principal
from training.errors import AWS_DENIED, AccessDeniedError, BackendError, DetopsError, NotFoundError
from training.settings import AwsSettings

#: botocore retry mode of every client: ``standard`` retries throttling and transient errors
#: (``ThrottlingException``, 5xx, connection errors) with exponential backoff, never an AccessDenied
#: (botocore's "Retries" guide). Five attempts in all, the first included.
RETRIES = {"mode": "standard", "total_max_attempts": 5}

#: AWS error codes that mean "authenticated, but not allowed".

#: How SageMaker says "no such resource" in a ValidationException (``DescribeEndpoint``: 'Could not find
#: endpoint "x".'; ``DescribeModelPackage``: '... does not exist.'; others '... not found').
_NOT_FOUND = ("not found", "does not exist", "could not find")
_AWS_PRINCIPAL = re.compile(r"User: (\S+) is not authorized to perform: (\S+)")


def user_agent() -> str:
    """``detops/<version>``: appended to every request's User-Agent (CloudTrail's ``userAgent`` shows it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"detops/{version('detops')}"
    except PackageNotFoundError:
        return "detops"


def boto3_session(settings: AwsSettings | None = None, *, what: str = "call AWS"):
    """The one ``boto3.Session`` factory: region from AWS_REGION / AWS_DEFAULT_REGION; credentials from
    boto3's chain (OIDC web identity in CI, an instance or task role; never keys in files).

    Raises:
        ConfigError: no region set (names AWS_REGION and where it comes from).
    """
    settings = settings or AwsSettings.load()
    settings.require("region", what=what)
    import boto3

    return boto3.Session(region_name=settings.region)


def client(service: str, settings: AwsSettings | None = None):
    """A boto3 client of ``service`` (``"sagemaker"``, ``"sts"``, ``"service-quotas"`` ...) from
    :func:`boto3_session`, with ``AWS_ENDPOINT_URL`` honoured, :data:`RETRIES` and :func:`user_agent`.

    Raises:
        ConfigError: no region set.
    """
    from botocore.config import Config

    settings = settings or AwsSettings.load()
    session = boto3_session(settings, what=f"use {service}")
    kw: dict[str, Any] = {"endpoint_url": settings.endpoint_url} if settings.endpoint_url else {}
    return session.client(service, config=Config(retries=RETRIES, user_agent_extra=user_agent()), **kw)


def caller_principal(sts_client: Any = None) -> Principal:
    """The AWS caller (STS ``GetCallerIdentity``): id = ``UserId`` (``AROA...:<session>`` for an
    assumed role, ``AIDA...`` for an IAM user), name = the ARN, source ``aws``.

    Raises:
        BackendError: STS fails (no credentials, no network).
    """
    from botocore.exceptions import BotoCoreError, ClientError

    sts_client = sts_client or client("sts")
    try:
        who = sts_client.get_caller_identity()
    except (ClientError, BotoCoreError) as e:
        raise BackendError(f"cannot tell who is calling AWS (sts:GetCallerIdentity): {e}") from e
    return Principal(str(who["UserId"]), str(who["Arn"]), "aws")


def aws_error(e: Any, what: str, service: str = "sagemaker") -> DetopsError:
    """Translate a botocore ``ClientError`` of the call described by ``what`` into a DetopsError.

    ``AccessDenied``-like codes (or HTTP 403) become :class:`AccessDeniedError` naming the principal
    and the action from AWS's message (``User: <arn> is not authorized to perform: <action>``);
    a "not found" ``ValidationException`` / ``ResourceNotFound`` becomes :class:`NotFoundError`;
    anything else :class:`BackendError` with the code and the first line of the message.
    """
    err = getattr(e, "response", {}).get("Error", {})
    code = str(err.get("Code", ""))
    msg = str(err.get("Message", e)).splitlines()[0] if str(err.get("Message", e)) else str(code)
    op = getattr(e, "operation_name", "") or ""
    if code in AWS_DENIED or getattr(e, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode") == 403:
        m = _AWS_PRINCIPAL.search(msg)
        principal, action = (m.group(1), m.group(2)) if m else ("the caller", f"{service}:{op}" if op else what)
        return AccessDeniedError(f"access denied: {principal} may not {action} ({what})")
    if code in ("ValidationException", "ResourceNotFound") and any(s in msg.lower() for s in _NOT_FOUND):
        return NotFoundError(f"{what}: {msg}")
    return BackendError(f"{service} {what}: {code} {msg}".strip())


def call(what: str, fn: Any, *, service: str = "sagemaker", **kwargs: Any) -> Any:
    """``fn(**kwargs)`` with botocore's errors mapped: :func:`aws_error` for a ``ClientError``,
    :class:`BackendError` for a ``BotoCoreError`` (no credentials, connection, parameter validation)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(**kwargs)
    except ClientError as e:
        raise aws_error(e, what, service) from e
    except BotoCoreError as e:
        raise BackendError(f"{service} {what}: {e}") from e


def paginate(aws_client: Any, operation: str, key: str, *, what: str, service: str = "sagemaker",
             **kwargs: Any) -> Iterator[Any]:
    """Every item of list ``key`` over all pages of ``operation`` (boto3's paginator; botocore's
    ``paginators-1.json`` says which token each operation pages by). Errors as in :func:`call`."""
    iterator = iter(aws_client.get_paginator(operation).paginate(**kwargs))
    while (page := call(what, lambda: next(iterator, None), service=service)) is not None:
        yield from page.get(key, [])


def wait(aws_client: Any, waiter: str, *, what: str, delay_s: int = 30, max_attempts: int = 60,
         **kwargs: Any) -> None:
    """Block on boto3's waiter ``waiter`` (e.g. ``"endpoint_in_service"``), polling every
    ``delay_s`` seconds at most ``max_attempts`` times (so at most ``delay_s * max_attempts`` s).

    Raises:
        BackendError: the waiter gave up or saw a failure state; the message has ``what``, the
            waiter's reason and the resource's ``FailureReason`` when the last answer has one.
    """
    from botocore.exceptions import WaiterError

    try:
        aws_client.get_waiter(waiter).wait(WaiterConfig={"Delay": delay_s, "MaxAttempts": max_attempts}, **kwargs)
    except WaiterError as e:
        last = e.last_response or {}
        reason = last.get("FailureReason") or (last.get("Error") or {}).get("Message") or ""
        raise BackendError(f"{what}: {e.kwargs.get('reason', e)}{': ' + reason if reason else ''}") from e
