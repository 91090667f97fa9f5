"""The scoring service: payload formats, auth, every error code, probes, metrics, URIs, batching."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient

from deployment.serving.app import create_app

API_KEY = "test-key-0123456789abcdef"
OTHER_KEY = "other-key-abcdefghij012345"
H = {"X-API-Key": API_KEY}


@pytest.fixture
def inputs_dir(tmp_path):
    d = tmp_path / "input images"
    d.mkdir()
    return d


@pytest.fixture
def client(fake_saved_model, fake_detector, make_settings, inputs_dir):
    settings = make_settings(
        fake_saved_model, max_images=4, max_body_bytes=2_000_000, input_uri_prefixes=str(inputs_dir)
    )
    with TestClient(create_app(settings, detector=fake_detector)) as c:
        yield c


def _png(w=40, h=30, color=(200, 10, 10)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, format="PNG")
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _in_process(detector, image: bytes) -> dict:
    """The SavedModel called directly (serving_default), first num_detections rows."""
    import tensorflow as tf

    out = detector._fn(encoded_images=tf.constant([image]))
    n = int(out["num_detections"][0])
    return {
        "boxes": out["detection_boxes"][0][:n].numpy(),
        "pixels": out["detection_boxes_pixels"][0][:n].numpy(),
        "classes": out["detection_classes"][0][:n].numpy().tolist(),
        "names": [x.decode() for x in out["detection_class_names"][0][:n].numpy()],
        "scores": out["detection_scores"][0][:n].numpy(),
    }


def _assert_same(pred: dict, ref: dict) -> None:
    dets = pred["detections"]
    assert pred["num_detections"] == len(dets) == len(ref["scores"]) > 0
    np.testing.assert_allclose([d["box"] for d in dets], ref["boxes"], atol=1e-6)
    np.testing.assert_allclose([d["box_pixels"] for d in dets], ref["pixels"], atol=1e-4)
    np.testing.assert_allclose([d["score"] for d in dets], ref["scores"], atol=1e-6)
    assert [d["class_id"] for d in dets] == ref["classes"]
    assert [d["class_name"] for d in dets] == ref["names"]


# -- formats -------------------------------------------------------------------------------------------


def test_invocations_raw_jpeg_matches_in_process(client, fake_detector, bccd_image):
    r = client.post("/invocations", content=bccd_image, headers={**H, "Content-Type": "image/jpeg"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == {"name": "bccd", "version": "7"}
    pred = body["predictions"][0]
    assert (pred["width"], pred["height"]) == (640, 480)
    _assert_same(pred, _in_process(fake_detector, bccd_image))


@pytest.mark.parametrize("ctype", ["image/png", "application/x-image"])
def test_invocations_png_and_x_image(client, fake_detector, ctype):
    img = _png(color=(10, 220, 30))
    r = client.post("/invocations", content=img, headers={**H, "Content-Type": ctype})
    assert r.status_code == 200, r.text
    _assert_same(r.json()["predictions"][0], _in_process(fake_detector, img))


def test_score_azureml_style_batch(client, fake_detector, bccd_image):
    imgs = [bccd_image, _png(color=(0, 0, 250)), _png(80, 20, (90, 90, 90))]
    payload = {
        "input_data": {
            "columns": ["image"],
            "index": [0, 1, 2],
            "data": [_b64(imgs[0]), [_b64(imgs[1])], _b64(imgs[2])],
        }
    }
    r = client.post("/score", json=payload, headers=H)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert len(preds) == 3
    for pred, img in zip(preds, imgs):
        _assert_same(pred, _in_process(fake_detector, img))
    assert preds[0]["detections"] != preds[1]["detections"]


def test_json_instances_on_invocations_and_threshold(client, fake_detector, bccd_image):
    payload = {"instances": [{"b64": _b64(bccd_image)}], "score_threshold": 0.5}
    r = client.post("/invocations", json=payload, headers=H)
    assert r.status_code == 200
    dets = r.json()["predictions"][0]["detections"]
    ref = _in_process(fake_detector, bccd_image)
    assert len(dets) == int((ref["scores"] >= 0.5).sum()) > 0
    assert all(d["score"] >= 0.5 for d in dets)
    r2 = client.post(
        "/invocations?score_threshold=0.6", content=bccd_image, headers={**H, "Content-Type": "image/jpeg"}
    )
    assert len(r2.json()["predictions"][0]["detections"]) == int((ref["scores"] >= 0.6).sum())


def test_data_url_prefix_accepted(client):
    r = client.post("/score", json={"instances": ["data:image/png;base64," + _b64(_png())]}, headers=H)
    assert r.status_code == 200


def test_storage_uri_input(client, fake_detector, inputs_dir, bccd_image):
    p = inputs_dir / "blood cells 1.jpg"
    p.write_bytes(bccd_image)
    for uri in (str(p), p.as_uri()):
        r = client.post("/score", json={"instances": [{"uri": uri}, {"b64": _b64(_png())}]}, headers=H)
        assert r.status_code == 200, r.text
        _assert_same(r.json()["predictions"][0], _in_process(fake_detector, bccd_image))


# -- auth ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-Key": "wrong-key-0123456789abcdef"},
        {"X-API-Key": API_KEY[:-1]},
        {"Authorization": f"Basic {API_KEY}"},
        {"X-API-Key": ""},
    ],
)
def test_401_without_valid_key(client, headers):
    for method, path, kw in (
        ("post", "/score", {"json": {"instances": [_b64(_png())]}}),
        ("post", "/invocations", {"content": _png(), "headers": {"Content-Type": "image/png"}}),
        ("get", "/metrics", {}),
    ):
        kw = dict(kw)
        kw["headers"] = {**kw.get("headers", {}), **headers}
        r = getattr(client, method)(path, **kw)
        assert r.status_code == 401, (path, r.text)


def test_bearer_and_second_key_accepted(client):
    for headers in ({"Authorization": f"Bearer {API_KEY}"}, {"X-API-Key": OTHER_KEY}):
        assert client.post("/score", json={"instances": [_b64(_png())]}, headers=headers).status_code == 200


def test_key_check_compares_every_key_in_constant_time(monkeypatch):
    """Behaviour of the key check: exact match only, and every key compared with hmac.compare_digest
    (no early exit on a match, so timing does not tell which key matched or how much of it)."""
    import hmac

    from deployment.serving import dependencies as deps

    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    keys = [API_KEY.encode(), OTHER_KEY.encode()]
    for good in (API_KEY, OTHER_KEY):
        calls.clear()
        assert deps.key_is_valid(good, keys)
        assert [k for _, k in calls] == keys  # both keys compared, whichever matched
    for bad in (None, "", API_KEY[:-1], API_KEY + "x", API_KEY.upper(), " " + API_KEY, "\u00e9" * 25, "\udcff" * 20):
        calls.clear()
        assert not deps.key_is_valid(bad, keys), bad
        assert len(calls) == (0 if bad is None else 2)
    assert not deps.key_is_valid(API_KEY, [])  # no keys configured: nothing is accepted


def test_probes_and_docs_need_no_key(client):
    assert client.get("/ping").status_code == 200
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"ready": True, "model": {"name": "bccd", "version": "7"}}
    spec = client.get("/openapi.json").json()
    assert {"/score", "/invocations", "/ping", "/healthz", "/readyz", "/metrics"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text and "bccd v7" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN


# -- error codes -----------------------------------------------------------------------------------------


def test_413_oversized_body(client):
    big = b"\xff\xd8" + b"0" * 2_100_000
    r = client.post("/invocations", content=big, headers={**H, "Content-Type": "image/jpeg"})
    assert r.status_code == 413

    def chunks():  # no Content-Length: the limit applies while streaming
        for _ in range(30):
            yield b"0" * 100_000

    r = client.post("/invocations", content=chunks(), headers={**H, "Content-Type": "image/jpeg"})
    assert r.status_code == 413
    r = client.post("/score", content=chunks(), headers={**H, "Content-Type": "application/json"})
    assert r.status_code == 413


def test_413_too_many_pixels(fake_saved_model, fake_detector, make_settings):
    settings = make_settings(fake_saved_model, max_pixels=1000)
    with TestClient(create_app(settings, detector=fake_detector)) as c:
        r = c.post("/invocations", content=_png(40, 30), headers={**H, "Content-Type": "image/png"})
        assert r.status_code == 413


@pytest.mark.parametrize("ctype", ["text/plain", "application/octet-stream", "", "image/gif", "multipart/form-data"])
def test_415_unsupported_content_type(client, ctype):
    r = client.post("/invocations", content=_png(), headers={**H, "Content-Type": ctype})
    assert r.status_code == 415


def test_415_image_that_is_not_jpeg_or_png(client):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (10, 10)).save(buf, format="GIF")
    assert (
        client.post("/invocations", content=buf.getvalue(), headers={**H, "Content-Type": "image/jpeg"}).status_code
        == 415
    )
    assert (
        client.post("/invocations", content=b"not an image", headers={**H, "Content-Type": "image/png"}).status_code
        == 415
    )


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"instances": []},
        {"instances": [{"b64": "!!!notbase64"}]},
        {"instances": [{"b64": _b64(b"plain text, not an image")}]},
        {"instances": [{"b64": _b64(b"x"), "uri": "/tmp/x.jpg"}]},
        {"instances": [{}]},
        {"instances": [{"b64": 5}]},
        {"instances": "abc"},
        {"instances": [{"b64": "aGVsbG8="}], "unknown": 1},
        {"input_data": {"columns": ["pixels"], "data": ["aGVsbG8="]}},
        {"input_data": {"columns": ["image"], "data": [["a", "b"]]}},
        {"input_data": {"columns": ["image"]}},
        {"instances": ["aGVsbG8="], "input_data": {"columns": ["image"], "data": ["aGVsbG8="]}},
        {"instances": ["aGVsbG8="], "score_threshold": 2},
        {"instances": [_b64(_png())] * 5},
        [1, 2, 3],
        "just a string",
    ],
)
def test_422_malformed_json(client, payload):
    for path in ("/score", "/invocations"):
        r = client.post(path, json=payload, headers=H)
        assert r.status_code == 422, (path, payload, r.text)
        assert "detail" in r.json()


def test_422_invalid_json_text(client):
    for path in ("/score", "/invocations"):
        r = client.post(path, content=b"{not json", headers={**H, "Content-Type": "application/json"})
        assert r.status_code == 422


def test_422_truncated_jpeg_decoded_by_model(client, bccd_image):
    r = client.post("/invocations", content=bccd_image[:3000], headers={**H, "Content-Type": "image/jpeg"})
    assert r.status_code == 422
    assert "could not decode" in r.json()["detail"]


def test_bad_image_in_batch_does_not_fail_concurrent_requests(client, fake_detector, bccd_image):
    import concurrent.futures

    def post(data):
        return client.post("/invocations", content=data, headers={**H, "Content-Type": "image/jpeg"}).status_code

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        codes = list(
            pool.map(post, [bccd_image, bccd_image[:3000], bccd_image, bccd_image[:3000], bccd_image, bccd_image])
        )
    assert codes == [200, 422, 200, 422, 200, 200]


def test_uri_errors(client, inputs_dir, tmp_path, bccd_image):
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(bccd_image)
    (inputs_dir / "sub").mkdir()
    cases = {
        str(outside): 403,
        "/etc/passwd": 403,
        str(inputs_dir / ".." / "outside.jpg"): 403,
        "s3://bucket/key.jpg": 403,
        str(inputs_dir / "missing.jpg"): 422,
        str(inputs_dir / "sub"): 422,
        "": 422,
    }
    for uri, code in cases.items():
        r = client.post("/score", json={"instances": [{"uri": uri}]}, headers=H)
        assert r.status_code == code, (uri, r.text)


def test_uri_input_disabled_by_default(fake_saved_model, fake_detector, make_settings, tmp_path, bccd_image):
    p = tmp_path / "a.jpg"
    p.write_bytes(bccd_image)
    with TestClient(create_app(make_settings(fake_saved_model), detector=fake_detector)) as c:
        assert c.post("/score", json={"instances": [{"uri": str(p)}]}, headers=H).status_code == 403


def test_404_and_405_are_client_errors(client):
    assert client.get("/nope").status_code == 404
    assert client.get("/score").status_code == 405


# -- metrics -----------------------------------------------------------------------------------------------


def test_prometheus_metrics(client, bccd_image):
    client.post("/invocations", content=bccd_image, headers={**H, "Content-Type": "image/jpeg"})
    client.post("/invocations", content=b"x", headers={**H, "Content-Type": "text/plain"})
    client.post("/score", json={})
    text = client.get("/metrics", headers=H).text
    assert 'detops_requests_total{method="POST",route="/invocations",status="200"} 1.0' in text
    assert 'detops_request_errors_total{route="/invocations",status="415"} 1.0' in text
    assert 'detops_request_errors_total{route="/score",status="401"} 1.0' in text
    assert 'detops_request_latency_seconds_bucket{le="0.5",route="/invocations"}' in text
    assert 'detops_model_info{model_name="bccd",model_version="7"} 1.0' in text
    assert "detops_images_scored_total 1.0" in text
    assert "detops_batch_size_count" in text


# -- settings ----------------------------------------------------------------------------------------------


def test_settings_require_a_key(monkeypatch, fake_saved_model):
    from deployment.serving.settings import ServingSettings, load_settings
    from training.errors import ConfigError

    assert ServingSettings.model_fields["auth"].default == "key"  # keys required unless DETOPS_AUTH=platform
    with pytest.raises(ConfigError, match="DETOPS_API_KEYS"):
        load_settings(model_dir=fake_saved_model)
    with pytest.raises(ConfigError, match="at least 16"):
        load_settings(model_dir=fake_saved_model, api_keys="short")
    monkeypatch.setenv("DETOPS_API_KEYS", f"{API_KEY}, {OTHER_KEY}")
    monkeypatch.setenv("DETOPS_MODEL_DIR", fake_saved_model)
    s = load_settings()
    assert [k.get_secret_value() for k in s.api_keys] == [API_KEY, OTHER_KEY]
    assert API_KEY not in repr(s)
    monkeypatch.delenv("DETOPS_API_KEYS")
    monkeypatch.setenv("DETOPS_API_KEY", API_KEY)
    assert [k.get_secret_value() for k in load_settings().api_keys] == [API_KEY]
