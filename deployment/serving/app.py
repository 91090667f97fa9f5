"""The scoring service: one FastAPI app for local use, AKS / Azure ML and SageMaker containers.

Routes (see docs/serving.md):

- ``POST /score``: Azure ML style JSON (base64 images or storage URIs), API key required;
- ``POST /invocations``, ``GET /ping``: SageMaker's container contract (``application/x-image``,
  ``image/jpeg``, ``image/png``, ``application/json``);
- ``GET /healthz`` (alive), ``GET /readyz`` (model loaded and warmed up), ``GET /metrics``
  (Prometheus, API key required), ``GET /docs`` and ``/openapi.json``;
- ``GET /``: a page to upload an image and see the boxes drawn.

Errors: 401 without a valid API key (checked before the body is read), 413 for a body over
``max_body_bytes`` (or images over ``max_pixels`` / ``max_decoded_bytes``), 415 for an unsupported
Content-Type or image format, 422 for a malformed payload, 403 for a storage URI outside the allowed
prefixes, 503 with ``Retry-After`` when more than ``max_concurrent_requests`` scoring requests are in
progress or their images do not fit in the ``max_queued_images`` queue. Bad input never yields a 5xx;
overload yields 503 only.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from deployment.serving.inputs import InputError, ScoreRequest
from deployment.serving.metrics import Metrics, RequestMetrics
from deployment.serving.routers import health, metrics, page, scoring
from deployment.serving.runtime import ModelRunner, thread_plan
from deployment.serving.settings import ServingSettings
from deployment.serving.state import Admission, ServingState, lifespan


async def _input_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InputError)
    return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": list(e.get("loc", [])), "msg": str(e.get("msg", ""))} for e in exc.errors()]
    return JSONResponse({"detail": errors}, status_code=422)


def _add_request_schemas(app: FastAPI) -> None:
    """Put :class:`~deployment.serving.inputs.ScoreRequest`'s JSON schema (and its parts) into the spec's
    components: the scoring routes read the raw body (the key check comes before it is parsed), so
    FastAPI does not add it, and their ``requestBody`` refers to it."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            spec = build()
            schema = ScoreRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            parts = schema.pop("$defs", {})
            spec.setdefault("components", {}).setdefault("schemas", {}).update({**parts, "ScoreRequest": schema})
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: ServingSettings, detector: ModelRunner | None = None) -> FastAPI:
    """Build the app for one model version.

    Args:
        settings: service settings (API keys, runtime, limits, batching, capture).
        detector: an already loaded model (tests, the benchmark); else the model of
            ``settings.model_dir`` is loaded at startup in ``settings.runtime``
            (:func:`deployment.serving.runtime.load_model`).
    """
    runtime = getattr(detector, "runtime", None) or settings.runtime
    state = ServingState(
        settings=settings,
        metrics=Metrics(settings.model_name, settings.model_version, runtime),
        plan=thread_plan(settings),
        api_keys=[k.get_secret_value().encode() for k in settings.api_keys],
        model=detector,
        admission=Admission(settings.max_concurrent_requests, settings.retry_after_seconds),
    )
    app = FastAPI(
        title="detops scoring service",
        version="1",
        description=f"Object detection with model {settings.model_name!r} version {settings.model_version!r}.",
        lifespan=lifespan,
        max_body_size=settings.max_body_bytes,  # Starlette's RequestBodyLimitMiddleware: 413 beyond it
    )
    app.state.serving = state
    app.state.settings = settings
    app.state.metrics = state.metrics
    app.add_exception_handler(InputError, _input_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for group in (scoring, health, metrics, page):
        app.include_router(group.router)
    app.add_middleware(RequestMetrics, metrics=state.metrics)
    _add_request_schemas(app)
    return app


def run_server(
    app: FastAPI, host: str, port: int, log_level: str = "info", max_connections: int | None = None
) -> None:
    """Serve ``app`` with uvicorn in the foreground until SIGINT/SIGTERM (the one place it is started).

    HTTP parsing by httptools, uvicorn's C parser (a pinned dependency of the ``serve`` extra and the
    serving image): 0.6 ms less server CPU per request than the pure-Python h11 on this project's
    2-core benchmark machine. In-flight requests get 30 s to finish on shutdown. Beyond
    ``max_connections`` open connections and requests (``DETOPS_MAX_CONNECTIONS``) uvicorn answers a plain
    503: the backstop behind the app's own limits (``max_concurrent_requests``, ``max_queued_images``).
    """
    import uvicorn

    from deployment.serving.settings import ServerSettings

    if max_connections is None:
        max_connections = ServerSettings().max_connections
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http="httptools",
        timeout_graceful_shutdown=30,
        limit_concurrency=max_connections,
    )


def app_from_env() -> FastAPI:
    """App factory for ``uvicorn --factory deployment.serving.app:app_from_env`` (settings from env)."""
    from deployment.serving.settings import load_settings

    return create_app(load_settings())
