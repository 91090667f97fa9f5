"""The SageMaker container side: hyperparameters and channels -> a local run folder in the contract layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.backends.sagemaker_container import assemble_run, channel_dir, read_hyperparameters
from training.errors import ConfigError, NotFoundError


def _fake_opt_ml(root: Path, with_checkpoint: bool = True) -> dict[str, str]:
    data = root / "input" / "data"
    files = {
        "train/train-00000-of-00002.tfrecord": b"t0", "train/train-00001-of-00002.tfrecord": b"t1",
        "validation/val-00000-of-00001.tfrecord": b"v0",
        "label/label_map.pbtxt": b"item {\n  id: 1\n  name: 'car'\n}\n",
        "config/experiment.yaml": b"task:\n  init_checkpoint: s3://bucket/pretrained/ckpt-0\n",
    }
    if with_checkpoint:
        files.update({"checkpoint/backbone/ckpt-7.index": b"i", "checkpoint/backbone/ckpt-7.data-00000-of-00001": b"d"})
    for rel, b in files.items():
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_bytes(b)
    (root / "input" / "config").mkdir(parents=True)
    return {"DETOPS_SM_ROOT": str(root)}


def _fake_run(root: Path) -> str:
    run = root / "datastore run"
    (run / "data" / "annotations").mkdir(parents=True)
    (run / "data" / "annotations" / "test.json").write_text('{"images": []}')
    (run / "tf_records").mkdir()
    (run / "tf_records" / "test-00000-of-00001.tfrecord").write_bytes(b"x0")
    (run / "tf_records" / "train-00000-of-00002.tfrecord").write_bytes(b"t0")
    (run / "run.json").write_text(json.dumps({"id": "r1", "status": "running", "stages": {"prepare": {}}}))
    return str(run)


def test_assemble_run_from_channels(tmp_path):
    import yaml

    env = _fake_opt_ml(tmp_path / "opt ml")
    run = assemble_run(_fake_run(tmp_path), tmp_path / "staging", env)
    names = sorted(p.name for p in (run / "tf_records").iterdir())
    assert names == ["label_map.pbtxt", "test-00000-of-00001.tfrecord", "train-00000-of-00002.tfrecord",
                     "train-00001-of-00002.tfrecord", "val-00000-of-00001.tfrecord"]
    # train/val come from the channels (links), not from a second download
    assert (run / "tf_records" / "train-00001-of-00002.tfrecord").resolve().parent == channel_dir("train", env)
    assert (run / "data" / "annotations" / "test.json").exists()
    assert json.loads((run / "run.json").read_text())["id"] == "r1"
    exp = yaml.safe_load((run / "model_config" / "experiment.yaml").read_text())
    assert exp["task"]["init_checkpoint"] == str(channel_dir("checkpoint", env) / "backbone" / "ckpt-7")
    ckpts = run / "model_training" / "checkpoints"
    assert ckpts.is_symlink() and ckpts.resolve() == (tmp_path / "opt ml" / "checkpoints").resolve()
    # the channel's own file is untouched
    assert "s3://bucket" in (channel_dir("config", env) / "experiment.yaml").read_text()


def test_assemble_run_errors(tmp_path):
    env = _fake_opt_ml(tmp_path / "opt ml", with_checkpoint=False)
    with pytest.raises(NotFoundError, match="run.json missing"):
        assemble_run(str(tmp_path / "nowhere"), tmp_path / "s1", env)
    for f in (channel_dir("validation", env)).iterdir():
        f.unlink()
    with pytest.raises(ConfigError, match="channel 'validation'"):
        assemble_run(_fake_run(tmp_path), tmp_path / "s2", env)


def test_hyperparameters(tmp_path):
    p = tmp_path / "hyperparameters.json"
    p.write_text(json.dumps({"num_steps": "1000", "quantize": "True", "run_url": "s3://b/r"}))
    assert read_hyperparameters(p) == {"num_steps": 1000, "quantize": True, "run_url": "s3://b/r"}
    for bad, needle in (({"num_steps": "ten", "quantize": "True", "run_url": "s3://b/r"}, "num_steps"),
                        ({"num_steps": "5", "quantize": "maybe", "run_url": "s3://b/r"}, "quantize"),
                        ({"num_steps": "5", "quantize": "False"}, "run_url")):
        p.write_text(json.dumps(bad))
        with pytest.raises(ConfigError, match=needle):
            read_hyperparameters(p)


def test_metric_definitions_match_the_trainer_progress_line():
    """Fast check on the real formatter (the slow container test matches the whole job log)."""
    import re

    import numpy as np

    from training.backends.sagemaker import METRIC_DEFINITIONS
    from training.train import _Progress

    lines: list[str] = []
    p = _Progress(total=480, start=0, printer=lines.append)
    p.step_fn = lambda: 40
    p({"total_loss": np.float32(0.8123), "learning_rate": np.float32(0.01)})
    regex = {d["Name"]: d["Regex"] for d in METRIC_DEFINITIONS}
    assert [float(x) for x in re.findall(regex["train:loss"], lines[0])] == [0.8123]
    assert re.findall(regex["train:steps_per_second"], lines[0])
    assert re.findall(regex["test:AP50"], "evaluation test: AP=0.2620 AP50=0.5310 AP75=0.2400") == ["0.5310"]
    assert re.findall(regex["test:AP"], "evaluation test: AP=-1.0000 AP50=0.5310 AP75=0.2400") == ["-1.0000"]
    assert not re.findall(regex["val:AP50"], "evaluation test: AP=0.2620 AP50=0.5310 AP75=0.2400")
    assert len(METRIC_DEFINITIONS) <= 40 and all(len(d["Regex"]) <= 500 for d in METRIC_DEFINITIONS)  # SageMaker limits


def test_resourceconfig_gives_the_hosts_and_any_exception_writes_the_failure_file(tmp_path, monkeypatch):
    from training.backends import sagemaker_container as sc

    root = tmp_path / "opt ml"
    (root / "input" / "config").mkdir(parents=True)
    env = {"DETOPS_SM_ROOT": str(root)}
    assert sc.hosts_from_resourceconfig(env) == {}  # no file: a local run
    (root / "input" / "config" / "resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-2", "hosts": ["algo-1", "algo-2"], "network_interface_name": "eth0"}))
    assert sc.hosts_from_resourceconfig(env) == {"SM_HOSTS": '["algo-1", "algo-2"]', "SM_CURRENT_HOST": "algo-2"}
    assert sc.hosts_from_resourceconfig({**env, "SM_HOSTS": '["x"]'}) == {}  # the toolkit's variables win

    # a non-detops exception inside the stages: failure file, run marked failed in the datastore, exit 1
    run = tmp_path / "datastore run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"id": "r1", "status": "running", "stages": {}}))
    (root / "input" / "config" / "hyperparameters.json").write_text(
        json.dumps({"num_steps": "2", "quantize": "False", "run_url": str(run)}))

    def boom(*a, **k):
        raise RuntimeError("ResourceExhaustedError: OOM when allocating tensor")

    monkeypatch.setattr(sc, "assemble_run", boom)
    worker_env = {**env, "DETOPS_HOME": str(tmp_path / "home")}
    assert sc.main(worker_env) == 1
    assert "RuntimeError: ResourceExhaustedError" in (root / "output" / "failure").read_text()
    assert worker_env["SM_CURRENT_HOST"] == "algo-2"  # resourceconfig.json was read into the environment first
    assert json.loads((run / "run.json").read_text())["status"] == "running"  # a worker never writes run.json
    (root / "input" / "config" / "resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-1", "hosts": ["algo-1", "algo-2"]}))
    assert sc.main({**env, "DETOPS_HOME": str(tmp_path / "home")}) == 1
    assert json.loads((run / "run.json").read_text())["status"] == "failed"  # the chief marks the run failed


def test_a_worker_waits_until_the_chief_has_finished_the_run(tmp_path, monkeypatch):
    """The non-chief keeps polling run.json (so its heartbeats go on) until the chief marks it done."""
    import json
    import time

    from training.backends import sagemaker_container

    run = tmp_path / "run"
    run.mkdir()
    statuses = iter([None, "running", "running", "complete"])  # None: run.json not published yet
    polls = []

    def fake_sleep(_s):
        polls.append(_s)
        status = next(statuses)
        if status:
            (run / "run.json").write_text(json.dumps({"status": status}))

    monkeypatch.setattr(time, "sleep", fake_sleep)
    assert sagemaker_container.wait_for_chief(str(run), poll_s=0.5) == "complete"
    assert len(polls) == 4  # missing, running, running, then complete ends the wait


def test_a_worker_stops_waiting_when_the_run_failed_or_the_wait_times_out(tmp_path, monkeypatch):
    import json
    import time

    from training.backends import sagemaker_container
    from training.errors import DetopsError

    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"status": "failed"}))
    assert sagemaker_container.wait_for_chief(str(run)) == "failed"
    (run / "run.json").write_text(json.dumps({"status": "running"}))
    monkeypatch.setattr(time, "sleep", lambda _s: None)
    with pytest.raises(DetopsError, match="did not finish the run within 0 s"):
        sagemaker_container.wait_for_chief(str(run), timeout_s=0)
