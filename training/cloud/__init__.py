"""Cloud access, at the ground floor of :mod:`training`: the one place that talks to the clouds' SDKs.

Every other part (storage, the backends, the registries, the deploy targets, the smoke test, the
quota pre-flight) gets its clients, its credentials, the caller's principal and the mapping of the
vendors' errors from here; this package imports nothing of theirs (``pyproject.toml``,
``[tool.importlinter]``; docs/architecture.md).

- :mod:`training.cloud.aws`: the boto3 session and client factory (region, endpoint override,
  retries, user agent), the caller (STS), paginated listing, bounded waiters, ``ClientError`` ->
  :class:`training.errors.DetopsError`.
- :mod:`training.cloud.azure`: the credential and ``MLClient`` factory, the token's principal (PyJWT),
  ``azureml://`` datastore URLs -> ``az://`` locations, ``HttpResponseError`` -> ``DetopsError``, the
  SDK's log quieting.
- :mod:`training.cloud.quota`: the GPU quota pre-flight of ``submit`` and ``deploy``.

Cloud SDKs are imported inside the functions that use them, never at module top, so that the
local pipeline imports no cloud SDK (``tests/cloud/test_backends.py``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    """An authenticated identity: ``id`` is stable and unique (compared by four-eyes), ``name`` is
    for people (shown in the audit), ``source`` says where it came from (``aws``, ``azure``, ``os``,
    ``declared``)."""

    id: str
    name: str
    source: str

    def to_dict(self) -> dict[str, str]:
        """JSON-ready dict."""
        return {"id": self.id, "name": self.name, "source": self.source}


__all__ = ["Principal"]
