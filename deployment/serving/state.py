"""Typed application state of the scoring service and the startup/shutdown of what it holds."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI

from deployment.serving.batching import MicroBatcher, tune_batch_size
from deployment.serving.capture import DataCapture
from deployment.serving.inputs import InputError
from deployment.serving.metrics import Metrics
from deployment.serving.model import Detection, ImageDecodeError
from deployment.serving.runtime import ModelRunner, ThreadPlan, load_model
from deployment.serving.settings import ServingSettings

log = logging.getLogger("detops.serving")


class Admission:
    """The concurrency limit of the scoring routes: at most ``limit`` requests inside at once.

    ``with admission:`` in a route handler (on the event loop, so a plain counter is safe) raises
    :class:`~deployment.serving.inputs.InputError` 503 with ``Retry-After`` when ``limit`` requests are
    already inside: an overloaded service answers at once instead of queueing work it cannot do in time.
    """

    def __init__(self, limit: int, retry_after_s: int) -> None:
        self.limit = limit
        self.retry_after = {"Retry-After": str(retry_after_s)}
        self.active = 0

    def overloaded(self, what: str) -> InputError:
        """The 503 :class:`InputError` (with ``Retry-After``) of an overload, ``what`` saying which limit."""
        return InputError(503, f"service overloaded ({what}); retry later", self.retry_after)

    def __enter__(self) -> None:
        if self.active >= self.limit:
            raise self.overloaded(f"{self.active} requests in progress, the limit")
        self.active += 1

    def __exit__(self, *exc: object) -> None:
        self.active -= 1


@dataclass
class ServingState:
    """Everything one app instance serves with (``app.state.serving``).

    ``model``, ``batcher`` and ``capture`` are None until startup (``lifespan``) has built them;
    ``api_keys`` are the accepted keys as bytes (compared in constant time); ``batch_rates`` are the
    images/s per batch size that startup measured (empty when tuning is off); ``admission`` the
    concurrency limit of the scoring routes.
    """

    settings: ServingSettings
    metrics: Metrics
    plan: ThreadPlan
    api_keys: list[bytes] = field(default_factory=list)
    model: ModelRunner | None = None
    batcher: MicroBatcher | None = None
    capture: DataCapture | None = None
    batch_rates: dict[int, float] = field(default_factory=dict)
    admission: Admission = field(default_factory=lambda: Admission(32, 1))

    @property
    def ready(self) -> bool:
        """The model is loaded and warmed up, and the batcher runs."""
        return self.model is not None and self.model.ready and self.batcher is not None

    def predict(self, images: list[bytes]) -> list[list[Detection] | ImageDecodeError]:
        """One model call on a batch (run by the batcher in a worker thread), timed in the metrics."""
        assert self.model is not None
        t0 = time.perf_counter()
        out = self.model.predict(images)
        self.metrics.model_latency.observe(time.perf_counter() - t0)
        return out


def _new_capture(state: ServingState) -> DataCapture | None:
    s = state.settings
    if not s.capture_uri or s.capture_sample_rate <= 0:
        return None
    return DataCapture(
        s.capture_uri,
        s.capture_sample_rate,
        s.model_name,
        s.model_version,
        s.capture_flush_records,
        s.capture_flush_seconds,
        on_event=lambda kind, n: state.metrics.capture.labels(kind).inc(n),
        max_buffer_bytes=s.capture_max_buffer_bytes,
    )


def synthetic_jpeg(width: int = 640, height: int = 480, seed: int = 0) -> bytes:
    """A JPEG of seeded uniform noise, ``width`` x ``height`` pixels (BCCD's size): decoding it costs
    what a real photo of that size costs, unlike a flat image."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _preload_image_plugins() -> None:
    """Import Pillow's common format plugins now, not in the first request's header check
    (:func:`deployment.serving.inputs.check_image`), where it cost 0.3-0.6 s on 2 cores."""
    from PIL import Image

    Image.preinit()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load and warm up the model (unless given), start the micro-batcher and capture; stop them after."""
    state: ServingState = app.state.serving
    s = state.settings
    if state.model is None:
        state.model = await asyncio.to_thread(load_model, s, state.plan)
    if not state.model.ready:
        await asyncio.to_thread(state.model.warmup)
    await asyncio.to_thread(_preload_image_plugins)
    max_batch = s.max_batch_size
    if s.batch_size_tuning and max_batch > 1:
        max_batch, state.batch_rates = await asyncio.to_thread(
            tune_batch_size, state.model.predict, synthetic_jpeg(), s.max_batch_size
        )
        for b, r in state.batch_rates.items():
            state.metrics.tuned_images_per_second.labels(str(b)).set(r)
        rates = ", ".join(f"{b}: {r:.2f}" for b, r in state.batch_rates.items())
        log.info("batch size %d of at most %d (images/s by batch size: %s)", max_batch, s.max_batch_size, rates)
    state.metrics.max_batch_size.set(max_batch)
    batcher = MicroBatcher(
        state.predict,
        max_batch,
        s.batch_wait_ms / 1000.0,
        on_batch=lambda n, _s: state.metrics.batch_size.observe(n),
        workers=state.plan.workers,
        max_queue=s.max_queued_images,
    )
    await batcher.start()
    state.batcher = batcher
    state.capture = _new_capture(state)
    try:
        yield
    finally:
        await batcher.stop()
        state.model.close()
        if state.capture is not None:
            await asyncio.to_thread(state.capture.close)
