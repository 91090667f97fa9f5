"""The model runtimes of the scoring service: TFLite behind the same API, the parity gate, the thread plan."""

from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient

from deployment.serving.app import create_app
from training.errors import ConfigError, NotFoundError

API_KEY = "test-key-0123456789abcdef"
H = {"X-API-Key": API_KEY}


@pytest.fixture(scope="module")
def fake_tflite_file(tmp_path_factory) -> str:
    from deployment.testing import make_fake_tflite

    return make_fake_tflite(tmp_path_factory.mktemp("tflite") / "model.tflite")


@pytest.fixture
def export_with(tmp_path, fake_tflite_file):
    """``export_with(parity_passed=...)`` -> an export folder with the fake TFLite models and that verdict."""
    from deployment.testing import add_fake_tflite_export

    def _make(parity_passed=True) -> str:
        return add_fake_tflite_export(tmp_path / "run 1" / "export", parity_passed, tflite_src=fake_tflite_file)

    return _make


@pytest.mark.parametrize("runtime", ["tflite-float", "tflite-int8"])
def test_tflite_runtime_same_routes_and_response_shape(export_with, make_settings, bccd_image, runtime):
    settings = make_settings(export_with(), runtime=runtime)
    with TestClient(create_app(settings)) as c:
        assert c.get("/readyz").json() == {"ready": True, "model": {"name": "bccd", "version": "7"}}
        r = c.post("/invocations", content=bccd_image, headers={**H, "Content-Type": "image/jpeg"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == {"name": "bccd", "version": "7"}
        (pred,) = body["predictions"]
        assert (pred["width"], pred["height"]) == (640, 480)
        dets = pred["detections"]
        assert pred["num_detections"] == len(dets) == 10
        assert set(dets[0]) == {"box", "box_pixels", "class_id", "class_name", "score"}
        scores = [d["score"] for d in dets]
        assert scores == sorted(scores, reverse=True)
        for d in dets:
            assert all(0 <= v <= 1 for v in d["box"])
            ymin, xmin, ymax, xmax = d["box_pixels"]
            assert 0 <= ymin < ymax <= 480 and 0 <= xmin < xmax <= 640
            assert d["class_name"] == ("RBC", "WBC", "Platelets")[d["class_id"] - 1]
            assert d["box"][0] == pytest.approx(ymin / 480, abs=1e-5)
        # the threshold and the JSON route work the same; bad images are client errors
        r2 = c.post("/invocations?score_threshold=0.3", content=bccd_image, headers={**H, "Content-Type": "image/jpeg"})
        assert all(d["score"] >= 0.3 for d in r2.json()["predictions"][0]["detections"])
        bad = c.post("/invocations", content=bccd_image[:3000], headers={**H, "Content-Type": "image/jpeg"})
        assert bad.status_code == 422 and "could not decode" in bad.json()["detail"]
        assert c.post("/invocations", content=bccd_image, headers={"Content-Type": "image/jpeg"}).status_code == 401
        metrics = c.get("/metrics", headers=H).text
        assert f'detops_model_runtime{{runtime="{runtime}"}} 1.0' in metrics


def test_tflite_detections_follow_the_image_content(export_with, make_settings, bccd_image):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (640, 480), (20, 200, 90)).save(buf, format="PNG")
    with TestClient(create_app(make_settings(export_with(), runtime="tflite-float"))) as c:
        outs = [
            c.post("/invocations", content=img, headers={**H, "Content-Type": ctype}).json()["predictions"][0]
            for img, ctype in ((bccd_image, "image/jpeg"), (buf.getvalue(), "image/png"))
        ]
    assert [d["score"] for d in outs[0]["detections"]] != [d["score"] for d in outs[1]["detections"]]


@pytest.mark.parametrize(
    ("verdict", "runtime"),
    [
        (False, "tflite-float"),
        (False, "tflite-int8"),
        ({"float": True, "int8": False}, "tflite-int8"),
        ({"float": False, "int8": True}, "tflite-float"),
    ],
)
def test_failed_parity_refuses_the_tflite_runtime(export_with, make_settings, verdict, runtime):
    from deployment.serving.runtime import load_model

    settings = make_settings(export_with(verdict), runtime=runtime)
    with pytest.raises(ConfigError, match="parity failed"):
        load_model(settings)
    with pytest.raises(ConfigError, match="parity failed"), TestClient(create_app(settings)):
        pass  # the service does not start


def test_passed_variant_served_when_the_other_failed(export_with, make_settings):
    from deployment.serving.runtime import load_model

    model = load_model(make_settings(export_with({"float": True, "int8": False}), runtime="tflite-float"))
    assert model.runtime == "tflite-float"


def test_missing_parity_verdict_or_model_refused(export_with, make_settings, tmp_path):
    from deployment.serving.runtime import load_model

    export = export_with()
    (tmp_path / "run 1" / "export" / "parity.json").unlink()
    with pytest.raises(ConfigError, match=r"no export/parity\.json"):
        load_model(make_settings(export, runtime="tflite-float"))
    export = export_with()
    (tmp_path / "run 1" / "export" / "model_int8.tflite").unlink()
    with pytest.raises(NotFoundError, match=r"model_int8\.tflite"):
        load_model(make_settings(export, runtime="tflite-int8"))


def test_unloadable_tflite_file_is_a_clear_error(export_with, make_settings, tmp_path):
    from deployment.serving.runtime import load_model

    export = export_with()
    (tmp_path / "run 1" / "export" / "model.tflite").write_bytes(b"")  # e.g. copied while being written
    with pytest.raises(ConfigError, match=r"model\.tflite: not a loadable TFLite model"):
        load_model(make_settings(export, runtime="tflite-float"))


def test_saved_model_folder_finds_its_export_files(export_with, make_settings, fake_saved_model, tmp_path):
    """``model_dir`` may name export/saved_model: the TFLite files are looked up next to it."""
    from deployment.serving.runtime import load_model

    export = export_with()
    shutil.copytree(fake_saved_model, f"{export}/saved_model")
    model = load_model(make_settings(f"{export}/saved_model", runtime="tflite-float"))
    model.warmup()
    assert model.ready


def test_unknown_runtime_is_a_settings_error(make_settings):
    with pytest.raises(ConfigError, match="runtime"):
        make_settings("x", runtime="onnx")


def test_thread_plan_from_the_cores(monkeypatch, make_settings):
    from deployment.serving import runtime as rt

    monkeypatch.setattr(rt, "available_cpus", lambda: 8)
    sm = rt.thread_plan(make_settings("x"))
    assert (sm.workers, sm.intra_op, sm.inter_op) == (4, 8, 2)
    tfl = rt.thread_plan(make_settings("x", runtime="tflite-float"))
    assert (tfl.workers, tfl.intra_op) == (8, 1)  # one single-thread interpreter per core
    given = rt.thread_plan(make_settings("x", model_workers=3, intra_op_threads=5, inter_op_threads=1))
    assert (given.workers, given.intra_op, given.inter_op) == (3, 5, 1)
    monkeypatch.setattr(rt, "available_cpus", lambda: 1)
    assert rt.thread_plan(make_settings("x")).workers == 1


def test_available_cpus_honours_the_cgroup_quota(monkeypatch):
    from training import cpus as rt

    monkeypatch.setattr(rt.os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setattr(rt, "_cgroup_quota", lambda: 1.5)
    assert rt.available_cpus() == 2
    monkeypatch.setattr(rt, "_cgroup_quota", lambda: None)
    assert rt.available_cpus() == 16
    monkeypatch.setattr(rt, "_cgroup_quota", lambda: 0.2)
    assert rt.available_cpus() == 1
