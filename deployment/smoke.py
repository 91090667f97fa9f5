"""Smoke test of a deployed endpoint, the way its platform is called (``detops smoke-test``, release jobs).

One check per target, each through the front door clients really use:

- ``local``: ``GET <url>/readyz``, then ``POST <url>/invocations`` (the image bytes) with ``X-API-Key``;
- ``azureml``: ``POST <scoring URI>`` (the endpoint's ``/score``) with the endpoint key as
  ``Authorization: Bearer <key>`` and the image as ``{"instances": [{"b64": ...}]}``; Azure ML's
  gateway checks the key, the container never sees an X-API-Key. The scoring URI and key come from
  ``--url`` / the key variable, else from the workspace (``online_endpoints.get`` / ``get_keys``);
- ``sagemaker``: ``sagemaker-runtime`` ``InvokeEndpoint`` (SigV4-signed by boto3; the runtime forwards
  no custom header but ``X-Amzn-SageMaker-Custom-Attributes``), the image bytes as the body.

Every check requires a 200 whose JSON holds ``predictions[0].num_detections`` (the serving contract,
docs/serving.md). With ``expect_version`` (the release's version) the answer's ``model.version`` (the
serving app reports the ``DETOPS_MODEL_VERSION`` its target gave it) must be that version: during an
update, or after one the platform rolled back, the previous version keeps answering. Returns
``{"target", "url"|"endpoint", "model", "num_detections", "latency_ms"}``.
"""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any

import httpx

from training import storage
from training.errors import BackendError, ConfigError

TARGETS = ("local", "azureml", "sagemaker")


def _read_image(image: str) -> tuple[bytes, str]:
    try:
        data = storage.read_bytes(image)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read image {image!r}: {e}") from e
    return data, ("image/png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "image/jpeg")


def _key(api_key_env: str, required: bool = True) -> str | None:
    key = (os.environ.get(api_key_env) or "").split(",")[0].strip()
    if not key and required:
        raise ConfigError(f"environment variable {api_key_env} holds no API key")
    return key or None


def _check_body(text: str, where: str) -> tuple[Any, int]:
    try:
        body = json.loads(text)
        n = int(body["predictions"][0]["num_detections"])
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise BackendError(f"{where} returned an unexpected body: {text[:300]}") from e
    return body.get("model"), n


def smoke_local(url: str, image: str, api_key_env: str = "DETOPS_API_KEY", timeout: float = 60.0) -> dict[str, Any]:
    """``/readyz`` then ``/invocations`` with ``X-API-Key`` (the local target, or any detops container)."""
    key = _key(api_key_env)
    data, ctype = _read_image(image)
    base = url.rstrip("/")
    try:
        with httpx.Client(timeout=timeout) as client:
            r = client.get(f"{base}/readyz")
            if r.status_code != 200:
                raise BackendError(f"{base}/readyz answered {r.status_code}: {r.text[:200]}")
            t0 = time.perf_counter()
            r = client.post(f"{base}/invocations", content=data, headers={"Content-Type": ctype, "X-API-Key": key or ""})
            latency = (time.perf_counter() - t0) * 1000
    except httpx.HTTPError as e:
        raise BackendError(f"{base} unreachable: {type(e).__name__}: {e}") from e
    if r.status_code != 200:
        raise BackendError(f"{base}/invocations answered {r.status_code}: {r.text[:300]}")
    model, n = _check_body(r.text, f"{base}/invocations")
    return {"target": "local", "url": base, "model": model, "num_detections": n, "latency_ms": round(latency, 1)}


def smoke_azureml(
    image: str,
    endpoint: str | None = None,
    scoring_uri: str | None = None,
    api_key_env: str = "DETOPS_API_KEY",
    timeout: float = 60.0,
    ml_client: Any = None,
) -> dict[str, Any]:
    """``POST`` the scoring URI with ``Authorization: Bearer <endpoint key>`` (Azure ML online endpoint).

    ``scoring_uri`` / the key default to the workspace's (``ml_client`` or an ``MLClient`` from
    the ``AZURE_*`` settings) for ``endpoint``.
    """
    key = _key(api_key_env, required=False)
    if not scoring_uri or not key:
        if not endpoint:
            raise ConfigError("give --endpoint (or --url and the key variable) for an Azure ML smoke test")
        from training.cloud import azure
        from training.cloud.azure import azure_error

        client = ml_client or azure.ml_client(what=f"smoke-test Azure ML endpoint {endpoint!r}")
        try:
            scoring_uri = scoring_uri or client.online_endpoints.get(endpoint).scoring_uri
            key = key or client.online_endpoints.get_keys(endpoint).primary_key
        except Exception as e:  # azure.core.exceptions.HttpResponseError and friends
            raise azure_error(e, f"read scoring URI and key of endpoint {endpoint!r}") from e
    if not scoring_uri:
        raise BackendError(f"Azure ML endpoint {endpoint!r} has no scoring URI yet")
    data, _ = _read_image(image)
    payload = {"instances": [{"b64": base64.b64encode(data).decode()}]}
    try:
        with httpx.Client(timeout=timeout) as client_http:
            t0 = time.perf_counter()
            r = client_http.post(scoring_uri, json=payload, headers={"Authorization": f"Bearer {key}"})
            latency = (time.perf_counter() - t0) * 1000
    except httpx.HTTPError as e:
        raise BackendError(f"{scoring_uri} unreachable: {type(e).__name__}: {e}") from e
    if r.status_code != 200:
        raise BackendError(f"{scoring_uri} answered {r.status_code}: {r.text[:300]}")
    model, n = _check_body(r.text, scoring_uri)
    return {"target": "azureml", "url": scoring_uri, "model": model, "num_detections": n,
            "latency_ms": round(latency, 1)}


def smoke_sagemaker(image: str, endpoint: str, runtime_client: Any = None) -> dict[str, Any]:
    """``InvokeEndpoint`` on ``endpoint`` through ``sagemaker-runtime`` (IAM-signed by boto3)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from training.cloud.aws import aws_error

    if not endpoint:
        raise ConfigError("give --endpoint for a SageMaker smoke test")
    if runtime_client is None:
        from training.cloud import aws

        runtime_client = aws.client("sagemaker-runtime")
    data, ctype = _read_image(image)
    try:
        t0 = time.perf_counter()
        r = runtime_client.invoke_endpoint(EndpointName=endpoint, ContentType=ctype, Accept="application/json", Body=data)
        text = r["Body"].read().decode(errors="replace")
        latency = (time.perf_counter() - t0) * 1000
    except ClientError as e:
        raise aws_error(e, f"invoke endpoint {endpoint!r}", service="sagemaker-runtime") from e
    except BotoCoreError as e:
        raise BackendError(f"SageMaker endpoint {endpoint!r} unreachable: {e}") from e
    model, n = _check_body(text, f"SageMaker endpoint {endpoint!r}")
    return {"target": "sagemaker", "endpoint": endpoint, "model": model, "num_detections": n,
            "latency_ms": round(latency, 1)}


def smoke_test(
    url: str | None,
    image: str,
    api_key_env: str = "DETOPS_API_KEY",
    timeout: float = 60.0,
    *,
    target: str = "local",
    endpoint: str | None = None,
    expect_version: str | None = None,
    **clients: Any,
) -> dict[str, Any]:
    """Smoke-test ``target`` (module docstring); ``clients`` pass ``ml_client=`` / ``runtime_client=``.

    Raises:
        ConfigError: a missing URL / endpoint / key, or an unreadable image.
        BackendError: the endpoint is unreachable, not ready, answers anything but a valid 200, or (with
            ``expect_version``) answers with another model version.
        AccessDeniedError: the caller may not invoke the endpoint.
    """
    if target == "local":
        if not url:
            raise ConfigError("give --url for a local smoke test")
        result = smoke_local(url, image, api_key_env, timeout)
    elif target == "azureml":
        result = smoke_azureml(image, endpoint, url, api_key_env, timeout, clients.get("ml_client"))
    elif target == "sagemaker":
        result = smoke_sagemaker(image, endpoint or "", clients.get("runtime_client"))
    else:
        from training.errors import unknown_name_error

        raise unknown_name_error("smoke-test target", target, TARGETS)
    if expect_version is not None:
        answered = (result.get("model") or {}).get("version") if isinstance(result.get("model"), dict) else None
        if str(answered) != str(expect_version):
            where = result.get("endpoint") or result.get("url")
            raise BackendError(f"{target} endpoint {where} answered with model version {answered}, not {expect_version}: "
                               "the version this release deployed does not serve yet (or its update was rolled back)")
    return result
