"""Smoke test of a deployed scoring endpoint (used by ``detops smoke-test`` and release pipelines)."""

from __future__ import annotations

import os
import time
from typing import Any

import httpx

from training import storage
from training.errors import BackendError, ConfigError


def smoke_test(url: str, image: str, api_key_env: str = "DETOPS_API_KEY", timeout: float = 60.0) -> dict[str, Any]:
    """Check ``GET <url>/readyz`` then ``POST <url>/invocations`` with ``image``; return a summary.

    The API key is read from the environment variable ``api_key_env`` (if it holds several,
    comma-separated, the first is used). Returns ``{"url", "model", "num_detections", "latency_ms"}``.

    Raises:
        ConfigError: the variable is unset or the image cannot be read.
        BackendError: the endpoint is unreachable, not ready, or answers anything but a valid 200.
    """
    key = (os.environ.get(api_key_env) or "").split(",")[0].strip()
    if not key:
        raise ConfigError(f"environment variable {api_key_env} holds no API key")
    try:
        data = storage.read_bytes(image)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read image {image!r}: {e}") from e
    ctype = "image/png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "image/jpeg"
    base = url.rstrip("/")
    try:
        with httpx.Client(timeout=timeout) as client:
            r = client.get(f"{base}/readyz")
            if r.status_code != 200:
                raise BackendError(f"{base}/readyz answered {r.status_code}: {r.text[:200]}")
            t0 = time.perf_counter()
            r = client.post(f"{base}/invocations", content=data, headers={"Content-Type": ctype, "X-API-Key": key})
            latency = (time.perf_counter() - t0) * 1000
    except httpx.HTTPError as e:
        raise BackendError(f"{base} unreachable: {type(e).__name__}: {e}") from e
    if r.status_code != 200:
        raise BackendError(f"{base}/invocations answered {r.status_code}: {r.text[:300]}")
    try:
        body = r.json()
        preds = body["predictions"]
        n = int(preds[0]["num_detections"])
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise BackendError(f"{base}/invocations returned an unexpected body: {r.text[:300]}") from e
    return {"url": base, "model": body.get("model"), "num_detections": n, "latency_ms": round(latency, 1)}
