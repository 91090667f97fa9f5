"""Request payloads of the scoring service and their validation (every failure is a 4xx).

Accepted payloads (one model, any of them on ``/score``; on ``/invocations`` by Content-Type):

- raw image bytes, ``Content-Type: image/jpeg | image/png | application/x-image`` (``/invocations``);
- JSON, TF Serving / SageMaker style: ``{"instances": [{"b64": "<base64>"} | {"uri": "s3://..."}, ...]}``;
- JSON, Azure ML style: ``{"input_data": {"columns": ["image"], "data": ["<base64>", ...]}}``
  (a data row may also be a one-element list, as Azure ML AutoML image models send it).

Both JSON forms take an optional ``"score_threshold"`` (detections with a lower score are left out).
Storage URIs (``file://``, plain paths, ``az://``, ``s3://``) are read through fsspec and only under
the prefixes the service allows (``DETOPS_INPUT_URI_PREFIXES``), for images larger than a request body.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import posixpath
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

IMAGE_CONTENT_TYPES = ("image/jpeg", "image/png", "application/x-image")
ALLOWED_FORMATS = ("JPEG", "PNG")


#: Channels of the decoded image the model gets: the SavedModel contract decodes every image to RGB
#: (``channels=3``, docs/contracts.md), a grayscale or palette PNG too.
DECODED_CHANNELS = 3


class InputError(Exception):
    """A request the service refuses: the HTTP status (400/401/403/413/415/422, or 503 when overloaded),
    a message for the client and extra response headers (``Retry-After`` with a 503)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


class Instance(BaseModel):
    """One image: base64 bytes (``b64``) or a storage URI (``uri``), exactly one of them."""

    model_config = ConfigDict(extra="forbid")
    b64: str | None = Field(None, description="Base64 of the JPEG or PNG bytes.")
    uri: str | None = Field(None, description="Storage URI (path, file://, az://, s3://) of the image.")


class InputData(BaseModel):
    """Azure ML style table: one column ``image``; each row base64 (or a one-element list)."""

    model_config = ConfigDict(extra="allow")
    columns: list[str] = Field(default_factory=lambda: ["image"])
    index: list[Any] | None = None
    data: list[str | list[str]]


class ScoreRequest(BaseModel):
    """JSON body of ``POST /score`` and of ``POST /invocations`` with ``application/json``."""

    model_config = ConfigDict(extra="forbid")
    instances: list[Instance | str] | None = Field(
        None, description="TF Serving style: [{'b64': ...} | {'uri': ...} | '<base64>']."
    )
    input_data: InputData | None = Field(None, description="Azure ML style: {'columns': ['image'], 'data': [...]}.")
    score_threshold: float | None = Field(None, ge=0, le=1, description="Minimum score of returned detections.")


class BoxOut(BaseModel):
    """One detection in a response."""

    box: list[float] = Field(description="Normalized [ymin, xmin, ymax, xmax] in [0, 1].")
    box_pixels: list[float] = Field(description="[ymin, xmin, ymax, xmax] in pixels of the input image.")
    class_id: int = Field(description="1-based label-map id.")
    class_name: str
    score: float


class PredictionOut(BaseModel):
    """Detections of one image, highest score first."""

    width: int
    height: int
    num_detections: int
    detections: list[BoxOut]


class ScoreResponse(BaseModel):
    """Response of ``/score`` and ``/invocations``."""

    model: dict[str, str]
    predictions: list[PredictionOut]


@dataclass
class ImageInput:
    """A validated image: its bytes, size in pixels and where it came from (for capture)."""

    data: bytes
    width: int
    height: int
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def decoded_bytes(self) -> int:
        """Bytes of the decoded image: ``width x height x`` :data:`DECODED_CHANNELS` (uint8)."""
        return self.width * self.height * DECODED_CHANNELS


def check_image(
    data: bytes, where: str, max_pixels: int, unsupported_status: int = 422, max_decoded_bytes: int | None = None
) -> ImageInput:
    """Validate JPEG/PNG bytes by their header (Pillow, no full decode) and return an :class:`ImageInput`.

    Every size check is on the header, before anything decodes the pixels: a 35 KB PNG of 6000 x 6000
    grayscale pixels decodes to 108 MB of RGB.

    Raises :class:`InputError`: 422 (or ``unsupported_status``) when not a JPEG/PNG, 413 when larger
    than ``max_pixels`` or when its decoded size (:attr:`ImageInput.decoded_bytes`) exceeds
    ``max_decoded_bytes`` (what is left of the request's budget; None: no budget).
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise InputError(422, f"{where}: empty image")
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format
            width, height = img.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise InputError(unsupported_status, f"{where}: not a readable JPEG or PNG image ({type(e).__name__})") from None
    if fmt not in ALLOWED_FORMATS:
        raise InputError(unsupported_status, f"{where}: image format {fmt} not supported (JPEG or PNG)")
    if width <= 0 or height <= 0:
        raise InputError(422, f"{where}: image has no pixels")
    if width * height > max_pixels:
        raise InputError(413, f"{where}: image {width}x{height} exceeds {max_pixels} pixels")
    img = ImageInput(data, width, height)
    if max_decoded_bytes is not None and img.decoded_bytes > max_decoded_bytes:
        raise InputError(
            413,
            f"{where}: image {width}x{height} decodes to {img.decoded_bytes} bytes ({DECODED_CHANNELS} channels), "
            f"more than the {max_decoded_bytes} bytes left of the request's decoded-size limit",
        )
    return img


def decode_b64(text: str, where: str) -> bytes:
    """Strict base64 (standard alphabet, optional ``data:...;base64,`` prefix); 422 when invalid."""
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(422, f"{where}: invalid base64") from None


def _uri_allowed(uri: str, prefixes: list[str]) -> bool:
    if not prefixes:
        return False
    if "://" not in uri or uri.startswith("file://"):
        path = uri.removeprefix("file://")
        real = os.path.realpath(path)
        for p in prefixes:
            if "://" in p and not p.startswith("file://"):
                continue
            base = os.path.realpath(p.removeprefix("file://"))
            if real == base or real.startswith(base.rstrip(os.sep) + os.sep):
                return True
        return False
    scheme, rest = uri.split("://", 1)
    norm = posixpath.normpath("/" + rest).lstrip("/")
    if norm != rest.rstrip("/") or ".." in rest.split("/"):
        return False
    for p in prefixes:
        if p.startswith(f"{scheme}://"):
            prest = p.split("://", 1)[1].rstrip("/")
            if rest == prest or rest.startswith(prest + "/"):
                return True
    return False


def read_uri(uri: str, prefixes: list[str], max_bytes: int, where: str) -> bytes:
    """Read an image from a storage URI under one of ``prefixes`` (blocking; call in a thread).

    Raises :class:`InputError`: 403 when the URI is outside the allowed prefixes (or URI input is
    disabled), 422 when it does not exist or cannot be read, 413 when larger than ``max_bytes``.
    """
    from training import storage

    if not isinstance(uri, str) or not uri or "\x00" in uri:
        raise InputError(422, f"{where}: empty or invalid uri")
    if uri.startswith("file://"):  # RFC 8089: percent-encoded absolute path
        from urllib.parse import unquote, urlparse

        uri = unquote(urlparse(uri).path)
    if not _uri_allowed(uri, prefixes):
        raise InputError(403, f"{where}: uri {uri!r} is not under an allowed input prefix")
    try:
        fs, path = storage.filesystem(uri)
        info = fs.info(path)
        if info.get("type") == "directory":
            raise InputError(422, f"{where}: {uri!r} is a folder, not an image")
        size = info.get("size") or 0
        if size > max_bytes:
            raise InputError(413, f"{where}: {uri!r} has {size} bytes, more than {max_bytes}")
        with fs.open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(422, f"{where}: {uri!r} does not exist") from None
    except Exception as e:  # noqa: BLE001 - any storage failure is reported as a bad input URI
        raise InputError(422, f"{where}: cannot read {uri!r} ({type(e).__name__})") from None
    if len(data) > max_bytes:
        raise InputError(413, f"{where}: {uri!r} is larger than {max_bytes} bytes")
    return data


def collect(req: ScoreRequest, max_images: int) -> list[tuple[str, str, str]]:
    """Flatten a request into ``(where, kind, value)`` with kind ``b64`` or ``uri``; 422 if none or too many."""
    items: list[tuple[str, str, str]] = []
    if req.instances is not None and req.input_data is not None:
        raise InputError(422, "give either 'instances' or 'input_data', not both")
    if req.instances is not None:
        for i, inst in enumerate(req.instances):
            where = f"instances[{i}]"
            if isinstance(inst, str):
                items.append((where, "b64", inst))
            elif (inst.b64 is None) == (inst.uri is None):
                raise InputError(422, f"{where}: give exactly one of 'b64' or 'uri'")
            elif inst.b64 is not None:
                items.append((where, "b64", inst.b64))
            else:
                items.append((where, "uri", inst.uri or ""))
    elif req.input_data is not None:
        if req.input_data.columns != ["image"]:
            raise InputError(422, "input_data.columns must be ['image']")
        for i, row in enumerate(req.input_data.data):
            where = f"input_data.data[{i}]"
            if isinstance(row, list):
                if len(row) != 1:
                    raise InputError(422, f"{where}: a row must hold exactly one image")
                row = row[0]
            items.append((where, "b64", row))
    if not items:
        raise InputError(422, "no images in the request ('instances' or 'input_data.data')")
    if len(items) > max_images:
        raise InputError(422, f"{len(items)} images in one request; at most {max_images}")
    return items
