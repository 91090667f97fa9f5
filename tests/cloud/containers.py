"""Build and run the project's images for the container tests (tests/cloud/test_containers.py).

The engine is ``$DETOPS_CONTAINER_ENGINE``: ``podman`` (default; Debian's podman as root, installed
by ``scripts/setup.sh test``) or ``docker``. The images come from ``scripts/images-local.sh`` (built
from the repository, cached by a content hash). With podman every run gets the OCI runtime runc and
explicit ulimits (crun cannot set RLIMIT_NOFILE on this kind of machine; docs/cloud.md).

Containers are started detached under a unique name (``detops-test-<pid>-<n>``), waited for, their
logs read, and removed (:class:`Container`); networks likewise (:func:`network`).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENGINE = os.environ.get("DETOPS_CONTAINER_ENGINE", "podman")
_names = itertools.count()


def engine() -> list[str]:
    """The engine command with its global flags (``podman --runtime runc`` or ``docker``).

    Raises:
        AssertionError: the engine is not installed (the tests fail; they do not skip).
    """
    assert shutil.which(ENGINE), f"{ENGINE} not found: bash scripts/setup.sh test installs podman (or set " \
                                 "DETOPS_CONTAINER_ENGINE=docker)"
    return [ENGINE, "--runtime", "runc"] if ENGINE == "podman" else [ENGINE]


def _limits() -> list[str]:
    return ["--ulimit", "nofile=1024:20000", "--ulimit", "nproc=1024:4096"] if ENGINE == "podman" else []


def build_images() -> dict[str, str]:
    """Build (or find cached) the CPU training and the serving image; return ``{"training_image_cpu": ref,
    "serving_image": ref}`` (``scripts/images-local.sh all``'s ``name=ref`` lines).

    Raises:
        AssertionError: the build failed (its last log lines in the message).
    """
    engine()
    r = subprocess.run(["bash", str(ROOT / "scripts" / "images-local.sh"), "all"], cwd=ROOT,
                       capture_output=True, text=True, env={**os.environ, "DETOPS_CONTAINER_ENGINE": ENGINE})
    assert r.returncode == 0, f"image build failed:\n{r.stderr[-6000:]}"
    refs = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    assert set(refs) == {"training_image_cpu", "serving_image"} and all(refs.values()), r.stdout
    return refs


def read_only() -> list[str]:
    """``run`` options for a read-only root file system with a writable tmpfs ``/tmp`` (podman's
    ``--read-only`` mounts one itself; Docker's does not)."""
    return ["--read-only"] if ENGINE == "podman" else ["--read-only", "--tmpfs", "/tmp:rw,size=256m"]


def run_env_args(env: dict[str, str]) -> list[str]:
    """``--env K=V`` arguments, sorted (the values never go through a shell)."""
    return [a for k, v in sorted(env.items()) for a in ("--env", f"{k}={v}")]


class Container:
    """One detached container: ``podman run -d`` with the given arguments, then wait, logs, remove.

    ``args`` are ``run`` options (mounts, env, network, ...), ``image`` the image, ``command`` its
    arguments (the entry point's ``train`` / ``serve`` / a command line). Use as a context manager:
    the container is removed (forced) on exit.
    """

    def __init__(self, image: str, command: list[str], args: list[str] | None = None, name: str | None = None) -> None:
        self.name = name or f"detops-test-{os.getpid()}-{next(_names)}"
        cmd = [*engine(), "run", "-d", "--name", self.name, *_limits(), *(args or []), image, *command]
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr}"

    def wait(self, timeout: float = 1800) -> int:
        """Wait until the container exits; return its exit code (``timeout``: a safety net, seconds)."""
        r = subprocess.run([*engine(), "wait", self.name], capture_output=True, text=True, timeout=timeout)
        assert r.returncode == 0, r.stderr
        return int(r.stdout.strip().splitlines()[-1])

    def logs(self) -> str:
        """stdout and stderr of the container so far (interleaved as the engine stored them)."""
        r = subprocess.run([*engine(), "logs", self.name], capture_output=True, text=True)
        return r.stdout + r.stderr

    def running(self) -> bool:
        r = subprocess.run([*engine(), "inspect", "--format", "{{.State.Running}}", self.name],
                           capture_output=True, text=True)
        return r.stdout.strip() == "true"

    def exec(self, *command: str) -> subprocess.CompletedProcess:
        """Run ``command`` in the running container (as its user)."""
        return subprocess.run([*engine(), "exec", self.name, *command], capture_output=True, text=True)

    def url(self, container_port: int) -> str:
        """``http://127.0.0.1:<port>`` where the engine published ``container_port`` (``-p 127.0.0.1::PORT``)."""
        r = subprocess.run([*engine(), "port", self.name, str(container_port)], capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout.strip(), r.stderr
        return "http://" + r.stdout.strip().splitlines()[0]

    def inspect(self) -> dict:
        r = subprocess.run([*engine(), "inspect", self.name], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)[0]

    def remove(self) -> None:
        """Remove the container (forced), retried: an engine busy with its exit may refuse once."""
        grace = ["-t", "2"] if ENGINE == "podman" else []  # podman waits 10 s for SIGTERM by default
        for _ in range(5):
            r = subprocess.run([*engine(), "rm", "-f", *grace, self.name], capture_output=True, text=True)
            if r.returncode == 0 or "no such container" in r.stderr.lower():
                return
            time.sleep(1)

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def wait_http(container: Container, url: str, timeout: float = 300) -> int:
    """Poll ``url`` (GET, once a second) until it answers 200 or the container exits; return the
    last HTTP status (0: no answer). ``timeout``: a safety net against a hung start, seconds."""
    deadline = time.monotonic() + timeout
    status = 0
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                status = r.status
        except urllib.error.HTTPError as e:
            status = e.code
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            status = 0
        if status == 200 or not container.running():
            return status
        time.sleep(1)
    return status


def remove_leftovers() -> None:
    """Remove every container this test process started (``detops-test-<pid>-*``) that is still there."""
    r = subprocess.run([*engine(), "ps", "-a", "-q", "--filter", f"name=detops-test-{os.getpid()}-"],
                       capture_output=True, text=True)
    for cid in r.stdout.split():
        subprocess.run([*engine(), "rm", "-f", cid], capture_output=True, text=True)


@contextmanager
def network(name: str) -> Iterator[str]:
    """A container network ``name`` (its containers reach each other by name); removed on exit."""
    full = f"{name}-{os.getpid()}"
    r = subprocess.run([*engine(), "network", "create", full], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    try:
        yield full
    finally:
        subprocess.run([*engine(), "network", "rm", full], capture_output=True, text=True)


def own(path: Path, uid: int = 10001) -> Path:
    """Give ``path`` (recursively) to the images' non-root user (uid and gid 10001), as SageMaker mounts
    its folders for the container's user; return it."""
    for p in [path, *path.rglob("*")]:
        os.chown(p, uid, uid, follow_symlinks=False)
    return path
