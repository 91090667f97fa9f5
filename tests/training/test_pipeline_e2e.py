"""A tiny end-to-end run (fake images, a few steps), the run layout, the exports, and resume."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from training_fakes import make_voc_dataset, tiny_config_tree

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """Run ``detops run`` in-process on a 24-image fake dataset; return the run folder."""
    from detops.cli import main

    base = tmp_path_factory.mktemp("e2e run")
    data = make_voc_dataset(base / "data set", n=24)
    cfg = base / "tiny config.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config_tree(data, base / "store", steps=3)))
    assert main(["run", str(cfg)]) == 0
    runs = glob.glob(str(base / "store" / "tiny" / "runs" / "*"))
    assert len(runs) == 1
    return Path(runs[0])


def test_run_folder_layout(tiny_run: Path):
    expected = [
        "run.json",
        "data/annotations/train.json", "data/annotations/val.json", "data/annotations/test.json",
        "data/quality_report.json", "data/quality_report.txt", "data/split_report.json", "data/split_report.png",
        "tf_records/label_map.pbtxt",
        "model_config/experiment.yaml",
        "evaluation/train/metrics.json", "evaluation/val/metrics.json", "evaluation/test/metrics.json",
        "evaluation/test/per_class_ap.png",
        "export/saved_model/saved_model.pb", "export/model.tflite", "export/model_int8.tflite", "export/parity.json",
        "export/label_map.pbtxt",
    ]
    missing = [p for p in expected if not (tiny_run / p).exists()]
    assert not missing, missing
    for split in ("train", "val", "test"):
        assert glob.glob(str(tiny_run / "tf_records" / f"{split}-*-of-*.tfrecord"))
    assert glob.glob(str(tiny_run / "model_training" / "checkpoints" / "ckpt-3.index"))
    assert glob.glob(str(tiny_run / "model_training" / "tensorboard" / "events.out.tfevents.*"))


def test_manifest_records_inputs_versions_and_status(tiny_run: Path):
    m = json.loads((tiny_run / "run.json").read_text())
    assert m["status"] == "complete"
    assert set(m["stages"]) == {"prepare", "train", "evaluate", "export"}
    assert m["stages"]["train"]["global_step"] == 3
    assert len(m["inputs"]["dataset"]["sha256"]) == 64
    assert m["versions"]["tensorflow"].startswith("2.20")
    assert m["classes"] == ["circle", "square"]
    assert m["config"]["train"]["preset"] == "retinanet_mobilenetv2_fpn_tiny"


def test_metrics_have_every_coco_figure(tiny_run: Path):
    for split in ("train", "val", "test"):
        m = json.loads((tiny_run / "evaluation" / split / "metrics.json").read_text())
        for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"):
            assert -1.0 <= m[k] <= 1.0, (split, k)
        assert set(m["per_class"]) == {"circle", "square"}
        gt = json.loads((tiny_run / "data" / "annotations" / f"{split}.json").read_text())
        assert m["num_images"] == len(gt["images"])


def test_saved_model_signatures(tiny_run: Path):
    import tensorflow as tf

    sm = tf.saved_model.load(str(tiny_run / "export" / "saved_model"))
    assert set(sm.signatures) == {"serving_default", "image_tensor"}
    jpgs = sorted(glob.glob(str(tiny_run.parents[3] / "data set" / "JPEGImages" / "*.jpg")))[:2]
    encoded = tf.constant([open(p, "rb").read() for p in jpgs])
    out = sm.signatures["serving_default"](encoded_images=encoded)
    k = out["detection_scores"].shape[1]
    assert out["detection_boxes"].shape == (2, k, 4) and out["detection_boxes_pixels"].shape == (2, k, 4)
    assert out["detection_class_names"].dtype == tf.string and out["num_detections"].shape == (2,)
    nb = out["detection_boxes"].numpy()
    assert nb.min() >= 0.0 and nb.max() <= 1.0
    # pixels = normalized * (h, w, h, w) of the 80x96 input
    np.testing.assert_allclose(out["detection_boxes_pixels"].numpy(), nb * [80, 96, 80, 96], atol=1e-3)
    images = tf.stack([tf.io.decode_jpeg(e) for e in encoded])
    out2 = sm.signatures["image_tensor"](images=images)
    np.testing.assert_allclose(out2["detection_scores"].numpy(), out["detection_scores"].numpy(), atol=1e-5)


def test_tflite_runs_and_parity_recorded(tiny_run: Path):
    from ai_edge_litert.interpreter import Interpreter

    parity = json.loads((tiny_run / "export" / "parity.json").read_text())
    assert set(parity) >= {"float", "int8", "passed"}
    assert parity["float"]["max_delta"] == 0.01 and parity["int8"]["max_delta"] == 0.03
    for name in ("float", "int8"):
        p = parity[name]
        within = abs(p["delta_AP"]) <= p["max_delta"] and abs(p["delta_AP50"]) <= p["max_delta"]
        assert p["measurable"] == (p["detections_savedmodel"] >= p["min_detections"] == 10)
        assert p["passed"] == (within and p["measurable"])
        assert p["delta_AP50"] == pytest.approx(p["AP50_tflite"] - p["AP50_savedmodel"])
    interp = Interpreter(model_path=str(tiny_run / "export" / "model_int8.tflite"))
    runner = interp.get_signature_runner()
    (name, detail), = runner.get_input_details().items()
    out = runner(**{name: np.zeros(detail["shape"], np.float32)})
    assert {"detection_boxes", "detection_scores", "detection_classes", "num_detections"} <= set(out)


def test_training_resumes_after_a_kill(tiny_run: Path, tmp_path: Path):
    """Kill `detops train` mid-way (SIGKILL); started again, it continues from its last checkpoint."""
    run = tmp_path / "resumed run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("model_training", "evaluation", "export"))
    m = json.loads((run / "run.json").read_text())
    m["stages"] = {"prepare": m["stages"]["prepare"]}
    m["status"] = "running"
    (run / "run.json").write_text(json.dumps(m))
    ckpts = run / "model_training" / "checkpoints"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, "-m", "detops.cli", "train", "--run-dir", str(run)]
    proc = subprocess.Popen([*cmd, "--steps", "100000"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not glob.glob(str(ckpts / "ckpt-2.index")):
            assert proc.poll() is None, "training exited before its second checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.5)
        time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    import tensorflow as tf

    killed_at = int(tf.train.latest_checkpoint(str(ckpts)).rsplit("-", 1)[1])
    assert 2 <= killed_at < 100000
    target = killed_at + 2
    res = subprocess.run([*cmd, "--steps", str(target)], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"resuming from step {killed_at}" in res.stdout
    m = json.loads((run / "run.json").read_text())
    assert m["stages"]["train"]["global_step"] == target
    assert m["stages"]["train"]["steps_run"] == 2
