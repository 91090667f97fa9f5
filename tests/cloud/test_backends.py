"""Backend lookup, the local backend's dry run and ``detops finish`` (in-process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.backends import BACKENDS, SubmitOptions, get_backend
from training.errors import GateError, NotFoundError


def test_lookup_lists_known_backends():
    assert set(BACKENDS) == {"local", "azureml", "sagemaker"}
    assert {get_backend(n).name for n in BACKENDS} == set(BACKENDS)
    with pytest.raises(NotFoundError, match="Did you mean 'azureml'.*Known: azureml, local, sagemaker"):
        get_backend("azureml2")


def test_cloud_sdks_not_imported_by_training():
    import subprocess
    import sys

    code = ("import sys, training.backends, training.backends.azureml, training.backends.sagemaker, training.storage;"
            "bad=[m for m in sys.modules if m.startswith(('azure.ai','boto3','botocore','sagemaker'))]; print(bad)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_local_dry_run_writes_resolved_config(tmp_path, monkeypatch):
    monkeypatch.setenv("DETOPS_DATASETS", str(tmp_path / "data sets"))
    root = Path(__file__).resolve().parents[2]
    sub = get_backend("local").submit(SubmitOptions(root / "configs" / "bccd.yaml", ["train.steps=7"], dry_run=True,
                                                    out_dir=tmp_path))
    assert sub.status == "planned" and "/bccd/runs/" in sub.run_url
    cfg = json.loads(Path(sub.specs["run_config"]).read_text())
    assert cfg["train"]["steps"] == 7 and cfg["data"]["path"].startswith(str(tmp_path / "data sets"))


def _run_folder(tmp_path: Path, stages: list[str]) -> Path:
    run = tmp_path / "a run"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"id": "r1", "status": "running",
                                              "stages": {s: {"status": "complete"} for s in stages}}))
    return run


def test_finish_marks_complete_only_after_all_stages(tmp_path):
    from typer.testing import CliRunner

    from detops.cli import app

    partial = _run_folder(tmp_path / "p", ["prepare", "train"])
    r = CliRunner().invoke(app, ["finish", "--run-dir", str(partial)])
    assert isinstance(r.exception, GateError) and "evaluate, export" in str(r.exception)
    assert json.loads((partial / "run.json").read_text())["status"] == "running"

    done = _run_folder(tmp_path / "d", ["prepare", "train", "evaluate", "export"])
    r = CliRunner().invoke(app, ["finish", "--run-dir", str(done)])
    assert r.exit_code == 0, r.output
    assert json.loads((done / "run.json").read_text())["status"] == "complete"
