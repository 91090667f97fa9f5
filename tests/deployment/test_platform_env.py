"""The serving app starts with exactly the environment each deployment target generates.

Per target: the deployment spec's environment variables, plus what the platform itself sets
(Azure ML: ``AZUREML_MODEL_DIR`` with the registered folder nested inside; SageMaker: the model
unpacked into /opt/ml/model, relocated here by ``DETOPS_SM_ROOT``), and nothing else of detops.
The app must become ready (real SavedModel load and warm-up) and score an image on the route the
platform calls (Azure ML ``/score``, SageMaker ``/invocations``) without an app key, because the
platform authenticated the caller (``DETOPS_AUTH=platform``). The key check stays on by default.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from deployment.registry.base import ApprovalStatus, ModelVersion


def _version() -> ModelVersion:
    return ModelVersion(name="bccd", version="3", status=ApprovalStatus.APPROVED, artifact_uri="s3://b/runs/r/export/",
                        registered_by="ci", created_at="2026-12-01T00:00:00Z")


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (80, 60), (200, 40, 40)).save(buf, format="JPEG")
    return buf.getvalue()


def _only(monkeypatch, env: dict[str, str]) -> None:
    for k in list(os.environ):
        if k.startswith(("DETOPS_", "AZUREML_", "SM_")):
            monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)


def _azureml_env(kubernetes: bool) -> dict[str, str]:
    from deployment.targets.azureml import AzureMLTarget

    target = AzureMLTarget(compute="k8s-compute" if kubernetes else "managed")
    dep = target.build_deployment(_version(), "bccd-prod", "blue")
    assert dep.environment.inference_config["scoring_route"]["path"] == "/score"
    return {k: str(v) for k, v in dep.environment_variables.items()}


def _sagemaker_env() -> dict[str, str]:
    from deployment.targets.sagemaker import SageMakerTarget

    req = SageMakerTarget(role_arn="arn:aws:iam::123456789012:role/r", capture_uri="s3://b/capture/").specs(
        _version(), "bccd-prod", "arn:aws:sagemaker:us-east-1:123456789012:model-package/bccd/3", "120000")
    return dict(req["model"]["PrimaryContainer"]["Environment"])


def _start(monkeypatch, env):
    from deployment.serving.app import create_app
    from deployment.serving.settings import load_settings

    _only(monkeypatch, env)
    return TestClient(create_app(load_settings()))


@pytest.mark.parametrize("kubernetes", [False, True], ids=["managed", "kubernetes"])
def test_azureml_online_deployment_env(kubernetes, fake_saved_model, tmp_path, monkeypatch):
    # Azure ML mounts the registered folder (the run's export/) inside AZUREML_MODEL_DIR
    model_dir = tmp_path / "var" / "azureml-app" / "azureml-models" / "bccd" / "3"
    shutil.copytree(fake_saved_model, model_dir / "export" / "saved_model")
    env = {**_azureml_env(kubernetes), "AZUREML_MODEL_DIR": str(model_dir)}
    assert env["DETOPS_AUTH"] == "platform" and "DETOPS_API_KEYS" not in env
    with _start(monkeypatch, env) as c:
        assert c.get("/readyz").status_code == 200
        body = {"input_data": {"columns": ["image"], "data": [base64.b64encode(_jpeg()).decode()]}}
        r = c.post("/score", json=body)  # the endpoint key was checked by Azure ML's front end
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("runtime", ["savedmodel", "tflite-float"])
def test_azureml_nested_registered_folder_is_verified_and_served(runtime, fake_tflite_export, tmp_path, monkeypatch):
    """A registered version carries its artifact digest (DETOPS_MODEL_SHA256 from the deployment spec);
    Azure ML nests the registered export/ (manifest, parity.json, TFLite files) inside AZUREML_MODEL_DIR.
    The app verifies and loads that nested folder, and still refuses it once a file changed."""
    from deployment.registry import artifact

    model_dir = tmp_path / "var" / "azureml-app" / "azureml-models" / "bccd" / "3"
    export = model_dir / "export"
    shutil.copytree(fake_tflite_export, export)
    files = artifact.compute_manifest(str(export))
    (export / artifact.MANIFEST_FILE).write_text(json.dumps(artifact.manifest_document(files)))
    env = {**_azureml_env(False), "AZUREML_MODEL_DIR": str(model_dir), "DETOPS_RUNTIME": runtime,
           "DETOPS_MODEL_SHA256": artifact.manifest_digest(files)}
    with _start(monkeypatch, env) as c:
        assert c.get("/readyz").status_code == 200
        body = {"input_data": {"columns": ["image"], "data": [base64.b64encode(_jpeg()).decode()]}}
        assert c.post("/score", json=body).status_code == 200
    changed = export / ("saved_model/saved_model.pb" if runtime == "savedmodel" else "model.tflite")
    changed.write_bytes(changed.read_bytes() + b"\x00")
    with pytest.raises(artifact.ArtifactIntegrityError, match=f"changed: {changed.relative_to(export)}"):
        with _start(monkeypatch, env):
            pass


def test_sagemaker_model_env(fake_saved_model, tmp_path, monkeypatch):
    opt_ml = tmp_path / "opt" / "ml"
    shutil.copytree(fake_saved_model, opt_ml / "model" / "saved_model")  # model.tar.gz of export/, unpacked
    env = {**_sagemaker_env(), "DETOPS_SM_ROOT": str(opt_ml)}
    assert env["DETOPS_AUTH"] == "platform"
    with _start(monkeypatch, env) as c:
        assert c.get("/ping").status_code == 200
        r = c.post("/invocations", content=_jpeg(), headers={"Content-Type": "application/x-image"})
        assert r.status_code == 200, r.text


def test_key_auth_stays_the_default(fake_saved_model, monkeypatch):
    from deployment.serving.settings import load_settings
    from training.errors import ConfigError

    _only(monkeypatch, {"DETOPS_MODEL_DIR": fake_saved_model})
    with pytest.raises(ConfigError, match="API key is required"):
        load_settings()
    key = "k" * 24
    with _start(monkeypatch, {"DETOPS_MODEL_DIR": fake_saved_model, "DETOPS_API_KEYS": key}) as c:
        body = {"instances": [{"b64": base64.b64encode(_jpeg()).decode()}]}
        assert c.post("/score", json=body).status_code == 401
        assert c.post("/score", json=body, headers={"X-API-Key": key}).status_code == 200


def test_two_nested_models_are_refused(fake_saved_model, tmp_path, monkeypatch):
    from deployment.serving.model import resolve_saved_model
    from training.errors import ConfigError

    for sub in ("a", "b"):
        shutil.copytree(fake_saved_model, tmp_path / "models" / sub / "saved_model")
    with pytest.raises(ConfigError, match="several SavedModels"):
        resolve_saved_model(str(tmp_path / "models"))
    assert resolve_saved_model(str(tmp_path / "models" / "a")) == str(Path(tmp_path / "models" / "a" / "saved_model"))
