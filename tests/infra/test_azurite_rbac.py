"""Blob calls made for real against Azurite through :class:`azurite_rbac.RbacProxy`, each as one identity of the
dev stack (the Azure program under mocks: its role assignments x Microsoft's built-in role definitions).

Each allowed call is checked to land in Azurite, each refused one to come back as Azure answers it (403
``AuthorizationPermissionMismatch``) with nothing written; each test also removes the assignment it relies
on (``Rbac.without``) and sees the call refused, so a test fails both when the grant goes and when the
proxy lets a call through unchecked.
"""

from __future__ import annotations

import uuid

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient
from azure_rbac import BLOBS, Rbac, assignments, containers, definitions
from azurite_rbac import RbacProxy, operation_of
from local_servers import AZURITE_ACCOUNT, AZURITE_KEY, azurite, connection_string

CONTRIBUTOR = "Storage Blob Data Contributor"


@pytest.fixture(scope="module")
def dev(program_runs) -> tuple[Rbac, dict[str, str]]:
    """(RBAC model of the dev stack, container name -> ARM id)."""
    run = program_runs["azure", "dev"]
    return Rbac(assignments(run), definitions()), containers(run)


@pytest.fixture(scope="module")
def azurite_port(dev, tmp_path_factory) -> int:
    """Azurite with the dev stack's containers created (with its shared key: the account's setup)."""
    with azurite(tmp_path_factory.mktemp("azurite rbac")) as port:
        admin = BlobServiceClient.from_connection_string(connection_string(port))
        for name in dev[1]:
            admin.create_container(name)
        yield port


@pytest.fixture
def admin(azurite_port) -> BlobServiceClient:
    """Azurite directly (no RBAC): to see what landed."""
    return BlobServiceClient.from_connection_string(connection_string(azurite_port))


@pytest.fixture
def proxy(dev, azurite_port):
    """``proxy(principal, rbac=None) -> RbacProxy`` (started; stopped after the test)."""
    started: list[RbacProxy] = []

    def make(principal: str, rbac: Rbac | None = None) -> RbacProxy:
        started.append(RbacProxy(azurite_port, rbac or dev[0], dev[1], principal).start())
        return started[-1]

    yield make
    for p in started:
        p.stop()


def client(p: RbacProxy) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(p.connection_string(AZURITE_KEY))


def put(p: RbacProxy, container: str, path: str, data: bytes = b"x") -> None:
    client(p).get_blob_client(container, path).upload_blob(data, overwrite=True)


def refused(p: RbacProxy, container: str, path: str) -> HttpResponseError:
    """The error of a write that must be refused (the test fails when it goes through)."""
    with pytest.raises(HttpResponseError) as caught:
        put(p, container, path)
    return caught.value


def landed(admin: BlobServiceClient, container: str, path: str) -> bytes | None:
    try:
        return admin.get_blob_client(container, path).download_blob().readall()
    except ResourceNotFoundError:
        return None


def run_id() -> str:
    return f"bccd/runs/{uuid.uuid4().hex[:8]}"


def test_the_trainer_writes_runs_and_may_not_write_approvals(dev, proxy, admin) -> None:
    trainer = proxy("trainer")
    run = run_id()
    put(trainer, "runs", f"{run}/x", b"trained")
    assert landed(admin, "runs", f"{run}/x") == b"trained"

    e = refused(trainer, "approvals", f"{run}/x")
    assert e.status_code == 403 and e.error_code == "AuthorizationPermissionMismatch"
    assert landed(admin, "approvals", f"{run}/x") is None
    (denied,) = trainer.denials()
    assert (denied.principal, denied.operation, denied.action) == ("trainer", "Put Blob", f"{BLOBS}/write")
    assert denied.scope == f"{dev[1]['approvals']}/blobs/{run}/x"
    assert [c.allowed for c in trainer.calls] == [True, False]  # every request decided and recorded

    without = proxy("trainer", dev[0].without("trainer", CONTRIBUTOR, "runs"))
    assert refused(without, "runs", f"{run}/y").error_code == "AuthorizationPermissionMismatch"
    assert landed(admin, "runs", f"{run}/y") is None


def test_the_approver_writes_approvals_and_not_runs(dev, proxy, admin) -> None:
    approver = proxy("approver")
    record = f"detops-detector/{uuid.uuid4().hex[:6]}/record.json"
    put(approver, "approvals", record, b"{}")
    assert landed(admin, "approvals", record) == b"{}"
    assert refused(approver, "runs", f"{run_id()}/x").error_code == "AuthorizationPermissionMismatch"

    without = proxy("approver", dev[0].without("approver", CONTRIBUTOR, "approvals"))
    assert refused(without, "approvals", record + ".2").status_code == 403


def test_the_registrar_writes_only_the_manifest_of_a_run(dev, proxy, admin) -> None:
    """The registrar's Contributor on ``runs`` carries an ABAC path condition (``*/export/detops-manifest.json``)."""
    registrar = proxy("registrar")
    run = run_id()
    put(registrar, "runs", f"{run}/export/detops-manifest.json", b"{}")
    assert landed(admin, "runs", f"{run}/export/detops-manifest.json") == b"{}"

    e = refused(registrar, "runs", f"{run}/metrics.json")
    assert e.error_code == "AuthorizationPermissionMismatch" and "condition" in e.message
    assert landed(admin, "runs", f"{run}/metrics.json") is None

    without = proxy("registrar", dev[0].without("registrar", CONTRIBUTOR, "runs"))
    assert refused(without, "runs", f"{run}/export/detops-manifest.json").status_code == 403


#: training.storage in its own process: adlfs' event loop, once used here, breaks the Pulumi mocks of the
#: infra tests that run after this file in the same process ("no running event loop").
_STORAGE_CALL = """
import sys
from training import storage
from training.errors import AccessDeniedError
op, url = sys.argv[1:3]
try:
    out = {"write": lambda: storage.write_bytes(url, b"{}"), "read": lambda: storage.read_bytes(url),
           "exists": lambda: storage.exists(url)}[op]()
    print("ok", out)
except AccessDeniedError as e:
    print("denied", e)
"""


def _storage(connection: str, op: str, url: str) -> str:
    """``training.storage``'s ``op`` on ``url`` with AZURE_STORAGE_CONNECTION_STRING = ``connection`` (a proxy):
    ``"ok <result>"`` or ``"denied <AccessDeniedError message>"``."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_STORAGE_")}
    env["AZURE_STORAGE_CONNECTION_STRING"] = connection
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    r = subprocess.run([sys.executable, "-c", _STORAGE_CALL, op, url], env=env, capture_output=True, text=True,
                       timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.strip()


def test_detops_storage_reports_a_denial_naming_the_url(dev, proxy, admin) -> None:
    """training.storage on ``az://`` URLs (adlfs, AZURE_STORAGE_CONNECTION_STRING at the proxy): an allowed write
    and read work; a refused one raises AccessDeniedError (a one-line CLI error, not a traceback) naming the URL."""
    run = run_id()
    trainer = proxy("trainer").connection_string(AZURITE_KEY)
    assert _storage(trainer, "write", f"az://runs/{run}/metrics.json") == "ok None"
    assert _storage(trainer, "read", f"az://runs/{run}/metrics.json") == "ok b'{}'"
    for op, verb in (("write", "write"), ("read", "read"), ("exists", "look for")):
        said = _storage(trainer, op, "az://models/m/1/model.tflite")
        assert said.startswith("denied ") and f"may not {verb} az://models/m/1/model.tflite" in said, said
        assert "AuthorizationPermissionMismatch" in said
    assert landed(admin, "models", "m/1/model.tflite") is None

    weaker = proxy("trainer", dev[0].without("trainer", CONTRIBUTOR, "runs")).connection_string(AZURITE_KEY)
    said = _storage(weaker, "write", f"az://runs/{run}/again.json")
    assert said.startswith("denied ") and "may not write" in said, said


def test_reads_lists_and_container_calls_are_checked(dev, proxy, admin) -> None:
    """Get Blob / Get Blob Properties / List Blobs need ``blobs/read`` (a DataAction), Get Container Properties
    ``containers/read`` (an Action): the trainer reads datasets and may not read models."""
    admin.get_blob_client("datasets", "bccd/a.json").upload_blob(b"{}", overwrite=True)
    admin.get_blob_client("models", "m/1.json").upload_blob(b"{}", overwrite=True)
    trainer = client(proxy("trainer"))
    assert trainer.get_blob_client("datasets", "bccd/a.json").download_blob().readall() == b"{}"
    assert [b.name for b in trainer.get_container_client("datasets").list_blobs(name_starts_with="bccd/")] == ["bccd/a.json"]
    assert trainer.get_container_client("datasets").get_container_properties().name == "datasets"
    for call in (lambda: trainer.get_blob_client("models", "m/1.json").download_blob(),
                 lambda: trainer.get_blob_client("models", "m/1.json").get_blob_properties(),
                 lambda: list(trainer.get_container_client("models").list_blobs()),
                 lambda: trainer.get_container_client("models").get_container_properties()):
        with pytest.raises(HttpResponseError) as caught:
            call()
        assert caught.value.status_code == 403 and caught.value.error_code == "AuthorizationPermissionMismatch"

    without = client(proxy("trainer", dev[0].without("trainer", "Storage Blob Data Reader", "datasets")))
    with pytest.raises(HttpResponseError):
        without.get_blob_client("datasets", "bccd/a.json").download_blob()


def test_a_request_the_table_does_not_map_is_refused_and_recorded(dev, proxy, admin) -> None:
    """Account-level calls, Copy Blob and containers outside the stack are denied as unmapped, never passed on."""
    trainer = proxy("trainer")
    c = client(trainer)
    admin.get_blob_client("runs", "src").upload_blob(b"s", overwrite=True)
    calls = (lambda: list(c.list_containers()),
             lambda: c.get_blob_client("runs", "copy").start_copy_from_url(admin.get_blob_client("runs", "src").url),
             lambda: c.get_blob_client("elsewhere", "x").upload_blob(b"x"))
    for call in calls:
        with pytest.raises(HttpResponseError) as caught:
            call()
        assert caught.value.status_code == 403 and caught.value.error_code == "UnmappedRequest"
    assert [c.operation for c in trainer.calls] == ["unmapped"] * 3
    assert all("no RBAC mapping" in c.reason or "not one of the stack's" in c.reason for c in trainer.calls)
    assert landed(admin, "runs", "copy") is None


@pytest.mark.parametrize(("method", "target", "operation"), [
    ("PUT", "/a/c/p/b.bin", "Put Blob"), ("PUT", "/a/c/b?comp=block&blockid=AA", "Put Block"),
    ("PUT", "/a/c/b?comp=blocklist", "Put Block List"), ("GET", "/a/c/b", "Get Blob"),
    ("HEAD", "/a/c/b", "Get Blob Properties"), ("DELETE", "/a/c/b", "Delete Blob"),
    ("GET", "/a/c?restype=container&comp=list&prefix=p/", "List Blobs"),
    ("HEAD", "/a/c?restype=container", "Get Container Properties"), ("PUT", "/a/c?restype=container", "Create Container"),
    ("PUT", "/a/c?restype=container&comp=metadata", "Set Container Metadata"),
])
def test_each_rest_call_maps_to_its_operation(method: str, target: str, operation: str) -> None:
    """The Blob service REST operations (learn.microsoft.com/rest/api/storageservices) the SDK and adlfs make."""
    name, _key, container, path = operation_of(method, target, {}, "a")
    assert (name, container) == (operation, "c")
    assert path == ("" if "restype" in target else target.split("?")[0].split("/", 3)[3])


def test_the_account_name_is_checked() -> None:
    from azurite_rbac import Unmapped

    with pytest.raises(Unmapped):
        operation_of("GET", f"/{AZURITE_ACCOUNT}x/c/b", {}, AZURITE_ACCOUNT)
