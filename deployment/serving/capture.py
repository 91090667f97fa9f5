"""Request/response capture: a sample of inputs and outputs written as JSONL to the datastore.

The equivalent of Azure ML's model data collector and SageMaker's data capture. Records are queued
by the request handler (no I/O on the request path) and written by one background thread through
:mod:`training.storage` (a local folder, ``az://`` or ``s3://``). Object stores cannot append, so
each flush writes a new file::

    <capture_uri>/<model_name>/<model_version>/YYYY/MM/DD/HH/<YYYYmmddTHHMMSSffffff>-<uuid>.jsonl

One line per captured request::

    {"request_id", "captured_at" (ISO 8601 UTC), "model": {"name", "version"}, "route",
     "input": {"content_type", "images": [{"b64": "<base64 bytes>"} | {"uri": "..."}]},
     "output": {... the response body ...}}

:meth:`DataCapture.close` flushes everything queued and joins the thread (called on service shutdown),
so a clean stop loses nothing. A write that fails is retried at the next flush and reported in the log
and in ``detops_capture_errors_total``.
"""

from __future__ import annotations

import base64
import json
import logging
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from training import storage

log = logging.getLogger("detops.serving.capture")
_STOP = object()


class DataCapture:
    """Background JSONL writer of a sampled fraction of requests.

    Args:
        root: datastore folder (local path or fsspec URL).
        sample_rate: fraction in [0, 1] of requests captured (1 = all).
        model_name / model_version: recorded with every line and used in the file path.
        flush_records / flush_seconds: write a file when this many records are buffered, or this long
            after the first buffered one.
        on_event: optional ``on_event(kind)`` callback with kind in captured|written|error|dropped.
        max_queue: records waiting in memory; beyond it new records are dropped (counted, logged).
    """

    def __init__(
        self,
        root: str,
        sample_rate: float,
        model_name: str,
        model_version: str,
        flush_records: int = 100,
        flush_seconds: float = 5.0,
        on_event: Callable[[str, int], None] | None = None,
        max_queue: int = 10_000,
        rng: random.Random | None = None,
    ) -> None:
        self.root = root
        self.sample_rate = float(sample_rate)
        self.model_name = model_name
        self.model_version = model_version
        self.flush_records = flush_records
        self.flush_seconds = flush_seconds
        self.on_event = on_event or (lambda kind, n: None)
        self._rng = rng or random.Random()
        self._q: queue.Queue = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name="detops-data-capture", daemon=True)
        self._thread.start()
        self._closed = False
        self.files_written: list[str] = []

    def sampled(self) -> bool:
        """Draw whether the next request is captured (True with probability ``sample_rate``)."""
        return self.sample_rate >= 1.0 or (self.sample_rate > 0 and self._rng.random() < self.sample_rate)

    def capture(
        self, request_id: str, route: str, content_type: str, inputs: list[dict[str, Any]], output: dict[str, Any]
    ) -> bool:
        """Queue one record (inputs: ``{"bytes": b"..."}`` or ``{"uri": "..."}`` each); never blocks."""
        if self._closed:
            return False
        # Base64 of the images is left to the writer thread (see _encode): nothing heavy on the request path.
        images = [dict(item) for item in inputs]
        record = {
            "request_id": request_id,
            "captured_at": datetime.now(UTC).isoformat(timespec="microseconds"),
            "model": {"name": self.model_name, "version": self.model_version},
            "route": route,
            "input": {"content_type": content_type, "images": images},
            "output": output,
        }
        try:
            self._q.put_nowait(record)
        except queue.Full:
            log.warning("data capture queue full; record %s dropped", request_id)
            self.on_event("dropped", 1)
            return False
        self.on_event("captured", 1)
        return True

    def _path(self) -> str:
        now = datetime.now(UTC)
        return storage.join(
            self.root,
            self.model_name,
            self.model_version,
            now.strftime("%Y/%m/%d/%H"),
            f"{now.strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}.jsonl",
        )

    @staticmethod
    def _encode(record: dict[str, Any]) -> str:
        images = []
        for item in record["input"]["images"]:
            if "bytes" in item:
                images.append({"b64": base64.b64encode(item["bytes"]).decode("ascii")})
            else:
                images.append({k: v for k, v in item.items() if k != "bytes"})
        line = {**record, "input": {**record["input"], "images": images}}
        return json.dumps(line, default=str) + "\n"

    def _write(self, buf: list[dict[str, Any]]) -> bool:
        if not buf:
            return True
        path = self._path()
        try:
            storage.write_bytes(path, "".join(self._encode(r) for r in buf).encode())
        except Exception as e:  # noqa: BLE001 - storage backends raise many types; keep the records
            log.error("data capture write to %s failed (%s); will retry", path, e)
            self.on_event("error", 1)
            return False
        self.files_written.append(path)
        self.on_event("written", len(buf))
        return True

    def _run(self) -> None:
        buf: list[dict[str, Any]] = []
        first_at: float | None = None
        while True:
            timeout = None if first_at is None else max(0.0, first_at + self.flush_seconds - time.monotonic())
            try:
                item = self._q.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is _STOP:
                if not self._write(buf):
                    time.sleep(0.5)
                    self._write(buf)
                return
            if item is not None:
                buf.append(item)
                first_at = first_at or time.monotonic()
            due = first_at is not None and time.monotonic() - first_at >= self.flush_seconds
            if len(buf) >= self.flush_records or due:
                if self._write(buf):
                    buf = []
                    first_at = None
                else:
                    first_at = time.monotonic()  # retry after another flush interval

    def close(self, timeout: float = 30.0) -> None:
        """Flush every queued record and stop the writer thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._q.put(_STOP)
        self._thread.join(timeout)
