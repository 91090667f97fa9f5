"""FastAPI dependencies of the scoring service, as ``Annotated`` aliases for route signatures.

- :data:`State`: the app's typed :class:`~deployment.serving.state.ServingState`;
- :data:`ApiKey`: a valid API key in ``X-API-Key`` or ``Authorization: Bearer``, else 401;
- :data:`InvocationsKey`: the same on ``/invocations`` unless ``invocations_require_key`` is off
  (SageMaker's IAM-signed endpoint forwards no custom header);
- :data:`ScoreThreshold`: the optional ``?score_threshold=`` query parameter in [0, 1].
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Query, Request

from deployment.serving.inputs import InputError
from deployment.serving.state import ServingState

# The dependencies are ``async def`` although they never wait: FastAPI runs a plain ``def`` dependency
# in its thread pool, and two thread hops per request cost more than the checks themselves.

API_KEY_ERROR = "missing or invalid API key (header X-API-Key or Authorization: Bearer)"


async def get_state(request: Request) -> ServingState:
    """The :class:`ServingState` of the app serving ``request``."""
    return request.app.state.serving


State = Annotated[ServingState, Depends(get_state)]


def api_key_from(request: Request) -> str | None:
    """The key of ``X-API-Key``, else of ``Authorization: Bearer <key>``, else None."""
    key = request.headers.get("x-api-key")
    if key:
        return key
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return None


def key_is_valid(given: str | None, keys: list[bytes]) -> bool:
    """Whether ``given`` equals one of ``keys``; every key is compared, each in constant time."""
    if given is None:
        return False
    g = given.encode("utf-8", "surrogateescape")
    ok = False
    for k in keys:
        ok = hmac.compare_digest(g, k) | ok
    return ok


async def require_key(request: Request, state: State) -> None:
    """Dependency: a valid API key, else :class:`InputError` 401 (none checked with ``auth=platform``:
    the Azure ML endpoint or SageMaker's IAM-signed InvokeEndpoint authenticated the caller)."""
    if state.settings.auth == "platform":
        return
    if not key_is_valid(api_key_from(request), state.api_keys):
        raise InputError(401, API_KEY_ERROR)


async def require_key_invocations(request: Request, state: State) -> None:
    """Dependency of ``/invocations``: :func:`require_key` unless ``invocations_require_key`` is off."""
    if state.settings.invocations_require_key:
        await require_key(request, state)


ApiKey = Annotated[None, Depends(require_key)]
InvocationsKey = Annotated[None, Depends(require_key_invocations)]
ScoreThreshold = Annotated[float | None, Query(ge=0, le=1)]
