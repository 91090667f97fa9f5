"""Azure access: the credential and ``MLClient`` factory, the caller, datastore URLs, error mapping.

Authentication is ``DefaultAzureCredential`` (workload identity / OIDC in CI, a managed identity on
Azure, ``az login`` on a laptop; never secrets in files). azure-ai-ml and azure-identity are imported
inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

import re
from typing import Any

from training.cloud import Principal
from training.errors import AccessDeniedError, BackendError, ConfigError, DetopsError, NotFoundError
from training.settings import AzureSettings

#: Token scope asked for when reading the Azure principal (any ARM-scoped token carries oid/name).
AZURE_SCOPE = "https://management.azure.com/.default"

_AZURE_PRINCIPAL = re.compile(r"client '([^']+)'(?: with object id '([^']+)')?")
_AZURE_ACTION = re.compile(r"perform action '([^']+)'")


def quiet_sdk() -> None:
    """Silence azure-ai-ml's "This is an experimental class" warnings (printed on every import)."""
    import logging

    logging.getLogger("azure.ai.ml._utils._experimental").setLevel(logging.ERROR)


def credential() -> Any:
    """``azure.identity.DefaultAzureCredential()``: the one credential of every Azure call."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def ml_client(settings: AzureSettings | None = None, cred: Any = None, *, what: str = "reach the Azure ML workspace"):
    """The one ``azure.ai.ml.MLClient`` factory (:func:`credential` unless ``cred``).

    Raises:
        ConfigError: AZURE_SUBSCRIPTION_ID / AZURE_RESOURCE_GROUP / AZUREML_WORKSPACE unset (all named).
    """
    settings = settings or AzureSettings.load()
    ids = settings.workspace_ids(what)
    from azure.ai.ml import MLClient

    quiet_sdk()
    return MLClient(cred if cred is not None else credential(), *ids)


def token_claims(token: str) -> dict[str, Any]:
    """The claims (payload) of a JWT access token, read with PyJWT without verifying its signature
    (the token is our own credential's, used only to read who we are; Entra's claims: ``oid``,
    ``name``, ``upn``, ``appid``, ``app_displayname``, ``tid``).

    Raises:
        ConfigError: the token is not a JWT, or its payload is not a JSON object.
    """
    import jwt

    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.DecodeError as e:
        raise ConfigError(f"the Azure access token is not a JWT (header.payload.signature): {e}") from e
    if not isinstance(claims, dict):
        raise ConfigError("the Azure access token's payload is not a JSON object")
    return claims


def caller_principal(cred: Any = None) -> Principal:
    """The Azure principal of ``cred`` (default :func:`credential`) from its token's claims:
    id = ``oid`` (Entra object id), name = ``name``, ``upn``, ``app_displayname`` or ``appid``.

    Raises:
        BackendError: no token could be obtained. ConfigError: the token has no ``oid`` claim.
    """
    cred = cred if cred is not None else credential()
    try:
        token = cred.get_token(AZURE_SCOPE).token
    except Exception as e:  # azure.core.exceptions.ClientAuthenticationError and friends
        raise BackendError(f"cannot tell who is calling Azure (no access token): {type(e).__name__}: {e}") from e
    claims = token_claims(token)
    oid = claims.get("oid")
    if not oid:
        raise ConfigError("the Azure access token has no 'oid' claim (object id of the principal)")
    name = claims.get("name") or claims.get("upn") or claims.get("app_displayname") or claims.get("appid") or oid
    return Principal(str(oid), str(name), "azure")


def azure_error(e: Any, what: str) -> DetopsError:
    """Translate an azure-core ``HttpResponseError`` (or any SDK error) of ``what`` into a DetopsError.

    403 / ``AuthorizationFailed`` becomes :class:`AccessDeniedError` naming the principal (object id)
    and the action from Azure's message; 404 :class:`NotFoundError`; anything else :class:`BackendError`.
    """
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


# -- datastore URLs -------------------------------------------------------------------------------

#: ``azureml://datastores/<name>/paths/<path>``, short or with the workspace prefix
#: (``azureml://subscriptions/<s>/resourcegroups/<rg>/workspaces/<ws>/datastores/<name>/paths/<path>``).
DATASTORE_URL = re.compile(
    r"^azureml://(?:subscriptions/[^/]+/resource[gG]roups/[^/]+/workspaces/[^/]+/)?"
    r"datastores/(?P<datastore>[^/]+)/paths/(?P<path>.*)$"
)
_LOCATIONS: dict[str, tuple[str, str, str]] = {}


def datastore_location(name: str, client: Any = None) -> tuple[str, str, str]:
    """``(account, container, endpoint suffix)`` of an Azure ML blob / ADLS Gen2 datastore.

    Offline when ``name`` is ``DETOPS_AML_DATASTORE`` and ``AZURE_STORAGE_ACCOUNT_NAME`` and
    ``DETOPS_AML_DATASTORE_CONTAINER`` are set (stack outputs); else asked once per process from
    the workspace (``MLClient.datastores.get``, the Reader role is enough).

    Raises:
        ConfigError: neither is possible (names the settings), or the datastore is not blob storage.
    """
    az = AzureSettings.load()
    if name == az.datastore and az.storage_account_name and az.datastore_container:
        return az.storage_account_name, az.datastore_container, "core.windows.net"
    if name not in _LOCATIONS:
        client = client or ml_client(
            az, what=f"resolve datastore {name!r} (or set AZURE_STORAGE_ACCOUNT_NAME and DETOPS_AML_DATASTORE_CONTAINER)"
        )
        ds = client.datastores.get(name)
        container = getattr(ds, "container_name", None) or getattr(ds, "filesystem", None)
        if not container:
            raise ConfigError(f"datastore {name!r} is {type(ds).__name__}, not blob / ADLS Gen2 storage: cannot open its paths")
        _LOCATIONS[name] = (ds.account_name, container, getattr(ds, "endpoint", None) or "core.windows.net")
    return _LOCATIONS[name]


def resolve_datastore_url(url: str, client: Any = None) -> str:
    """``azureml://datastores/<name>/paths/<p>`` -> ``az://<container>@<account>.blob.<suffix>/<p>``
    (adlfs reads the account from the URL; credentials from the environment / workload identity).
    Other URLs are returned unchanged.

    Raises:
        ConfigError: an ``azureml://`` URL that is not a datastore path, or see :func:`datastore_location`.
    """
    if not url.startswith("azureml://"):
        return url
    m = DATASTORE_URL.match(url)
    if not m:
        raise ConfigError(f"{url!r}: only azureml://datastores/<name>/paths/... URLs can be opened outside Azure ML")
    account, container, suffix = datastore_location(m["datastore"], client)
    return f"az://{container}@{account}.blob.{suffix}/{m['path']}"
