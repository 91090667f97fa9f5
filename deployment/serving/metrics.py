"""Prometheus metrics of the scoring service and the ASGI middleware that records them per route."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1, 2.5, 5, 10)


class Metrics:
    """Prometheus metrics of one app instance, in their own registry (no global state).

    ``model_info`` carries the model name and version as labels (value 1), ``model_runtime`` the
    runtime serving it (``savedmodel``, ``tflite-float``, ``tflite-int8``); ``max_batch_size`` the
    micro-batcher's batch size and ``tuned_images_per_second`` what startup's tuning measured.
    """

    def __init__(self, name: str, version: str, runtime: str = "savedmodel") -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("detops_requests", "HTTP requests", ["route", "method", "status"], registry=r)
        self.latency = Histogram(
            "detops_request_latency_seconds", "Request latency", ["route"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.errors = Counter(
            "detops_request_errors", "HTTP responses with status >= 400", ["route", "status"], registry=r
        )
        self.model_info = Gauge(
            "detops_model_info", "Model served (value 1)", ["model_name", "model_version"], registry=r
        )
        self.model_info.labels(name, version).set(1)
        self.model_runtime = Gauge(
            "detops_model_runtime", "Runtime serving the model (value 1)", ["runtime"], registry=r
        )
        self.model_runtime.labels(runtime).set(1)
        self.images = Counter("detops_images_scored", "Images scored", registry=r)
        self.batch_size = Histogram(
            "detops_batch_size", "Images per model call", buckets=(1, 2, 4, 8, 16, 32, 64), registry=r
        )
        self.model_latency = Histogram(
            "detops_model_latency_seconds", "Model call time (one batch)", buckets=LATENCY_BUCKETS, registry=r
        )
        self.capture = Counter("detops_capture_records", "Data capture events", ["event"], registry=r)
        self.max_batch_size = Gauge(
            "detops_max_batch_size", "Most images per model call (after startup's batch-size tuning)", registry=r
        )
        self.tuned_images_per_second = Gauge(
            "detops_batch_tuning_images_per_second",
            "Images/s startup measured per batch size (DETOPS_BATCH_SIZE_TUNING)",
            ["batch_size"],
            registry=r,
        )


class RequestMetrics:
    """Pure ASGI middleware recording request count, latency and errors per route template
    (pure ASGI rather than ``BaseHTTPMiddleware``, which adds latency to every request)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status_holder = {"status": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            status = status_holder["status"]
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            m = self.metrics
            m.requests.labels(path, scope.get("method", ""), str(status)).inc()
            m.latency.labels(path).observe(time.perf_counter() - t0)
            if status >= 400:
                m.errors.labels(path, str(status)).inc()
