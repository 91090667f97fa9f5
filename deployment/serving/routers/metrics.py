"""``GET /metrics``: Prometheus text format, API key required."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from deployment.serving.dependencies import ApiKey, State

router = APIRouter(tags=["metrics"])


@router.get("/metrics")
async def prometheus_metrics(state: State, _key: ApiKey) -> Response:
    """Prometheus text format: requests, latency histogram, errors, batch sizes, model name/version/runtime."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
