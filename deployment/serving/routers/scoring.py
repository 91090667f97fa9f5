"""Scoring routes: ``POST /score`` (Azure ML style JSON) and ``POST /invocations`` (SageMaker contract)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pydantic_core
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from deployment.serving.dependencies import ApiKey, InvocationsKey, ScoreThreshold, State
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
from deployment.serving.model import ImageDecodeError
from deployment.serving.state import ServingState

router = APIRouter(tags=["scoring"])

_SCORE_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid API key"},
    413: {"description": "Body too large"},
    403: {"description": "URI not allowed"},
    422: {"description": "Malformed payload"},
}
_INVOCATIONS_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid API key"},
    413: {"description": "Body too large"},
    415: {"description": "Unsupported content type"},
    422: {"description": "Malformed payload"},
}
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_INVOCATIONS_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/ScoreRequest"}},
            "image/jpeg": _BINARY,
            "image/png": _BINARY,
            "application/x-image": _BINARY,
        },
    }
}


def images_from_request(state: ServingState, req: ScoreRequest) -> list[ImageInput]:
    """Decode and check every image of a JSON request (blocking: base64, headers, URI reads; run in a thread)."""
    s = state.settings
    out = []
    for where, kind, value in collect(req, s.max_images):
        if kind == "b64":
            data = decode_b64(value, where)
            img = check_image(data, where, s.max_pixels)
            img.source = {"bytes": data}
        else:
            data = read_uri(value, s.input_uri_prefixes, s.max_uri_bytes, where)
            img = check_image(data, where, s.max_pixels)
            img.source = {"uri": value, "bytes": data}
        out.append(img)
    return out


async def score_images(
    state: ServingState, images: list[ImageInput], threshold: float | None, route: str, content_type: str
) -> Response:
    """Score ``images`` through the micro-batcher and build the response (and its capture record).

    An image the model cannot decode makes the request a 422 naming its index.
    """
    s = state.settings
    assert state.batcher is not None
    thr = s.score_threshold if threshold is None else threshold
    results = await asyncio.gather(*(state.batcher.submit(img.data) for img in images))
    preds = []
    for i, (img, res) in enumerate(zip(images, results)):
        if isinstance(res, ImageDecodeError):
            raise InputError(422, f"image {i}: {res}")
        dets = [d.to_dict() for d in res if d.score >= thr]
        preds.append({"width": img.width, "height": img.height, "num_detections": len(dets), "detections": dets})
    state.metrics.images.inc(len(images))
    body = {"model": {"name": s.model_name, "version": s.model_version}, "predictions": preds}
    cap = state.capture
    if cap is not None and cap.sampled():
        cap.capture(uuid.uuid4().hex, route, content_type, [img.source for img in images], body)
    # Serialized by pydantic-core without validation: ScoreResponse documents the shape, and the json
    # module would spend more time on a 100-box response than the rest of the request's handling.
    return Response(pydantic_core.to_json(body), media_type="application/json")


def _parse_json(raw: bytes) -> ScoreRequest:
    try:
        return ScoreRequest.model_validate_json(raw)
    except ValueError as e:
        errs: list[Any] = getattr(e, "errors", list)()
        msg = "; ".join(f"{'.'.join(map(str, x.get('loc', [])))}: {x.get('msg')}" for x in errs) or "invalid JSON"
        raise InputError(422, f"body: {msg}") from None


@router.post("/score", response_model=ScoreResponse, responses=_SCORE_ERRORS)
async def score(body: ScoreRequest, state: State, _key: ApiKey, score_threshold: ScoreThreshold = None) -> Response:
    """Score base64 images or storage URIs (Azure ML style ``input_data`` or ``instances``)."""
    images = await run_in_threadpool(images_from_request, state, body)
    thr = score_threshold if score_threshold is not None else body.score_threshold
    return await score_images(state, images, thr, "/score", "application/json")


@router.post(
    "/invocations", response_model=ScoreResponse, openapi_extra=_INVOCATIONS_BODY, responses=_INVOCATIONS_ERRORS
)
async def invocations(
    request: Request, state: State, _key: InvocationsKey, score_threshold: ScoreThreshold = None
) -> Response:
    """SageMaker inference contract: one raw image, or the JSON payload of ``/score``."""
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    raw = await request.body()
    max_pixels = state.settings.max_pixels
    if ctype in IMAGE_CONTENT_TYPES:
        img = check_image(raw, "body", max_pixels, 415)  # header parse only: cheaper than a thread hop
        img.source = {"bytes": raw}
        return await score_images(state, [img], score_threshold, "/invocations", ctype)
    if ctype == "application/json":
        req = await run_in_threadpool(_parse_json, raw)
        images = await run_in_threadpool(images_from_request, state, req)
        thr = score_threshold if score_threshold is not None else req.score_threshold
        return await score_images(state, images, thr, "/invocations", ctype)
    raise InputError(
        415,
        f"unsupported Content-Type {ctype or '(none)'!r}; use {', '.join(IMAGE_CONTENT_TYPES)} or application/json",
    )
