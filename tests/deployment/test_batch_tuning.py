"""Throughput of the scoring service on CPU: startup's batch-size tuning and the TFLite interpreter pool.

Tuning is checked with a fake clock that a fake model advances by a known cost per batch (no wall
clock); the interpreter pool with a barrier that only opens when two images are scored at once.
"""

from __future__ import annotations

import io
import threading

import pytest
from fastapi.testclient import TestClient

from deployment.serving import state as state_module
from deployment.serving.app import create_app
from deployment.serving.batching import candidate_batch_sizes, tune_batch_size
from deployment.serving.model import Detection, ImageDecodeError

API_KEY = "test-key-0123456789abcdef"


class CostClock:
    """A clock that only the fake model moves: each call of ``fn`` costs ``cost(batch size)`` seconds."""

    def __init__(self, cost) -> None:
        self.now = 0.0
        self.cost = cost
        self.batches: list[int] = []

    def __call__(self) -> float:
        return self.now

    def fn(self, items: list) -> list:
        self.batches.append(len(items))
        self.now += self.cost(len(items))
        return [[] for _ in items]


@pytest.mark.parametrize(("max_batch", "sizes"), [(1, [1]), (2, [1, 2]), (6, [1, 2, 4, 6]), (8, [1, 2, 4, 8])])
def test_candidate_batch_sizes(max_batch, sizes):
    assert candidate_batch_sizes(max_batch) == sizes


def test_batches_that_cost_more_per_image_keep_batch_1():
    # per image: 0.34 s alone, 0.53 s in a batch of 8 (the shape of the BCCD SavedModel on 2 cores)
    clock = CostClock(lambda n: n * 0.34 * (1 + 0.08 * (n - 1)))
    best, rates = tune_batch_size(clock.fn, b"img", 8, clock=clock)
    assert best == 1
    assert rates[1] == pytest.approx(1 / 0.34)
    assert rates[8] == pytest.approx(8 / (8 * 0.34 * 1.56))
    assert clock.batches == [1, 1, 2, 2, 4, 4, 8, 8]  # one untimed call, one timed call per size


def test_a_batch_that_pays_is_taken():
    clock = CostClock(lambda n: 0.1 + 0.05 * n)  # a fixed cost per call that batching shares
    best, rates = tune_batch_size(clock.fn, b"img", 8, clock=clock)
    assert best == 8
    assert [round(rates[b], 3) for b in (1, 2, 4, 8)] == [6.667, 10.0, 13.333, 16.0]


@pytest.mark.parametrize(("gain", "best"), [(1.04, 1), (1.06, 2)])
def test_a_bigger_batch_must_gain_more_than_the_tolerance(gain, best):
    clock = CostClock(lambda n: 1.0 if n == 1 else n / gain)  # batch 2 scores `gain` x the images/s of 1
    assert tune_batch_size(clock.fn, b"img", 2, clock=clock)[0] == best


class FakeRunner:
    """A ModelRunner whose batches cost what ``clock`` says; records every batch size it is called with."""

    name, version, runtime = "bccd", "7", "savedmodel"

    def __init__(self, clock: CostClock) -> None:
        self.clock = clock
        self.ready = False

    def warmup(self) -> None:
        self.ready = True

    def predict(self, images: list[bytes]) -> list[list[Detection] | ImageDecodeError]:
        return self.clock.fn(images)

    def close(self) -> None:
        pass


def _metric(text: str, name: str) -> float:
    (line,) = [ln for ln in text.splitlines() if ln.startswith(name + " ")]
    return float(line.split()[1])


@pytest.mark.parametrize(("tuning", "expected"), [(True, 1), (False, 8)])
def test_the_service_batches_at_most_the_tuned_size(monkeypatch, make_settings, tuning, expected):
    clock = CostClock(lambda n: n * 0.34 * (1 + 0.08 * (n - 1)))
    monkeypatch.setattr(
        state_module, "tune_batch_size", lambda fn, item, mb: tune_batch_size(fn, item, mb, clock=clock)
    )
    settings = make_settings("x", batch_size_tuning=tuning, max_batch_size=8)
    app = create_app(settings, FakeRunner(clock))
    with TestClient(app) as c:
        metrics = c.get("/metrics", headers={"X-API-Key": API_KEY}).text
        assert app.state.serving.batcher.max_batch_size == expected
    assert _metric(metrics, "detops_max_batch_size") == expected
    if tuning:
        tuned = _metric(metrics, 'detops_batch_tuning_images_per_second{batch_size="1"}')
        assert tuned == pytest.approx(1 / 0.34)
        assert clock.batches == [1, 1, 2, 2, 4, 4, 8, 8]
    else:
        assert "detops_batch_tuning_images_per_second{" not in metrics
        assert clock.batches == []


def _jpeg(color) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (96, 64), color).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def fake_tflite(tmp_path_factory) -> str:
    from deployment.testing import make_fake_tflite

    return make_fake_tflite(tmp_path_factory.mktemp("tflite") / "model.tflite")


LABELS = {1: "RBC", 2: "WBC", 3: "Platelets"}


def test_a_batch_is_scored_on_every_interpreter_at_once(fake_tflite):
    from deployment.serving.tflite import TFLiteDetector

    det = TFLiteDetector(fake_tflite, LABELS, interpreters=2, threads=1)
    runners = [det._pool.get() for _ in range(2)]
    both = threading.Barrier(2, timeout=60)  # opens only when two invokes run side by side

    def waits_for_the_other(runner):
        def call(**kw):
            both.wait()
            return runner(**kw)

        return call

    for r in runners:
        det._pool.put(waits_for_the_other(r))
    try:
        out = det.predict([_jpeg((200, 40, 40)), _jpeg((40, 200, 40))])
    finally:
        det.close()
    assert not both.broken
    assert all(isinstance(o, list) and len(o) == 10 for o in out)


def test_the_pool_keeps_the_order_and_the_decode_errors_of_a_batch(fake_tflite):
    from deployment.serving.tflite import TFLiteDetector

    images = [_jpeg((200, 40, 40)), b"not an image", _jpeg((40, 200, 40)), _jpeg((40, 40, 200)), _jpeg((90, 90, 90))]
    one = TFLiteDetector(fake_tflite, LABELS, interpreters=1, threads=1)
    pool = TFLiteDetector(fake_tflite, LABELS, interpreters=3, threads=1)
    try:
        alone = [one.predict([img])[0] for img in images]
        batched = pool.predict(images)
    finally:
        pool.close()
    assert isinstance(batched[1], ImageDecodeError) and isinstance(alone[1], ImageDecodeError)
    for a, b in zip(alone[:1] + alone[2:], batched[:1] + batched[2:]):
        assert [d.to_dict() for d in a] == [d.to_dict() for d in b]
    assert [d.score for d in batched[0]] != [d.score for d in batched[2]]  # each slot is its own image
