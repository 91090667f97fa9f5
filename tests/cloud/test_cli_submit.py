"""``detops submit --backend azureml|sagemaker --dry-run`` with no cloud credentials at all."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cloud_fakes import gpu_run_config

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], env_extra: dict[str, str] | None = None, tmp_path: Path | None = None):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AZURE_", "AZUREML_", "DETOPS_"))}
    env.update({"AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                "AZURE_CONFIG_DIR": str(tmp_path / "no azure"), "AWS_EC2_METADATA_DISABLED": "true",
                "DETOPS_HOME": str(tmp_path / "home")})
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "detops.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def _json_tail(stdout: str) -> dict:
    start = stdout.index("{")
    return json.loads(stdout[start:])


def test_submit_azureml_dry_run_without_credentials(tmp_path):
    from azure.ai.ml import load_job

    cfg = gpu_run_config(tmp_path, "runs", name="my config.yaml")
    out = tmp_path / "specs out"
    r = _run(["submit", str(cfg), "--backend", "azureml", "--dry-run", "--out", str(out), "--nodes", "2",
              "--set", "train.steps=300"], tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "would create on azureml" in r.stdout
    sub = _json_tail(r.stdout)
    assert sub["status"] == "planned" and sub["details"]["nodes"] == 2
    assert sub["run_url"].startswith("azureml://datastores/workspaceblobstore/paths/bccd/runs/")
    pipeline = load_job(sub["specs"]["pipeline"])
    assert set(pipeline.jobs) == {"prepare", "train", "evaluate", "export"}
    # the order comes from the data: each step reads the previous step's run folder
    assert pipeline.jobs["train"].inputs["run"].path == "${{parent.jobs.prepare.outputs.run}}"
    assert pipeline.jobs["evaluate"].inputs["run"].path == "${{parent.jobs.train.outputs.run}}"
    assert pipeline.jobs["export"].inputs["run"].path == "${{parent.jobs.evaluate.outputs.run}}"
    assert "--set train.steps=300" in pipeline.jobs["prepare"].command
    assert pipeline.jobs["train"].distribution.worker_count == 2


def test_submit_sagemaker_dry_run_without_credentials(tmp_path):
    cfg = gpu_run_config(tmp_path, "s3://detops-ml/runs", name="my config.yaml")
    out = tmp_path / "specs out"
    r = _run(["submit", str(cfg), "--backend", "sagemaker", "--dry-run", "--out", str(out), "--nodes", "2"],
             tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "would create on sagemaker" in r.stdout
    sub = _json_tail(r.stdout)
    assert sub["status"] == "planned"
    req = json.loads(Path(sub["specs"]["training_job"]).read_text())
    assert {c["ChannelName"] for c in req["InputDataConfig"]} == {"train", "validation", "config", "label"}
    assert req["HyperParameters"]["num_steps"] == "6000"  # the GPU preset's default
    assert req["HyperParameters"]["quantize"] == "True"
    assert req["ResourceConfig"]["InstanceCount"] == 2
    assert req["CheckpointConfig"]["S3Uri"].startswith(sub["run_url"])


def test_submit_errors_are_one_line_with_exit_codes(tmp_path):
    cfg = gpu_run_config(tmp_path, "runs", name="my config.yaml")
    r = _run(["submit", str(cfg), "--backend", "sagemakr", "--dry-run"], tmp_path=tmp_path)
    assert r.returncode == 5 and "Did you mean 'sagemaker'" in r.stderr
    r = _run(["submit", str(cfg), "--backend", "sagemaker", "--dry-run"], tmp_path=tmp_path)
    assert r.returncode == 2 and "s3://" in r.stderr  # a local datastore cannot feed SageMaker channels
    # a real submission without settings names the missing variable instead of a traceback
    r = _run(["submit", str(cfg), "--backend", "azureml", "--no-wait"], tmp_path=tmp_path)
    assert r.returncode == 2 and "DETOPS_TRAINING_IMAGE" in r.stderr and "Traceback" not in r.stderr
