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
