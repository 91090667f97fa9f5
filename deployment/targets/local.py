"""Local deploy target: the scoring service as a background process on this machine (127.0.0.1).

Each endpoint (default ``local``) is one ``python -m deployment.serving`` process; its state
(process id, URL, model name and version, log file) is kept in
``<DETOPS_HOME>/endpoints/local/<endpoint>.json``. Deploying to a running endpoint stops the old
process (SIGTERM: graceful, capture flushed) and starts the new one. API keys are passed through
from the environment (``DETOPS_API_KEY`` / ``DETOPS_API_KEYS``); they are never written to the state.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from deployment.registry.base import ModelVersion
from deployment.targets.base import Deployment, DeployTarget, container_env
from training import storage
from training.errors import BackendError, ConfigError


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def _is_service(pid: int) -> bool:
    """True when ``pid`` still runs ``deployment.serving`` (guards against a reused process id)."""
    try:
        return b"deployment.serving" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return _alive(pid)  # no /proc (macOS): trust the recorded id


class LocalTarget(DeployTarget):
    """Run the scoring service locally on ``host:port`` (default 127.0.0.1 and ``$DETOPS_LOCAL_PORT`` or 8080).

    Args:
        host, port: where the service listens.
        ready_timeout: seconds to wait for ``/readyz`` (model load + warm-up) before failing.
        extra_env: more environment for the service (e.g. ``DETOPS_CAPTURE_URI``).
    """

    name = "local"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        ready_timeout: float = 180.0,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.host = host
        from training.settings import CommonSettings

        self.port = int(port or CommonSettings.load().local_port)
        self.ready_timeout = ready_timeout
        self.extra_env = dict(extra_env or {})

    @staticmethod
    def _state_dir() -> Path:
        from training.home import detops_home

        d = detops_home() / "endpoints" / "local"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _state_file(self, endpoint: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in endpoint)
        return self._state_dir() / f"{safe}.json"

    def _read_state(self, endpoint: str) -> dict | None:
        f = self._state_file(endpoint)
        if not f.exists():
            return None
        return json.loads(f.read_text())

    def model_environment(self, version: ModelVersion) -> dict[str, str]:
        """The serving process's detops variables; it also inherits this environment (the API keys)."""
        return {"DETOPS_MODEL_DIR": version.artifact_uri, **container_env(version, self.runtime),
                "DETOPS_HOST": self.host, "DETOPS_PORT": str(self.port)}

    def deploy(self, version: ModelVersion, endpoint: str | None = None, *, dry_run: bool = False,
               previous: dict | None = None) -> Deployment:
        """Start the service for ``version`` and wait until it is ready (see class docstring).

        The state file names the new version (and ``previous``) as soon as the old process is
        stopped -- the traffic switch -- so a service that then fails to become ready is rolled back.

        Raises:
            ConfigError: no API key in the environment.
            BackendError: the service exited or did not become ready within ``ready_timeout``.
        """
        endpoint = endpoint or "local"
        url = f"http://{self.host}:{self.port}"
        env = dict(os.environ)
        env.update(self.extra_env)
        env.update(self.model_environment(version))
        from deployment.serving.settings import api_key_configured

        if not api_key_configured(env):
            raise ConfigError("set DETOPS_API_KEY (or DETOPS_API_KEYS) from your secret store before deploying")
        plan = Deployment(
            self.name,
            endpoint,
            version.name,
            str(version.version),
            "planned",
            url,
            {"artifact_uri": version.artifact_uri, "command": [sys.executable, "-m", "deployment.serving"]},
        )
        if dry_run:
            return plan
        self.stop(endpoint)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        log_path = self._state_dir() / f"{self._state_file(endpoint).stem}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "deployment.serving", "--host", self.host, "--port", str(self.port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        prev_state = self._read_state(endpoint) or {}
        state = {
            "endpoint": endpoint,
            "url": url,
            "pid": proc.pid,
            "model_name": version.name,
            "model_version": str(version.version),
            "artifact_uri": version.artifact_uri,
            "log": str(log_path),
            "previous": previous,
            "history": list(prev_state.get("history", [])) + [str(version.version)],
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        storage.write_json(str(self._state_file(endpoint)), state)  # whole or not at all
        self._wait_ready(proc, url, log_path)
        return Deployment(
            self.name,
            endpoint,
            version.name,
            str(version.version),
            "running",
            url,
            {"pid": proc.pid, "log": str(log_path)},
        )

    def _wait_ready(self, proc: subprocess.Popen, url: str, log_path: Path) -> None:
        """Poll ``/readyz`` until it answers 200.

        Raises:
            BackendError: the process exited (with the log's tail), or ``ready_timeout`` passed (the
                process is killed).
        """
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-1500:]
                raise BackendError(f"local service exited with code {proc.returncode}; log {log_path}:\n{tail}")
            try:
                r = httpx.get(f"{url}/readyz", timeout=2.0)
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self._kill(proc.pid)
                raise BackendError(f"local service not ready after {self.ready_timeout:.0f}s; log {log_path}")
            time.sleep(0.5)

    def describe(self, endpoint: str | None = None) -> Deployment | None:
        """The deployment recorded for ``endpoint`` with status ``running`` or ``stopped``; None if none."""
        endpoint = endpoint or "local"
        st = self._read_state(endpoint)
        if not st:
            return None
        pid = int(st["pid"])
        status = "running" if _alive(pid) and _is_service(pid) else "stopped"
        return Deployment(
            self.name,
            endpoint,
            st["model_name"],
            st["model_version"],
            status,
            st["url"],
            {"pid": st["pid"], "log": st["log"], "previous": st.get("previous"), "history": st.get("history", [])},
        )

    @staticmethod
    def _kill(pid: int, timeout: float = 40.0) -> None:
        try:
            os.killpg(pid, signal.SIGTERM)  # the process group we started (start_new_session)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self, endpoint: str | None = None) -> bool:
        """Stop the service of ``endpoint`` (graceful SIGTERM, capture flushed); True if one was running."""
        endpoint = endpoint or "local"
        st = self._read_state(endpoint)
        if not st or not _alive(int(st["pid"])) or not _is_service(int(st["pid"])):
            return False
        self._kill(int(st["pid"]))
        return True
