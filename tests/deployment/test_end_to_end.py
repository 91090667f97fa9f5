"""End to end on BCCD: ``detops run`` -> register (pending) -> approve by another person -> deploy
locally -> score a test image over HTTP, getting the in-process SavedModel's detections.

Also the local target for real on the fake model: deploy, describe, smoke test, rollback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "e2e-key-0123456789abcdefgh"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _compare(http_dets: list[dict], out: dict, i: int = 0) -> None:
    n = int(out["num_detections"][i])
    assert len(http_dets) == n
    np.testing.assert_allclose([d["box"] for d in http_dets], out["detection_boxes"][i][:n].numpy(), atol=1e-5)
    np.testing.assert_allclose([d["score"] for d in http_dets], out["detection_scores"][i][:n].numpy(), atol=1e-5)
    assert [d["class_id"] for d in http_dets] == out["detection_classes"][i][:n].numpy().tolist()
    names = [x.decode() for x in out["detection_class_names"][i][:n].numpy()]
    assert [d["class_name"] for d in http_dets] == names


@pytest.mark.slow
def test_local_target_deploy_smoke_rollback(cli, registry, make_run, model_name, monkeypatch, bccd_image, tmp_path):
    from deployment.targets.local import LocalTarget

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri)
    monkeypatch.setenv("DETOPS_API_KEY", API_KEY)
    monkeypatch.setenv("DETOPS_IDENTITY", "declared")  # one test process plays the CI principal and the reviewer
    port = str(_free_port())
    runs = []
    for _ in range(2):
        run = make_run(real_model=True)
        runs.append(run)
        assert cli("register", "--run-dir", run, "--name", model_name, "--by", "ci-bot")[0] == 0
    assert cli("approve", model_name, "1", "--by", "reviewer", "--comment", "ok")[0] == 0
    assert cli("approve", model_name, "2", "--by", "reviewer", "--comment", "ok")[0] == 0
    target = LocalTarget(port=int(port))
    try:
        for v in ("1", "2"):
            code, out = cli(
                "deploy", "--target", "local", "--name", model_name, "--version", v, "--endpoint", "e2e", "--port", port
            )
            assert code == 0, out
        d = target.describe("e2e")
        assert (d.status, d.model_version) == ("running", "2")
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz").json()
        assert ready == {"ready": True, "model": {"name": model_name, "version": "2"}}
        img = tmp_path / "smoke image.jpg"
        img.write_bytes(bccd_image)
        assert cli("smoke-test", "--url", f"http://127.0.0.1:{port}", "--image", str(img))[0] == 0
        # a release of version 3 that never happened: nothing to roll back, version 2 keeps serving
        code, out = cli("rollback", "--target", "local", "--name", model_name, "--endpoint", "e2e", "--port", port,
                        "--if-serving", "3")
        assert code == 0 and "nothing rolled back" in out, out
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").json()["model"]["version"] == "2"
        code, out = cli("rollback", "--target", "local", "--name", model_name, "--endpoint", "e2e", "--port", port,
                        "--if-serving", "2")
        assert code == 0, out
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").json()["model"]["version"] == "1"

        # a tampered export file: deploy exits 4 naming it before touching the endpoint ...
        variables = next((Path(runs[1]) / "export" / "saved_model" / "variables").glob("*.data-*"))
        variables.write_bytes(variables.read_bytes()[:-1] + bytes([variables.read_bytes()[-1] ^ 1]))
        code, out = cli(
            "deploy", "--target", "local", "--name", model_name, "--version", "2", "--endpoint", "e2e", "--port", port
        )
        assert code == 4 and f"changed: saved_model/variables/{variables.name}" in out, out
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").json()["model"]["version"] == "1"
        # ... and the serving process, started on it anyway, refuses to load it and never becomes ready
        from deployment.registry.approval import ApprovalService
        from training.errors import BackendError

        mv2 = ApprovalService(registry).registry.get_version(model_name, "2")
        other = LocalTarget(port=_free_port(), ready_timeout=600)
        with pytest.raises(BackendError, match="exited with code") as err:
            other.deploy(mv2, "e2e-tampered")
        assert f"changed: saved_model/variables/{variables.name}" in str(err.value)
    finally:
        target.stop("e2e")
    assert target.describe("e2e").status == "stopped"


@pytest.mark.slow
def test_bccd_run_register_approve_deploy_score(cli, shared_datasets, tmp_path, monkeypatch):
    import tensorflow as tf

    datastore = tmp_path / "data store"
    home = tmp_path / "detops home"
    env = dict(os.environ, DETOPS_DATASETS=str(shared_datasets), DETOPS_DATASTORE=str(datastore), DETOPS_HOME=str(home))
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("MLFLOW_TRACKING_URI", None)
    steps = os.environ.get("DETOPS_E2E_STEPS", "20")
    size = os.environ.get("DETOPS_E2E_IMAGE_SIZE", "256")  # a multiple of 2**max_level (128)
    # A few steps leave every score near the head's prior (0.01): a low score threshold keeps
    # detections in the export so that comparing them is not comparing two empty lists. Such a model
    # is under the quality floor (it learnt nothing yet); this test is about the plumbing, so its
    # floor is 0 (gate.min_ap50, gate.min_class_ap50).
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "detops.cli",
            "run",
            str(ROOT / "configs" / "bccd.yaml"),
            "--set",
            f"train.steps={steps}",
            "--set",
            f"train.image_size={size}",
            "--set",
            "export.calibration_steps=2",
            "--set",
            "train.overrides.task.model.detection_generator.pre_nms_score_threshold=0.005",
            "--set",
            "gate.min_ap50=0",
            "--set",
            "gate.min_class_ap50=0",
        ],
        check=False,
        env=env,
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = sorted((datastore / "bccd" / "runs").iterdir())
    assert len(runs) == 1
    run = str(runs[0])

    monkeypatch.setenv("DETOPS_HOME", str(home))
    monkeypatch.setenv("DETOPS_API_KEY", API_KEY)
    from training import tracking

    assert tracking.find_run(run) is not None  # `detops run` logged the run to the default MLflow store

    monkeypatch.setenv("DETOPS_IDENTITY", "declared")  # one test process plays the CI principal and the reviewer
    code, out = cli("register", "--run-dir", run, "--name", "bccd", "--by", "ci-bot")
    assert code == 0 and "version 1: PendingManualApproval" in out, out
    assert cli("deploy", "--target", "local", "--name", "bccd", "--version", "1", "--dry-run")[0] == 4
    assert cli("approve", "bccd", "1", "--by", "ci-bot", "--comment", "self")[0] == 4
    code, out = cli("approve", "bccd", "1", "--by", "reviewer@example.org", "--comment", "BCCD e2e")
    assert code == 0, out

    from deployment.targets.local import LocalTarget

    port = _free_port()
    target = LocalTarget(port=port)
    try:
        code, out = cli("deploy", "--target", "local", "--name", "bccd", "--version", "1", "--port", str(port))
        assert code == 0, out
        test_ids = (shared_datasets / "bccd" / "BCCD" / "ImageSets" / "Main" / "test.txt").read_text().split()
        image = (shared_datasets / "bccd" / "BCCD" / "JPEGImages" / f"{test_ids[0]}.jpg").read_bytes()
        r = httpx.post(
            f"http://127.0.0.1:{port}/invocations",
            content=image,
            headers={"Content-Type": "image/jpeg", "X-API-Key": API_KEY},
            timeout=120,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == {"name": "bccd", "version": "1"}
        fn = tf.saved_model.load(str(Path(run) / "export" / "saved_model")).signatures["serving_default"]
        out = fn(encoded_images=tf.constant([image]))
        assert int(out["num_detections"][0]) > 0
        _compare(body["predictions"][0]["detections"], out)
        print(f"BCCD e2e: {len(body['predictions'][0]['detections'])} detections, same as in-process")
    finally:
        target.stop()
