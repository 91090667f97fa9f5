"""Local servers shared by the test folders: free ports, waiting for a port, and Azurite (npm ``azurite``).

tests/cloud/conftest.py's ``azurite_server`` fixture and tests/infra/test_azurite_rbac.py start Azurite with
:func:`azurite`; the folder's conftest.py files put this folder on ``sys.path`` (pytest's rootdir conftest).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Azurite's documented development account (public, the same in every Azurite install; not a secret):
# https://learn.microsoft.com/azure/storage/common/storage-use-azurite#http-connection-strings
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None, timeout: float = 60.0) -> None:
    """Return once something listens on 127.0.0.1:``port``.

    Raises ``RuntimeError`` when ``proc`` exits first or nothing listens after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited early with code {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def connection_string(port: int, account: str = AZURITE_ACCOUNT, key: str = AZURITE_KEY) -> str:
    """The shared-key connection string of a Blob endpoint on 127.0.0.1:``port`` (path-style, Azurite's)."""
    return (f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={key};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{account};")


@contextmanager
def azurite(workdir: Path) -> Iterator[int]:
    """Run ``azurite-blob`` (npm ``azurite`` from package.json, in-memory) on a free port; yield the port.

    Raises ``AssertionError`` when ``node_modules`` or ``node`` is missing (run ``npm install`` in the
    checkout): the tests fail, they do not skip; ``RuntimeError`` when Azurite does not start.
    """
    exe = ROOT / "node_modules" / ".bin" / "azurite-blob"
    assert exe.exists(), f"{exe} missing: run `npm install --no-package-lock --no-audit --no-fund` in {ROOT}"
    assert shutil.which("node"), "node is needed to run Azurite"
    port = free_port()
    proc = subprocess.Popen(
        [str(exe), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--skipApiVersionCheck",
         "--inMemoryPersistence", "--silent", "--loose"],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
