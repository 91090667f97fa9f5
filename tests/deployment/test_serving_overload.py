"""The scoring service under overload and hostile input (issue 33): the key before the body, the
decoded size before any decode, a concurrency limit and a bounded queue answering 503 with Retry-After,
capture memory bounded while the store fails."""

from __future__ import annotations

import asyncio
import base64
import io
import threading

import httpx
import pytest
from fastapi.testclient import TestClient

from deployment.serving.app import create_app
from deployment.serving.capture import DataCapture

API_KEY = "test-key-0123456789abcdef"
H = {"X-API-Key": API_KEY}
GUARD_S = 120  # only a hang guard: every wait ends on an event or a counter


def _png(w: int, h: int, mode: str = "RGB") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, (w, h)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


class GatedModel:
    """A :class:`~deployment.serving.runtime.ModelRunner` double whose calls wait for ``gate`` (no
    detections); ``images`` counts the images it was called with."""

    name, version, runtime, ready = "gated", "1", "savedmodel", True

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.images = 0

    def warmup(self) -> None:
        """Nothing to warm up."""

    def predict(self, images: list[bytes]) -> list[list]:
        self.images += len(images)
        assert self.gate.wait(GUARD_S), "test gate never opened"
        return [[] for _ in images]

    def close(self) -> None:
        """Nothing to release."""


async def _until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0)


async def _serving(app, body):
    """Run ``body(client)`` against ``app`` with its lifespan (startup, shutdown) around it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            return await body(client)


def _jpeg_request(client, n: int = 1):
    from deployment.serving.state import synthetic_jpeg

    data = base64.b64encode(synthetic_jpeg(64, 48)).decode()
    return client.post("/score", json={"instances": [{"b64": data}] * n}, headers=H)


# -- the key before the body ----------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"{not json", b'{"instances": 5}', b"\xff" * 100])
def test_a_request_without_a_key_gets_401_whatever_its_body(client_app, body):
    for path in ("/score", "/invocations"):
        r = client_app.post(path, content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 401, (path, r.status_code, r.text)
    assert client_app.post("/score", content=b"{not json", headers=H).status_code == 422  # with a key: parsed


@pytest.fixture
def client_app(fake_saved_model, fake_detector, make_settings):
    with TestClient(create_app(make_settings(fake_saved_model), detector=fake_detector)) as c:
        yield c


def test_score_request_schema_stays_in_the_openapi_spec(client_app):
    spec = client_app.get("/openapi.json").json()
    ref = {"$ref": "#/components/schemas/ScoreRequest"}
    for path in ("/score", "/invocations"):
        assert spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"] == ref
        assert "503" in spec["paths"][path]["post"]["responses"]
    schemas = spec["components"]["schemas"]
    assert {"ScoreRequest", "Instance", "InputData"} <= set(schemas)
    assert set(schemas["ScoreRequest"]["properties"]) == {"instances", "input_data", "score_threshold"}


# -- the decoded size, from the header -------------------------------------------------------------------


def test_small_file_that_decodes_huge_gets_413_before_decoding(fake_saved_model, make_settings, client_app):
    bomb = _png(6000, 6000, "L")  # about 35 KB of PNG, 108 MB of decoded RGB
    assert len(bomb) < 200_000
    r = client_app.post("/invocations", content=bomb, headers={**H, "Content-Type": "image/png"})
    assert r.status_code == 413 and "decodes to 108000000 bytes" in r.json()["detail"], r.text
    r = client_app.post("/score", json={"instances": [base64.b64encode(bomb).decode()]}, headers=H)
    assert r.status_code == 413


def test_the_decoded_budget_is_per_request(fake_saved_model, fake_detector, make_settings):
    settings = make_settings(fake_saved_model, max_decoded_bytes=2 * 64 * 48 * 3)
    one = base64.b64encode(_png(64, 48)).decode()
    with TestClient(create_app(settings, detector=fake_detector)) as c:
        assert c.post("/score", json={"instances": [one, one]}, headers=H).status_code == 200
        r = c.post("/score", json={"instances": [one, one, one]}, headers=H)
        assert r.status_code == 413 and r.json()["detail"].startswith("instances[2]: image 64x48 decodes to 9216")


# -- concurrency limit and bounded queue --------------------------------------------------------------------


def test_requests_beyond_the_concurrency_limit_get_503_and_probes_still_answer(fake_saved_model, make_settings):
    model = GatedModel()
    settings = make_settings(fake_saved_model, max_concurrent_requests=2, retry_after_seconds=3, batch_size_tuning=False)
    app = create_app(settings, detector=model)

    async def body(client):
        held = [asyncio.create_task(_jpeg_request(client)) for _ in range(2)]
        await _until(lambda: app.state.serving.admission.active == 2)
        refused = await client.post(
            "/invocations", content=b"never read", headers={**H, "Content-Type": "image/jpeg"}
        )
        probes = [(await client.get(p)).status_code for p in ("/healthz", "/readyz", "/ping")]
        metrics = (await client.get("/metrics", headers=H)).status_code
        model.gate.set()
        done = [r.status_code for r in await asyncio.gather(*held)]
        after = (await _jpeg_request(client)).status_code
        return refused, probes, metrics, done, after

    refused, probes, metrics, done, after = asyncio.run(_serving(app, body))
    assert refused.status_code == 503 and refused.headers["retry-after"] == "3"
    assert "2 requests in progress" in refused.json()["detail"]
    assert probes == [200, 200, 200] and metrics == 200
    assert done == [200, 200] and after == 200  # recovered once the load went


def test_images_beyond_the_queue_bound_get_503_and_none_is_queued(fake_saved_model, make_settings):
    model = GatedModel()
    settings = make_settings(
        fake_saved_model, max_images=2, max_queued_images=2, max_batch_size=1, batch_size_tuning=False
    )
    app = create_app(settings, detector=model)

    async def body(client):
        batcher = app.state.serving.batcher
        first = asyncio.create_task(_jpeg_request(client))
        await _until(lambda: model.images == 1)  # the worker holds it: the queue is empty
        second = asyncio.create_task(_jpeg_request(client, 2))
        await _until(lambda: batcher.queued == 2)
        refused = await _jpeg_request(client)
        queued_after = batcher.queued
        model.gate.set()
        return refused, queued_after, [r.status_code for r in await asyncio.gather(first, second)]

    refused, queued_after, done = asyncio.run(_serving(app, body))
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "2 images wait for the model" in refused.json()["detail"]
    assert queued_after == 2 and done == [200, 200] and model.images == 3


def test_settings_refuse_a_queue_smaller_than_one_request(fake_saved_model, make_settings):
    from training.errors import ConfigError

    with pytest.raises(ConfigError, match="max_queued_images"):
        make_settings(fake_saved_model, max_images=16, max_queued_images=8)


def test_uvicorn_gets_a_connection_limit(monkeypatch):
    import uvicorn

    from deployment.serving.app import run_server

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    run_server(object(), "127.0.0.1", 1)
    monkeypatch.setenv("DETOPS_MAX_CONNECTIONS", "7")
    run_server(object(), "127.0.0.1", 1)
    assert [c["limit_concurrency"] for c in calls] == [512, 7]


# -- capture memory while the store fails -----------------------------------------------------------------


def _failing_store(monkeypatch) -> list[int]:
    from training import storage

    sizes: list[int] = []

    def fail(url, data):
        sizes.append(len(data))
        raise OSError("store unavailable")

    monkeypatch.setattr(storage, "write_bytes", fail)
    return sizes


def test_failing_store_is_retried_after_a_wait_with_records_encoded_once(tmp_path, monkeypatch):
    attempts = _failing_store(monkeypatch)
    encoded = []
    real = DataCapture._encode
    monkeypatch.setattr(DataCapture, "_encode", staticmethod(lambda r: encoded.append(1) or real(r)))
    events: dict[str, int] = {}
    cap = DataCapture(str(tmp_path), 1.0, "m", "1", flush_records=10, flush_seconds=3600,
                      on_event=lambda kind, n: events.__setitem__(kind, events.get(kind, 0) + n))
    for i in range(400):
        assert cap.capture(str(i), "/score", "image/jpeg", [{"bytes": bytes(10_000)}], {"i": i})
    cap.close()
    assert len(attempts) == 3  # the first flush, then twice at close; not once per record after a failure
    assert len(encoded) == 400  # each record encoded once, not once per attempt
    assert sum(attempts) < 3 * 400 * 14_000
    assert events == {"captured": 400, "error": 3, "dropped": 400}  # lost at close: counted, not silent
    assert cap.held_bytes == 0


def test_capture_memory_is_bounded_and_drops_are_counted(tmp_path, monkeypatch):
    _failing_store(monkeypatch)
    events: dict[str, int] = {}
    record = [{"bytes": bytes(10_000)}]
    cap_bytes = 5 * DataCapture.cost(record) + 100
    cap = DataCapture(str(tmp_path), 1.0, "m", "1", flush_records=1000, flush_seconds=3600, max_buffer_bytes=cap_bytes,
                      on_event=lambda kind, n: events.__setitem__(kind, events.get(kind, 0) + n))
    held = []
    for i in range(400):
        cap.capture(str(i), "/score", "image/jpeg", record, {})
        held.append(cap.held_bytes)
    cap.close()
    # 5 records at their capture charge; once encoded (a smaller line) a sixth may fit, never more
    assert 5 <= events["captured"] <= 6 and max(held) <= cap_bytes
    assert events["dropped"] == 400  # refused at capture, then those the store never took: all counted


def test_service_counts_dropped_captures_in_prometheus(fake_saved_model, fake_detector, make_settings, tmp_path,
                                                       monkeypatch, bccd_image):
    _failing_store(monkeypatch)
    cost = DataCapture.cost([{"bytes": bccd_image}])
    settings = make_settings(fake_saved_model, capture_uri=str(tmp_path / "cap"), capture_sample_rate=1.0,
                             capture_flush_records=1000, capture_flush_seconds=3600,
                             capture_max_buffer_bytes=int(2.5 * cost))
    with TestClient(create_app(settings, detector=fake_detector)) as c:
        for _ in range(10):
            r = c.post("/invocations", content=bccd_image, headers={**H, "Content-Type": "image/jpeg"})
            assert r.status_code == 200  # capture trouble never fails a request
        text = c.get("/metrics", headers=H).text
    assert 'detops_capture_records_total{event="captured"} 2.0' in text
    assert 'detops_capture_records_total{event="dropped"} 8.0' in text
