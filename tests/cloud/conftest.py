"""Real local servers for the cloud tests: Azurite (Azure Blob) and moto (AWS), on 127.0.0.1.

Both are session-scoped (started once, on free ports); per-test fixtures point the environment
at them (``AZURE_STORAGE_CONNECTION_STRING``; ``AWS_ENDPOINT_URL`` and test credentials), reset
moto's state (``POST /moto-api/reset``) and clear fsspec's cached filesystems, so tests do not
see each other's buckets, listings or clients.
"""

from __future__ import annotations

import contextlib
import os
import urllib.request

import pytest
from local_servers import azurite, connection_string, free_port, wait_for_port


@pytest.fixture(scope="session")
def azurite_server(tmp_path_factory) -> str:
    """Start ``azurite-blob`` (npm ``azurite`` 3.35.0 from package.json); yield its connection string.

    Fails (does not skip) when ``node_modules`` is missing: run ``npm install`` in the checkout.
    """
    with azurite(tmp_path_factory.mktemp("azurite work")) as port:  # in-memory store; nothing in the checkout
        yield connection_string(port)


@pytest.fixture(scope="session")
def moto_endpoint() -> str:
    """Start moto's server (``ThreadedMotoServer``) on 127.0.0.1; yield ``http://127.0.0.1:<port>``."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    wait_for_port(port, None)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def _clear_fsspec_caches() -> None:
    import fsspec

    for proto in ("s3", "az", "abfs"):
        try:
            fsspec.get_filesystem_class(proto).clear_instance_cache()
        except (ImportError, ValueError):
            pass


@pytest.fixture
def azure_env(azurite_server, monkeypatch) -> str:
    """Point adlfs / azure-storage-blob at Azurite for one test; yield the connection string."""
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_server)
    for var in ("AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    # the stack's approvals container (only the approver writes it): where Azure ML approval records live
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.blob import BlobServiceClient

    approvals = BlobServiceClient.from_connection_string(azurite_server).get_container_client("approvals")
    with contextlib.suppress(ResourceExistsError):
        approvals.create_container()
    for blob in approvals.list_blobs():  # each test starts with no decision recorded
        approvals.delete_blob(blob.name)
    monkeypatch.setenv("DETOPS_APPROVALS_URI", "az://approvals")
    _clear_fsspec_caches()
    yield azurite_server
    _clear_fsspec_caches()


@pytest.fixture
def aws_env(moto_endpoint, monkeypatch) -> str:
    """Point boto3 / s3fs at a freshly reset moto server for one test; yield its URL."""
    for key, value in {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "SAGEMAKER_VALIDATE_ROLE": "false",
    }.items():
        monkeypatch.setenv(key, value)
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST"), timeout=10)
    _clear_fsspec_caches()
    yield moto_endpoint
    _clear_fsspec_caches()


@pytest.fixture
def no_cloud_credentials(monkeypatch, tmp_path):
    """An environment with no Azure or AWS credentials or config files at all."""
    for var in list(os.environ):
        if var.startswith(("AWS_", "AZURE_", "AZUREML_", "MSI_", "IDENTITY_")):
            monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no aws config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no aws credentials"))
    monkeypatch.setenv("AZURE_CONFIG_DIR", str(tmp_path / "no azure config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
