"""Health routes: ``GET /ping`` (SageMaker), ``GET /healthz`` (liveness), ``GET /readyz`` (readiness)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from deployment.serving.dependencies import State

router = APIRouter(tags=["health"])


@router.get("/ping")
async def ping(state: State) -> Response:
    """SageMaker health check: 200 once the model is loaded, else 503."""
    m = state.model
    return Response(status_code=200 if m is not None and m.ready else 503)


@router.get("/healthz")
async def healthz() -> dict:
    """Liveness: the process serves requests."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: State) -> JSONResponse:
    """Readiness: 200 with the model name and version once loaded and warmed up, else 503."""
    s = state.settings
    body = {"ready": state.ready, "model": {"name": s.model_name, "version": s.model_version}}
    return JSONResponse(body, status_code=200 if state.ready else 503)
