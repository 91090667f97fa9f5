"""Fixtures of the deployment tests: a fake SavedModel with the contract's signatures, fake run
folders, an MLflow registry on a temporary SQLite store, the scoring app and a live server."""

from __future__ import annotations

import socket
import threading
import time
import uuid

import pytest

API_KEY = "test-key-0123456789abcdef"
OTHER_KEY = "other-key-abcdefghij012345"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Keep every test's local state (MLflow store, endpoints) out of ~/.detops."""
    home = tmp_path_factory.mktemp("detops home")
    monkeypatch.setenv("DETOPS_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DETOPS_REGISTRY", raising=False)
    monkeypatch.delenv("DETOPS_ALLOW_SELF_APPROVAL", raising=False)
    monkeypatch.delenv("DETOPS_GATE_MARGIN", raising=False)
    monkeypatch.delenv("DETOPS_APPROVALS_URI", raising=False)
    for var in ("DETOPS_API_KEY", "DETOPS_API_KEYS", "DETOPS_MODEL_DIR"):
        monkeypatch.delenv(var, raising=False)
    yield home


@pytest.fixture(scope="session")
def fake_saved_model(tmp_path_factory) -> str:
    """A SavedModel with docs/contracts.md's signatures, in a folder whose path has spaces."""
    from deployment.testing import make_fake_saved_model

    return make_fake_saved_model(tmp_path_factory.mktemp("fake model") / "saved model")


@pytest.fixture(scope="session")
def fake_detector(fake_saved_model):
    """The fake SavedModel loaded and warmed up once for the session."""
    from deployment.serving.model import Detector

    d = Detector(fake_saved_model, "bccd", "7")
    d.warmup()
    return d


@pytest.fixture(scope="session")
def _stub_saved_model(tmp_path_factory) -> str:
    """A folder shaped like a SavedModel (empty saved_model.pb): enough for registry tests, no TensorFlow."""
    d = tmp_path_factory.mktemp("stub model") / "saved_model"
    d.mkdir()
    (d / "saved_model.pb").write_bytes(b"")
    return str(d)


@pytest.fixture
def make_run(tmp_path, request, _stub_saved_model):
    """Factory of complete fake run folders: ``make_run(test_ap=0.3, parity_passed=True, real_model=False)``.

    ``real_model=True`` copies the fake SavedModel (loads TensorFlow); otherwise a stub folder.
    """
    counter = {"n": 0}

    def _make(real_model: bool = False, **kwargs) -> str:
        from deployment.testing import make_fake_run

        counter["n"] += 1
        src = request.getfixturevalue("fake_saved_model") if real_model else _stub_saved_model
        run_dir = tmp_path / "datastore root" / "runs" / f"20261122T120000-run {counter['n']}"
        return make_fake_run(run_dir, saved_model_src=src, **kwargs)

    return _make


@pytest.fixture(scope="session")
def _mlflow_uri(tmp_path_factory) -> str:
    return f"sqlite:///{(tmp_path_factory.mktemp('mlflow store') / 'mlflow.db').as_posix()}"


@pytest.fixture
def registry(_mlflow_uri):
    """An :class:`MlflowRegistry` on a session-wide temporary SQLite store (use unique model names)."""
    from deployment.registry.mlflow import MlflowRegistry

    return MlflowRegistry(tracking_uri=_mlflow_uri)


@pytest.fixture
def model_name() -> str:
    """A model name unique to the test (the registry store is shared by the session)."""
    return f"bccd-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def bccd_image(shared_datasets) -> bytes:
    """JPEG bytes of one real BCCD test image."""
    test_ids = (shared_datasets / "bccd" / "BCCD" / "ImageSets" / "Main" / "test.txt").read_text().split()
    return (shared_datasets / "bccd" / "BCCD" / "JPEGImages" / f"{test_ids[0]}.jpg").read_bytes()


def make_settings(model_dir: str, **overrides):
    """Serving settings for tests (API keys given explicitly, nothing read from a file)."""
    from deployment.serving.settings import load_settings

    values = {"api_keys": f"{API_KEY},{OTHER_KEY}", "model_dir": model_dir, "model_name": "bccd", "model_version": "7"}
    values.update(overrides)
    return load_settings(**values)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn serving an app on 127.0.0.1 in a background thread."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        import httpx

        self.thread.start()
        # Wait on the server's own state, not on a clock: uvicorn sets ``started`` once the lifespan
        # (model load, warm-up) finished and the socket listens; a failed startup ends the thread.
        # The guard only stops a hang; a loaded machine may need minutes to load a model.
        guard = time.monotonic() + 900
        while self.thread.is_alive() and not self.server.started and time.monotonic() < guard:
            time.sleep(0.05)
        if not self.server.started:
            raise RuntimeError("live server did not start (its startup error is logged above)")
        r = httpx.get(f"{self.url}/readyz", timeout=60)
        if r.status_code != 200:
            raise RuntimeError(f"live server started but is not ready: {r.status_code} {r.text[:200]}")
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="session")
def fake_tflite_export(fake_saved_model, tmp_path_factory) -> str:
    """An export folder (path with spaces) with the fake SavedModel, fake TFLite models (float, int8),
    label map and a passed parity.json."""
    import shutil

    from deployment.testing import add_fake_tflite_export

    export = tmp_path_factory.mktemp("fake export") / "export"
    shutil.copytree(fake_saved_model, export / "saved_model")
    return add_fake_tflite_export(export)


@pytest.fixture(scope="session", params=["savedmodel", "tflite-float"])
def live_server(request, fake_saved_model, tmp_path_factory):
    """The scoring app served by uvicorn on 127.0.0.1 for the session, once per runtime: the fake
    SavedModel (loaded once, given to the app), and the fake TFLite float model loaded by the app
    itself through the parity gate."""
    from deployment.serving.app import create_app

    inputs = str(tmp_path_factory.mktemp("inputs"))
    if request.param == "savedmodel":
        settings = make_settings(fake_saved_model, input_uri_prefixes=inputs)
        app = create_app(settings, detector=request.getfixturevalue("fake_detector"))
    else:
        export = request.getfixturevalue("fake_tflite_export")
        settings = make_settings(export, input_uri_prefixes=inputs, runtime=request.param)
        app = create_app(settings)
    with LiveServer(app) as server:
        server.runtime = request.param
        yield server


@pytest.fixture
def cli():
    """Run ``detops`` in-process: ``cli("models", "list") -> (exit_code, output)``."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from rich.console import Console

    from detops import cli as cli_mod
    from detops import cli_deploy

    def _run(*args: str) -> tuple[int, str]:
        buf = io.StringIO()
        old_out, old_err = cli_deploy.out, cli_mod.err
        cli_deploy.out = Console(file=buf, soft_wrap=True, width=200)
        cli_mod.err = Console(file=buf, soft_wrap=True, width=200)
        code = 0
        try:
            with redirect_stdout(buf), redirect_stderr(buf):
                cli_mod.main(list(args))
        except SystemExit as e:
            code = int(e.code or 0)
        finally:
            cli_deploy.out, cli_mod.err = old_out, old_err
        return code, buf.getvalue()

    return _run


@pytest.fixture(name="make_settings")
def _make_settings_fixture():
    """``make_settings(model_dir, **overrides)`` -> ServingSettings with the test API keys."""
    return make_settings


@pytest.fixture(name="LiveServer")
def _live_server_cls():
    """The :class:`LiveServer` helper (uvicorn in a thread on 127.0.0.1)."""
    return LiveServer
