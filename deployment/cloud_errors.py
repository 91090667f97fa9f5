"""Cloud SDK errors -> one-line :class:`training.errors.DetopsError` s (AWS ``ClientError``, Azure ``HttpResponseError``).

An authorization failure becomes :class:`training.errors.AccessDeniedError` naming the action and the
principal, e.g. ``access denied: arn:aws:sts::111122223333:assumed-role/detops-ci/gh may not
sagemaker:UpdateModelPackage (update model package)``, instead of a traceback.
"""

from __future__ import annotations

import re
from typing import Any

from training.errors import AccessDeniedError, BackendError, DetopsError, NotFoundError

#: AWS error codes that mean "authenticated, but not allowed".
AWS_DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError"}

_AWS_PRINCIPAL = re.compile(r"User: (\S+) is not authorized to perform: (\S+)")
_AZURE_PRINCIPAL = re.compile(r"client '([^']+)'(?: with object id '([^']+)')?")
_AZURE_ACTION = re.compile(r"perform action '([^']+)'")


def aws_error(e: Any, what: str, service: str = "sagemaker") -> DetopsError:
    """Translate a botocore ``ClientError`` of the call described by ``what`` into a DetopsError."""
    err = getattr(e, "response", {}).get("Error", {})
    code = str(err.get("Code", ""))
    msg = str(err.get("Message", e)).splitlines()[0] if str(err.get("Message", e)) else str(code)
    op = getattr(e, "operation_name", "") or ""
    if code in AWS_DENIED or getattr(e, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode") == 403:
        m = _AWS_PRINCIPAL.search(msg)
        principal, action = (m.group(1), m.group(2)) if m else ("the caller", f"{service}:{op}" if op else what)
        return AccessDeniedError(f"access denied: {principal} may not {action} ({what})")
    if code in ("ValidationException", "ResourceNotFound") and ("not found" in msg.lower() or "does not exist" in msg.lower()):
        return NotFoundError(f"{what}: {msg}")
    return BackendError(f"{service} {what}: {code} {msg}".strip())


def azure_error(e: Any, what: str) -> DetopsError:
    """Translate an azure-core ``HttpResponseError`` (or any SDK error) of ``what`` into a DetopsError."""
    status = getattr(e, "status_code", None)
    text = str(getattr(e, "message", None) or e)
    first = text.splitlines()[0] if text else type(e).__name__
    if status == 403 or "AuthorizationFailed" in text:
        m = _AZURE_PRINCIPAL.search(text)
        principal = (m.group(2) or m.group(1)) if m else "the caller"
        a = _AZURE_ACTION.search(text)
        action = a.group(1) if a else what
        return AccessDeniedError(f"access denied: {principal} may not {action} ({what})")
    if status == 404:
        return NotFoundError(f"{what}: {first}")
    return BackendError(f"Azure ML {what}: {type(e).__name__}: {first}")
