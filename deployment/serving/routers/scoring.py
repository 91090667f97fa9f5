"""Scoring routes: ``POST /score`` (Azure ML style JSON) and ``POST /invocations`` (SageMaker contract)."""

from __future__ import annotations

import uuid
from typing import Any

import pydantic_core
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from deployment.serving.batching import QueueFull
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

_OVERLOADED = {"description": "Overloaded: retry after the Retry-After header's seconds"}
_SCORE_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid API key"},
    413: {"description": "Body too large"},
    403: {"description": "URI not allowed"},
    422: {"description": "Malformed payload"},
    503: _OVERLOADED,
}
_INVOCATIONS_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid API key"},
    413: {"description": "Body too large"},
    415: {"description": "Unsupported content type"},
    422: {"description": "Malformed payload"},
    503: _OVERLOADED,
}
_BINARY = {"schema": {"type": "string", "format": "binary"}}
#: The JSON body's schema, added to the spec's components by ``deployment.serving.app`` (the routes read
#: the raw body, so FastAPI does not add it).
SCORE_REQUEST_REF = {"$ref": "#/components/schemas/ScoreRequest"}
_SCORE_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": SCORE_REQUEST_REF}}}}
_INVOCATIONS_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": SCORE_REQUEST_REF},
            "image/jpeg": _BINARY,
            "image/png": _BINARY,
            "application/x-image": _BINARY,
        },
    }
}


def images_from_request(state: ServingState, req: ScoreRequest) -> list[ImageInput]:
    """Decode and check every image of a JSON request (blocking: base64, headers, URI reads; run in a thread).

    The images' decoded sizes together stay within ``max_decoded_bytes`` (413 naming the first one past it).
    """
    s = state.settings
    out = []
    budget = s.max_decoded_bytes
    for where, kind, value in collect(req, s.max_images):
        if kind == "b64":
            data = decode_b64(value, where)
            img = check_image(data, where, s.max_pixels, max_decoded_bytes=budget)
            img.source = {"bytes": data}
        else:
            data = read_uri(value, s.input_uri_prefixes, s.max_uri_bytes, where)
            img = check_image(data, where, s.max_pixels, max_decoded_bytes=budget)
            img.source = {"uri": value, "bytes": data}
        budget -= img.decoded_bytes
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
    try:
        results = await state.batcher.submit_many([img.data for img in images])
    except QueueFull:
        raise state.admission.overloaded(f"{state.batcher.queued} images wait for the model") from None
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


async def _score_json(state: ServingState, raw: bytes, threshold: float | None, route: str) -> Response:
    """Parse, check and score a JSON body (``/score``, ``/invocations`` with ``application/json``)."""
    req = await run_in_threadpool(_parse_json, raw)
    images = await run_in_threadpool(images_from_request, state, req)
    thr = threshold if threshold is not None else req.score_threshold
    return await score_images(state, images, thr, route, "application/json")


# Both routes take the raw body, not a parsed model: FastAPI parses a model body before it runs the
# dependencies, so a request without a key got 422 for a malformed body (and had it parsed). Here the
# key (a dependency), then the concurrency limit, come before the body is read.


@router.post("/score", response_model=ScoreResponse, openapi_extra=_SCORE_BODY, responses=_SCORE_ERRORS)
async def score(request: Request, state: State, _key: ApiKey, score_threshold: ScoreThreshold = None) -> Response:
    """Score base64 images or storage URIs (Azure ML style ``input_data`` or ``instances``)."""
    with state.admission:
        return await _score_json(state, await request.body(), score_threshold, "/score")


@router.post(
    "/invocations", response_model=ScoreResponse, openapi_extra=_INVOCATIONS_BODY, responses=_INVOCATIONS_ERRORS
)
async def invocations(
    request: Request, state: State, _key: InvocationsKey, score_threshold: ScoreThreshold = None
) -> Response:
    """SageMaker inference contract: one raw image, or the JSON payload of ``/score``."""
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    s = state.settings
    with state.admission:
        if ctype in IMAGE_CONTENT_TYPES:
            raw = await request.body()
            # header parse only: cheaper than a thread hop
            img = check_image(raw, "body", s.max_pixels, 415, max_decoded_bytes=s.max_decoded_bytes)
            img.source = {"bytes": raw}
            return await score_images(state, [img], score_threshold, "/invocations", ctype)
        if ctype == "application/json":
            return await _score_json(state, await request.body(), score_threshold, "/invocations")
    raise InputError(
        415,
        f"unsupported Content-Type {ctype or '(none)'!r}; use {', '.join(IMAGE_CONTENT_TYPES)} or application/json",
    )
