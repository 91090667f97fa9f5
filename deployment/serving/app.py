"""The scoring service: one FastAPI app for local use, AKS / Azure ML and SageMaker containers.

Routes (see docs/serving.md):

- ``POST /score``: Azure ML style JSON (base64 images or storage URIs), API key required;
- ``POST /invocations``, ``GET /ping``: SageMaker's container contract (``application/x-image``,
  ``image/jpeg``, ``image/png``, ``application/json``);
- ``GET /healthz`` (alive), ``GET /readyz`` (model loaded and warmed up), ``GET /metrics``
  (Prometheus, API key required), ``GET /docs`` and ``/openapi.json``;
- ``GET /``: a page to upload an image and see the boxes drawn.

Errors: 401 without a valid API key, 413 for a body over ``max_body_bytes`` (or an image over
``max_pixels``), 415 for an unsupported Content-Type or image format, 422 for a malformed payload,
403 for a storage URI outside the allowed prefixes. Bad input never yields a 5xx.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.concurrency import run_in_threadpool

from deployment.serving.batching import MicroBatcher
from deployment.serving.capture import DataCapture
from deployment.serving.inputs import (
    IMAGE_CONTENT_TYPES,
    ImageInput,
    InputError,
    ScoreRequest,
    ScoreResponse,
    check_image,
    collect,
    decode_b64,
    read_uri,
)
from deployment.serving.model import Detector, ImageDecodeError
from deployment.serving.settings import ServingSettings

log = logging.getLogger("detops.serving")
_PAGE = (Path(__file__).parent / "static" / "index.html").read_text(encoding="utf-8")
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1, 2.5, 5, 10)


class Metrics:
    """Prometheus metrics of one app instance, in their own registry (no global state)."""

    def __init__(self, name: str, version: str) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("detops_requests", "HTTP requests", ["route", "method", "status"], registry=r)
        self.latency = Histogram(
            "detops_request_latency_seconds", "Request latency", ["route"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.errors = Counter(
            "detops_request_errors", "HTTP responses with status >= 400", ["route", "status"], registry=r
        )
        self.model_info = Gauge(
            "detops_model_info", "Model served (value 1)", ["model_name", "model_version"], registry=r
        )
        self.model_info.labels(name, version).set(1)
        self.images = Counter("detops_images_scored", "Images scored", registry=r)
        self.batch_size = Histogram(
            "detops_batch_size", "Images per SavedModel call", buckets=(1, 2, 4, 8, 16, 32, 64), registry=r
        )
        self.model_latency = Histogram(
            "detops_model_latency_seconds", "SavedModel call time", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.capture = Counter("detops_capture_records", "Data capture events", ["event"], registry=r)


class _RequestMetrics:
    """Pure ASGI middleware recording request count, latency and errors per route template
    (pure ASGI rather than ``BaseHTTPMiddleware``, which adds latency to every request)."""

    def __init__(self, app, metrics: Metrics) -> None:
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


def _api_key_from(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return None


def create_app(settings: ServingSettings, detector: Detector | None = None) -> FastAPI:
    """Build the app for one model version.

    Args:
        settings: service settings (API keys, limits, batching, capture).
        detector: an already loaded :class:`Detector` (tests, the benchmark); else the SavedModel at
            ``settings.model_dir`` is loaded at startup.
    """
    keys = [k.get_secret_value().encode() for k in settings.api_keys]
    metrics = Metrics(settings.model_name, settings.model_version)
    state: dict[str, Any] = {"detector": detector, "batcher": None, "capture": None}

    def predict(images: list[bytes]):
        t0 = time.perf_counter()
        out = state["detector"].predict(images)
        metrics.model_latency.observe(time.perf_counter() - t0)
        return out

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if state["detector"] is None:
            state["detector"] = await asyncio.to_thread(
                Detector, settings.model_dir, settings.model_name, settings.model_version
            )
        if not state["detector"].ready:
            await asyncio.to_thread(state["detector"].warmup)
        batcher = MicroBatcher(
            predict,
            settings.max_batch_size,
            settings.batch_wait_ms / 1000.0,
            on_batch=lambda n, s: metrics.batch_size.observe(n),
            workers=settings.model_workers,
        )
        await batcher.start()
        state["batcher"] = batcher
        if settings.capture_uri and settings.capture_sample_rate > 0:
            state["capture"] = DataCapture(
                settings.capture_uri,
                settings.capture_sample_rate,
                settings.model_name,
                settings.model_version,
                settings.capture_flush_records,
                settings.capture_flush_seconds,
                on_event=lambda kind, n: metrics.capture.labels(kind).inc(n),
            )
        try:
            yield
        finally:
            await batcher.stop()
            if state["capture"] is not None:
                await asyncio.to_thread(state["capture"].close)

    app = FastAPI(
        title="detops scoring service",
        version="1",
        description=f"Object detection with model {settings.model_name!r} version {settings.model_version!r}.",
        lifespan=lifespan,
        max_body_size=settings.max_body_bytes,  # Starlette's RequestBodyLimitMiddleware: 413 beyond it
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.runtime = state

    @app.exception_handler(InputError)
    async def _input_error(request: Request, exc: InputError):
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        errors = [{"loc": list(e.get("loc", [])), "msg": str(e.get("msg", ""))} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    def _check_key(request: Request) -> None:
        if settings.auth == "platform":  # the endpoint in front authenticated the caller
            return
        given = _api_key_from(request)
        ok = False
        if given is not None:
            g = given.encode("utf-8", "surrogateescape")
            for k in keys:  # compare against every key, in constant time each
                ok = hmac.compare_digest(g, k) | ok
        if not ok:
            raise InputError(401, "missing or invalid API key (header X-API-Key or Authorization: Bearer)")

    def require_key(request: Request) -> None:
        """Dependency: a valid API key in ``X-API-Key`` or ``Authorization: Bearer``; else 401."""
        _check_key(request)

    def require_key_invocations(request: Request) -> None:
        if settings.invocations_require_key:
            _check_key(request)

    async def _images_from_json(req: ScoreRequest) -> list[ImageInput]:
        out = []
        for where, kind, value in collect(req, settings.max_images):
            if kind == "b64":
                data = decode_b64(value, where)
                img = check_image(data, where, settings.max_pixels)
                img.source = {"bytes": data}
            else:
                data = await run_in_threadpool(
                    read_uri, value, settings.input_uri_prefixes, settings.max_uri_bytes, where
                )
                img = check_image(data, where, settings.max_pixels)
                img.source = {"uri": value, "bytes": data}
            out.append(img)
        return out

    async def _score(images: list[ImageInput], threshold: float | None, route: str, content_type: str) -> JSONResponse:
        thr = settings.score_threshold if threshold is None else threshold
        results = await asyncio.gather(*(state["batcher"].submit(img.data) for img in images))
        preds = []
        for i, (img, res) in enumerate(zip(images, results)):
            if isinstance(res, ImageDecodeError):
                raise InputError(422, f"image {i}: {res}")
            dets = [d.to_dict() for d in res if d.score >= thr]
            preds.append({"width": img.width, "height": img.height, "num_detections": len(dets), "detections": dets})
        metrics.images.inc(len(images))
        body = {"model": {"name": settings.model_name, "version": settings.model_version}, "predictions": preds}
        cap: DataCapture | None = state["capture"]
        if cap is not None and cap.sampled():
            cap.capture(uuid.uuid4().hex, route, content_type, [img.source for img in images], body)
        # A Response is sent as is: ScoreResponse documents the shape without re-validating every box.
        return JSONResponse(body)

    @app.post(
        "/score",
        response_model=ScoreResponse,
        dependencies=[Depends(require_key)],
        responses={
            401: {"description": "No valid API key"},
            413: {"description": "Body too large"},
            403: {"description": "URI not allowed"},
            422: {"description": "Malformed payload"},
        },
    )
    async def score(
        body: ScoreRequest,
        score_threshold: Annotated[float | None, Query(ge=0, le=1)] = None,
    ) -> JSONResponse:
        """Score base64 images or storage URIs (Azure ML style ``input_data`` or ``instances``)."""
        images = await _images_from_json(body)
        thr = score_threshold if score_threshold is not None else body.score_threshold
        return await _score(images, thr, "/score", "application/json")

    @app.post(
        "/invocations",
        response_model=ScoreResponse,
        dependencies=[Depends(require_key_invocations)],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ScoreRequest"}},
                    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                    "image/png": {"schema": {"type": "string", "format": "binary"}},
                    "application/x-image": {"schema": {"type": "string", "format": "binary"}},
                },
            }
        },
        responses={
            401: {"description": "No valid API key"},
            413: {"description": "Body too large"},
            415: {"description": "Unsupported content type"},
            422: {"description": "Malformed payload"},
        },
    )
    async def invocations(request: Request, score_threshold: Annotated[float | None, Query(ge=0, le=1)] = None) -> JSONResponse:
        """SageMaker inference contract: one raw image, or the JSON payload of ``/score``."""
        ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        raw = await request.body()
        if ctype in IMAGE_CONTENT_TYPES:
            img = check_image(raw, "body", settings.max_pixels, unsupported_status=415)
            img.source = {"bytes": raw}
            return await _score([img], score_threshold, "/invocations", ctype)
        if ctype == "application/json":
            try:
                req = ScoreRequest.model_validate_json(raw)
            except ValueError as e:
                errs: list[Any] = getattr(e, "errors", list)()
                msg = (
                    "; ".join(f"{'.'.join(map(str, x.get('loc', [])))}: {x.get('msg')}" for x in errs) or "invalid JSON"
                )
                raise InputError(422, f"body: {msg}") from None
            images = await _images_from_json(req)
            thr = score_threshold if score_threshold is not None else req.score_threshold
            return await _score(images, thr, "/invocations", ctype)
        raise InputError(
            415,
            f"unsupported Content-Type {ctype or '(none)'!r}; use {', '.join(IMAGE_CONTENT_TYPES)} or application/json",
        )

    @app.get("/ping")
    async def ping() -> Response:
        """SageMaker health check: 200 once the model is loaded, else 503."""
        d = state["detector"]
        return Response(status_code=200 if d is not None and d.ready else 503)

    @app.get("/healthz")
    async def healthz() -> dict:
        """Liveness: the process serves requests."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Readiness: 200 with the model name and version once loaded and warmed up, else 503."""
        d = state["detector"]
        ready = d is not None and d.ready and state["batcher"] is not None
        body = {"ready": ready, "model": {"name": settings.model_name, "version": settings.model_version}}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", dependencies=[Depends(require_key)])
    async def prometheus_metrics() -> Response:
        """Prometheus text format: requests, latency histogram, errors, batch sizes, model name/version."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        """Upload an image, see the detections drawn (plain HTML + canvas, no external resources)."""
        return HTMLResponse(_PAGE.replace("{{MODEL}}", f"{settings.model_name} v{settings.model_version}"))

    return _wrap(app, settings, metrics)


def _wrap(app: FastAPI, settings: ServingSettings, metrics: Metrics) -> FastAPI:
    app.add_middleware(_RequestMetrics, metrics=metrics)
    return app


def app_from_env() -> FastAPI:
    """App factory for ``uvicorn --factory deployment.serving.app:app_from_env`` (settings from env)."""
    from deployment.serving.settings import load_settings

    return create_app(load_settings())
