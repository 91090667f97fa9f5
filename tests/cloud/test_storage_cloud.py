"""A whole run folder round-trips through Azurite (az://, adlfs) and moto S3 (s3://, s3fs).

``training.storage.publish_run`` uploads every artifact first and ``run.json`` last; publishing
again uploads nothing new; an upload interrupted midway never leaves a run marked complete.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from training import storage
from training.errors import ConfigError, NotFoundError

pytestmark = pytest.mark.integration


def make_run_folder(root: Path, status: str = "complete") -> Path:
    """A small run folder in the contract layout (docs/contracts.md), with spaces and binary files."""
    run = root / "local run 01"
    rng = __import__("random").Random(3)
    files = {
        "data/annotations/train.json": json.dumps({"images": [{"id": 1, "file_name": "a b.jpg"}]}).encode(),
        "data/annotations/val.json": b'{"images": []}',
        "data/quality_report.json": b'{"errors": 0}',
        "tf_records/train-00000-of-00002.tfrecord": bytes(rng.getrandbits(8) for _ in range(70_000)),
        "tf_records/train-00001-of-00002.tfrecord": bytes(rng.getrandbits(8) for _ in range(5_000)),
        "tf_records/label_map.pbtxt": b"item {\n  id: 1\n  name: 'RBC'\n}\n",
        "model_config/experiment.yaml": b"task:\n  model: {num_classes: 4}\n",
        "model_training/checkpoints/ckpt-3.index": b"\x00\x01index",
        "model_training/checkpoints/ckpt-3.data-00000-of-00001": bytes(range(256)) * 40,
        "model_training/checkpoints/checkpoint": b'model_checkpoint_path: "ckpt-3"\n',
        "evaluation/test/metrics.json": json.dumps({"AP": 0.25, "AP50": 0.5}).encode(),
        "export/saved_model/saved_model.pb": b"\x08\x01pb",
        "export/saved_model/variables/variables.index": b"vi",
        "export/model.tflite": b"TFL3" + bytes(300),
        "export/notes with spaces.txt": b"ok\n",
    }
    for rel, data in files.items():
        p = run / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    manifest = {"id": "20261122T120000-abc123", "project": "bccd", "status": status, "stages": {"prepare": "complete"}}
    (run / "run.json").write_text(json.dumps(manifest))
    return run


def local_tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def remote_tree(url: str) -> dict[str, bytes]:
    fs, root = storage.filesystem(url)
    root = root.rstrip("/")
    fs.invalidate_cache()
    return {p[len(root) + 1 :]: fs.cat_file(p) for p in sorted(fs.find(root))}


def _check_roundtrip(run: Path, url: str, tmp_path: Path, monkeypatch) -> None:
    counts = storage.publish_run(str(run), url)
    expected = local_tree(run)
    assert counts == {"uploaded": len(expected), "skipped": 0}
    got = remote_tree(url)
    assert got == expected
    assert storage.read_json(storage.join(url, "run.json"))["status"] == "complete"

    # idempotent: a second publish re-sends only run.json (content MD5 matches for everything else)
    again = storage.publish_run(str(run), url)
    assert again == {"uploaded": 1, "skipped": len(expected) - 1}
    assert remote_tree(url) == expected

    # and back: the lead's Run.open downloads a remote run into a staging folder
    from training.pipeline import Run

    monkeypatch.setenv("DETOPS_HOME", str(tmp_path / "detops home"))
    opened = Run.open(url)
    assert opened.manifest["status"] == "complete"
    assert local_tree(Path(opened.local_dir)) == expected


def _interrupt_after(monkeypatch, url: str, n_files: int) -> list[str]:
    """Make the filesystem behind ``url`` fail on the (n+1)-th ``put_file``; return the paths sent."""
    fs, _ = storage.filesystem(url)
    assert storage.filesystem(url)[0] is fs  # fsspec's instance cache: publish_run gets this object
    sent: list[str] = []
    real = fs.put_file

    def flaky(lpath, rpath, *args, **kwargs):
        if len(sent) >= n_files:
            raise ConnectionError("network dropped (simulated)")
        sent.append(rpath)
        return real(lpath, rpath, *args, **kwargs)

    monkeypatch.setattr(fs, "put_file", flaky)
    return sent


def _check_interruption(run: Path, url: str, monkeypatch) -> None:
    total = len(local_tree(run))
    # 1) first publish dies midway: no run.json at all
    with monkeypatch.context() as m:
        sent = _interrupt_after(m, url, 5)
        with pytest.raises(ConnectionError, match=r"network dropped \(simulated\)"):
            storage.publish_run(str(run), url)
    assert len(sent) == 5
    assert not storage.exists(storage.join(url, "run.json"))
    # 2) a retry completes the run
    storage.publish_run(str(run), url)
    assert storage.read_json(storage.join(url, "run.json"))["status"] == "complete"
    # 3) re-publishing changed artifacts of a complete run, interrupted: run.json no longer says complete
    (run / "evaluation/test/metrics.json").write_text(json.dumps({"AP": 0.3, "AP50": 0.6}))
    (run / "export/model.tflite").write_bytes(b"TFL3" + bytes(301))
    with monkeypatch.context() as m:
        sent = _interrupt_after(m, url, 1)
        with pytest.raises(ConnectionError, match=r"network dropped \(simulated\)"):
            storage.publish_run(str(run), url)
    assert len(sent) == 1
    remote_manifest = storage.read_json(storage.join(url, "run.json"))
    assert remote_manifest["status"] == "running"
    assert remote_manifest["id"] == "20261122T120000-abc123"
    # 4) and the retry sends only what changed, then run.json
    counts = storage.publish_run(str(run), url)
    assert counts["uploaded"] <= 3 and counts["skipped"] >= total - 3
    assert remote_tree(url) == local_tree(run)
    assert storage.read_json(storage.join(url, "run.json"))["status"] == "complete"


def _new_container(conn: str) -> str:
    from azure.storage.blob import BlobServiceClient

    name = f"runs-{secrets.token_hex(4)}"
    BlobServiceClient.from_connection_string(conn).create_container(name)
    return name


def test_run_folder_roundtrip_azurite(azure_env, tmp_path, monkeypatch):
    container = _new_container(azure_env)
    url = f"az://{container}/bccd/runs/20261122T120000-abc123"
    _check_roundtrip(make_run_folder(tmp_path), url, tmp_path, monkeypatch)


def test_run_folder_roundtrip_moto_s3(aws_env, tmp_path, monkeypatch):
    import boto3

    boto3.client("s3").create_bucket(Bucket="detops-runs")
    url = "s3://detops-runs/bccd/runs/20261122T120000-abc123"
    _check_roundtrip(make_run_folder(tmp_path), url, tmp_path, monkeypatch)


def test_interrupted_upload_never_complete_azurite(azure_env, tmp_path, monkeypatch):
    url = f"az://{_new_container(azure_env)}/bccd/runs/r1"
    _check_interruption(make_run_folder(tmp_path), url, monkeypatch)


def test_interrupted_upload_never_complete_moto_s3(aws_env, tmp_path, monkeypatch):
    import boto3

    boto3.client("s3").create_bucket(Bucket="detops-runs")
    _check_interruption(make_run_folder(tmp_path), "s3://detops-runs/bccd/runs/r1", monkeypatch)


def test_missing_container_is_a_clear_error(azure_env, tmp_path):
    with pytest.raises(NotFoundError, match="bucket or container must exist"):
        storage.publish_run(str(make_run_folder(tmp_path)), "az://no-such-container/bccd/runs/r1")


def test_publish_status_override_and_errors(tmp_path):
    run = make_run_folder(tmp_path, status="running")
    dest = tmp_path / "datastore root" / "run"
    storage.publish_run(str(run), str(dest), status="failed")
    assert json.loads((dest / "run.json").read_text())["status"] == "failed"
    assert json.loads((run / "run.json").read_text())["status"] == "running"  # local manifest untouched
    assert local_tree(dest).keys() == local_tree(run).keys()
    with pytest.raises(ConfigError, match="complete"):
        storage.publish_run(str(run), str(dest), status="done")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NotFoundError, match="run.json missing"):
        storage.publish_run(str(empty), str(dest))
