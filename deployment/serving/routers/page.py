"""``GET /``: a page to upload an image and see the detections drawn (plain HTML + canvas, no CDN)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from deployment.serving.dependencies import State

router = APIRouter()
_PAGE = (Path(__file__).resolve().parents[1] / "static" / "index.html").read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page(state: State) -> HTMLResponse:
    """The upload page, titled with the model name and version."""
    s = state.settings
    return HTMLResponse(_PAGE.replace("{{MODEL}}", f"{s.model_name} v{s.model_version}"))
