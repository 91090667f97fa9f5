"""Micro-batching and request/response capture."""

from __future__ import annotations

import asyncio
import base64
import glob
import json
import os
import random
import threading

from fastapi.testclient import TestClient

from deployment.serving.batching import MicroBatcher
from deployment.serving.capture import DataCapture

API_KEY = "test-key-0123456789abcdef"
H = {"X-API-Key": API_KEY}
GUARD_S = 120  # only a hang guard: every wait below ends on an event or a counter


async def _until(predicate) -> None:
    """Yield to the event loop until ``predicate()`` holds (a state wait, no clock)."""
    while not predicate():
        await asyncio.sleep(0)


def test_concurrent_submissions_grouped_into_batches():
    sizes = []
    gate = threading.Event()  # holds the first model call until every item is queued

    def slow_double(items):
        sizes.append(len(items))
        assert gate.wait(GUARD_S), "test gate never opened"
        return [x * 2 for x in items]

    async def main():
        b = MicroBatcher(slow_double, max_batch_size=8)
        await b.start()
        first = asyncio.create_task(b.submit(0))
        await _until(lambda: len(sizes) == 1)  # the first call runs (alone: nothing else was queued)
        rest = [asyncio.create_task(b.submit(i)) for i in range(1, 20)]
        await _until(lambda: b._queue.qsize() == 19)
        gate.set()
        results = await asyncio.gather(first, *rest)
        await b.stop()
        return results

    results = asyncio.run(main())
    assert results == [i * 2 for i in range(20)]
    assert sum(sizes) == 20
    assert max(sizes) == 8  # grouped, never above the limit
    assert len(sizes) <= 4  # 20 items in at most 1 + ceil(19/8) calls
    assert sizes == [1, 8, 8, 3]  # the 19 waiting items went in full batches


def test_lone_request_waits_for_nothing(monkeypatch):
    import deployment.serving.batching as batching

    sizes, waits = [], []
    real_wait_for = asyncio.wait_for

    def counting_wait_for(aw, timeout):
        waits.append(timeout)
        return real_wait_for(aw, timeout)

    monkeypatch.setattr(batching.asyncio, "wait_for", counting_wait_for)

    def ident(items):
        sizes.append(len(items))
        return items

    async def main():
        b = MicroBatcher(ident, max_batch_size=8, max_wait_s=0.0)
        await b.start()
        out = await real_wait_for(b.submit(1), GUARD_S)  # a lone item completes with nobody else coming
        await b.stop()
        return out

    assert asyncio.run(main()) == 1
    assert sizes == [1]
    assert waits == []  # max_wait_s=0: the batcher never waited for stragglers


def test_max_wait_collects_stragglers():
    sizes = []

    def f(items):
        sizes.append(len(items))
        return items

    async def main():
        # a long wait that is never used up: the batch runs when the fourth straggler fills it
        b = MicroBatcher(f, max_batch_size=4, max_wait_s=3600)
        await b.start()
        tasks = []
        for i in range(4):  # each arrives only after the worker took the previous one off the queue
            tasks.append(asyncio.create_task(b.submit(i)))
            await _until(lambda: b._queue.qsize() == 0)
        out = await asyncio.gather(*tasks)
        await b.stop()
        return out

    assert asyncio.run(main()) == [0, 1, 2, 3]
    assert sizes == [4]


def test_batch_failure_reaches_every_waiter_and_worker_survives():
    calls = {"n": 0}

    def f(items):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return items

    async def main():
        b = MicroBatcher(f, max_batch_size=4)
        await b.start()
        first = await asyncio.gather(*(b.submit(i) for i in range(3)), return_exceptions=True)
        second = await b.submit(9)
        await b.stop()
        return first, second

    first, second = asyncio.run(main())
    assert all(isinstance(x, RuntimeError) for x in first)
    assert second == 9


def test_several_workers_run_batches_concurrently_and_stop():
    active, peak, calls, lock = [0], [0], [0], threading.Lock()
    together = threading.Barrier(3)  # the first three calls meet here: only possible when 3 run at once

    def f(items):
        with lock:
            active[0] += 1
            calls[0] += 1
            first_three = calls[0] <= 3
            peak[0] = max(peak[0], active[0])
        if first_three:
            together.wait(GUARD_S)  # BrokenBarrierError (test fails) if the workers ran one after another
        with lock:
            active[0] -= 1
        return items

    async def main():
        b = MicroBatcher(f, max_batch_size=2, workers=3)
        await b.start()
        out = await asyncio.gather(*(b.submit(i) for i in range(12)))
        await asyncio.wait_for(b.stop(), 5)
        return out

    assert asyncio.run(main()) == list(range(12))
    assert peak[0] == 3


def test_stop_finishes_queued_items():
    calls = []
    gate = threading.Event()

    def f(items):
        calls.append(len(items))
        assert gate.wait(GUARD_S), "test gate never opened"
        return items

    async def main():
        b = MicroBatcher(f, max_batch_size=2, workers=2)
        await b.start()
        tasks = [asyncio.create_task(b.submit(i)) for i in range(7)]
        await _until(lambda: len(calls) == 2)  # both workers busy, the other items queued
        queued = 7 - sum(calls)
        stopping = asyncio.create_task(b.stop())
        await _until(lambda: b._queue.qsize() == queued + 2)  # the stop markers sit behind queued items
        gate.set()
        await stopping
        return await asyncio.gather(*tasks)

    assert asyncio.run(main()) == list(range(7))
    assert sum(calls) == 7


# -- capture --------------------------------------------------------------------------------------------


def _lines(root) -> list[dict]:
    files = sorted(glob.glob(os.path.join(str(root), "**", "*.jsonl"), recursive=True))
    return [json.loads(line) for f in files for line in open(f, encoding="utf-8")]


def test_capture_writes_jsonl_and_flushes_on_close(tmp_path):
    root = tmp_path / "capture root"
    events = []
    cap = DataCapture(
        str(root), 1.0, "bccd", "3", flush_records=1000, flush_seconds=3600, on_event=lambda k, n: events.append((k, n))
    )
    for i in range(25):
        assert cap.capture(f"r{i}", "/score", "application/json", [{"bytes": bytes([i]) * 3}], {"i": i})
    assert _lines(root) == []  # nothing written on the request path, nothing due yet
    cap.close()
    lines = _lines(root)
    assert [line["request_id"] for line in lines] == [f"r{i}" for i in range(25)]
    assert base64.b64decode(lines[3]["input"]["images"][0]["b64"]) == b"\x03\x03\x03"
    assert lines[3]["output"] == {"i": 3} and lines[3]["model"] == {"name": "bccd", "version": "3"}
    assert cap.files_written[0].startswith(str(root / "bccd" / "3"))
    assert ("written", 25) in events
    assert not cap.capture("late", "/score", "x", [], {})  # closed


def test_capture_flushes_by_count_and_time(tmp_path):
    written = []
    flushed = threading.Semaphore(0)

    def on_event(kind, n):
        if kind == "written":
            written.append(n)
            flushed.release()

    # by count: flush_seconds is far away, the 10th record triggers the write
    cap = DataCapture(str(tmp_path), 1.0, "m", "1", flush_records=10, flush_seconds=3600, on_event=on_event)
    for i in range(10):
        cap.capture(str(i), "/score", "x", [], {})
    assert flushed.acquire(timeout=GUARD_S)
    assert written == [10] and len(_lines(tmp_path)) == 10
    cap.close()
    # by time: one record, far below flush_records, is written before close
    written.clear()
    timed = DataCapture(str(tmp_path / "t"), 1.0, "m", "1", flush_records=1000, flush_seconds=0.05, on_event=on_event)
    timed.capture("t", "/score", "x", [], {})
    assert flushed.acquire(timeout=GUARD_S)
    assert written == [1] and len(_lines(tmp_path / "t")) == 1
    timed.close()
    assert len(cap.files_written) == 1 and len(timed.files_written) == 1


def test_capture_sampling(tmp_path):
    none = DataCapture(str(tmp_path), 0.0, "m", "1")
    assert not any(none.sampled() for _ in range(100))
    none.close()
    cap = DataCapture(str(tmp_path), 0.25, "m", "1", rng=random.Random(0))
    hits = sum(cap.sampled() for _ in range(4000))
    assert 800 < hits < 1200
    cap.close()


def test_capture_write_failure_retried(tmp_path, monkeypatch):
    from training import storage

    real = storage.write_bytes
    fails = {"n": 1}

    def flaky(url, data):
        if fails["n"]:
            fails["n"] -= 1
            raise OSError("disk full")
        return real(url, data)

    monkeypatch.setattr(storage, "write_bytes", flaky)
    events = []
    failed = threading.Event()

    def on_event(kind, n):
        events.append(kind)
        if kind == "error":
            failed.set()

    cap = DataCapture(str(tmp_path), 1.0, "m", "1", flush_records=2, flush_seconds=0.2, on_event=on_event)
    cap.capture("a", "/score", "x", [], {})
    cap.capture("b", "/score", "x", [], {})
    assert failed.wait(GUARD_S)  # the first write failed while the service ran
    cap.close()
    assert "error" in events
    assert [line["request_id"] for line in _lines(tmp_path)] == ["a", "b"]


def test_service_captures_requests_and_loses_nothing_on_stop(
    fake_saved_model, fake_detector, make_settings, tmp_path, bccd_image
):
    from deployment.serving.app import create_app

    root = tmp_path / "datastore" / "capture"
    settings = make_settings(
        fake_saved_model,
        capture_uri=str(root),
        capture_sample_rate=1.0,
        capture_flush_records=1000,
        capture_flush_seconds=3600,
    )
    n = 12
    with TestClient(create_app(settings, detector=fake_detector)) as c:
        for _ in range(n):
            r = c.post("/invocations", content=bccd_image, headers={**H, "Content-Type": "image/jpeg"})
            assert r.status_code == 200
        r = c.post("/score", json={"instances": [{"b64": base64.b64encode(bccd_image).decode()}] * 2}, headers=H)
        last = r.json()
        c.post("/invocations", content=b"junk", headers={**H, "Content-Type": "image/jpeg"})  # 415: not captured
        assert _lines(root) == []  # buffered off the request path
    lines = _lines(root)  # the app stopped cleanly: everything flushed
    assert len(lines) == n + 1
    assert base64.b64decode(lines[0]["input"]["images"][0]["b64"]) == bccd_image
    assert lines[0]["input"]["content_type"] == "image/jpeg" and lines[0]["route"] == "/invocations"
    assert lines[-1]["output"] == last and len(lines[-1]["input"]["images"]) == 2


def test_service_capture_sample_rate_zero_writes_nothing(
    fake_saved_model, fake_detector, make_settings, tmp_path, bccd_image
):
    from deployment.serving.app import create_app

    root = tmp_path / "cap"
    settings = make_settings(fake_saved_model, capture_uri=str(root), capture_sample_rate=0.0)
    with TestClient(create_app(settings, detector=fake_detector)) as c:
        assert (
            c.post("/invocations", content=bccd_image, headers={**H, "Content-Type": "image/jpeg"}).status_code == 200
        )
    assert not root.exists()
