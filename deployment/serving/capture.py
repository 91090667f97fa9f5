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
so a clean stop loses nothing. A write that fails is reported in the log and in
``detops_capture_records_total{event="error"}`` and retried later with the same encoded bytes; while the
store fails, records wait in memory up to ``max_buffer_bytes`` (``DETOPS_CAPTURE_MAX_BUFFER_BYTES``), and
those that do not fit are dropped and counted in ``detops_capture_records_total{event="dropped"}``.
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
#: Longest wait between two attempts to write after failures (or ``flush_seconds``, if longer).
MAX_RETRY_SECONDS = 300.0


class DataCapture:
    """Background JSONL writer of a sampled fraction of requests, in bounded memory.

    Args:
        root: datastore folder (local path or fsspec URL).
        sample_rate: fraction in [0, 1] of requests captured (1 = all).
        model_name / model_version: recorded with every line and used in the file path.
        flush_records / flush_seconds: write a file when this many records are buffered, or this long
            after the first buffered one.
        on_event: optional ``on_event(kind, n)`` callback with kind in captured|written|error|dropped.
        max_queue: records waiting for the writer thread; beyond it new records are dropped.
        max_buffer_bytes: bytes held for records not yet written (queued or buffered after a failed
            write), counted as :meth:`cost` at capture and as the encoded line once encoded; a record
            that does not fit is dropped (counted ``dropped``, logged), so a failing store costs at most
            this much memory.

    Each record is encoded once (base64, JSON) when the writer takes it; a failed write is retried with
    the same bytes after ``flush_seconds``, doubling up to :data:`MAX_RETRY_SECONDS`, not on every new
    record. Records still unwritten when :meth:`close` gives up are counted ``dropped`` too.
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
        max_buffer_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.root = root
        self.sample_rate = float(sample_rate)
        self.model_name = model_name
        self.model_version = model_version
        self.flush_records = flush_records
        self.flush_seconds = flush_seconds
        self.on_event = on_event or (lambda kind, n: None)
        self._rng = rng or random.Random()
        self.max_buffer_bytes = max_buffer_bytes
        self._held = 0  # bytes of records captured and neither written nor dropped
        self._lock = threading.Lock()
        self._q: queue.Queue = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name="detops-data-capture", daemon=True)
        self._thread.start()
        self._closed = False
        self.files_written: list[str] = []
        self.write_attempts = 0

    @property
    def held_bytes(self) -> int:
        """Bytes held for records not yet written: at most ``max_buffer_bytes``."""
        return self._held

    @staticmethod
    def cost(inputs: list[dict[str, Any]]) -> int:
        """What a record is charged at capture: its images' base64 size plus 4 KiB for the rest."""
        return sum(4 * ((len(item.get("bytes") or b"") + 2) // 3) for item in inputs) + 4096

    def _hold(self, n: int) -> bool:
        with self._lock:
            if self._held + n > self.max_buffer_bytes:
                return False
            self._held += n
            return True

    def _release(self, n: int) -> None:
        with self._lock:
            self._held -= n

    def sampled(self) -> bool:
        """Draw whether the next request is captured (True with probability ``sample_rate``)."""
        return self.sample_rate >= 1.0 or (self.sample_rate > 0 and self._rng.random() < self.sample_rate)

    def capture(
        self, request_id: str, route: str, content_type: str, inputs: list[dict[str, Any]], output: dict[str, Any]
    ) -> bool:
        """Queue one record (inputs: ``{"bytes": b"..."}`` or ``{"uri": "..."}`` each); never blocks.

        False (and the record counted ``dropped``) when it does not fit in ``max_buffer_bytes`` or the queue.
        """
        if self._closed:
            return False
        cost = self.cost(inputs)
        if not self._hold(cost):
            log.warning("data capture buffer full (%d bytes held); record %s dropped", self._held, request_id)
            self.on_event("dropped", 1)
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
            self._q.put_nowait((record, cost))
        except queue.Full:
            self._release(cost)
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

    def _write(self, lines: list[bytes]) -> bool:
        if not lines:
            return True
        path = self._path()
        self.write_attempts += 1
        try:
            storage.write_bytes(path, b"".join(lines))
        except Exception as e:  # noqa: BLE001 - storage backends raise many types; keep the records
            log.error("data capture write to %s failed (%s); will retry", path, e)
            self.on_event("error", 1)
            return False
        self.files_written.append(path)
        self._release(sum(len(x) for x in lines))
        self.on_event("written", len(lines))
        return True

    def _take(self, item: tuple[dict[str, Any], int], lines: list[bytes]) -> None:
        """Encode a queued record once; its charge becomes the encoded line's size (dropped, counted, when
        that larger size no longer fits)."""
        record, cost = item
        line = self._encode(record).encode()
        with self._lock:
            fits = len(line) <= cost or self._held + len(line) - cost <= self.max_buffer_bytes
            self._held += len(line) - cost if fits else -cost
        if fits:
            lines.append(line)
        else:
            log.warning("data capture buffer full; record %s dropped", record["request_id"])
            self.on_event("dropped", 1)

    def _drop(self, lines: list[bytes]) -> None:
        if lines:
            log.error("data capture stopped with %d records unwritten; they are dropped", len(lines))
            self._release(sum(len(x) for x in lines))
            self.on_event("dropped", len(lines))

    def _run(self) -> None:
        lines: list[bytes] = []
        due: float | None = None  # when the buffered lines are written (or the failed write retried)
        failures = 0
        while True:
            timeout = None if due is None else max(0.0, due - time.monotonic())
            try:
                item = self._q.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is _STOP:
                if not self._write(lines):
                    time.sleep(0.5)
                    if not self._write(lines):
                        self._drop(lines)
                return
            if item is not None:
                self._take(item, lines)
                due = due or time.monotonic() + self.flush_seconds
            now = time.monotonic()
            if (len(lines) >= self.flush_records and not failures) or (due is not None and now >= due):
                if self._write(lines):
                    lines, due, failures = [], None, 0
                else:
                    failures += 1
                    due = now + min(self.flush_seconds * 2 ** (failures - 1), max(self.flush_seconds, MAX_RETRY_SECONDS))

    def close(self, timeout: float = 30.0) -> None:
        """Flush every queued record and stop the writer thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._q.put(_STOP)
        self._thread.join(timeout)
