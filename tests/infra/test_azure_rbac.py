"""The Azure RBAC evaluator (azure_rbac.py) on known values, then each identity of the dev stack (the Azure
program under mocks) against the calls its job makes (``required``: call -> action, scope)."""

from __future__ import annotations

import pytest
from azure_rbac import BLOBS, ML, Assignment, Rbac, assignments, condition_holds, definitions, required

from infra.components.azure import INFRA_ROLE_IDS, ROLE_IDS, blob_path_condition

SUB = "/subscriptions/00000000-1111-2222-3333-444444444444"
RG = f"{SUB}/resourceGroups/rg"
ACCOUNT = f"{RG}/providers/Microsoft.Storage/storageAccounts/acct"
X = f"{ACCOUNT}/blobServices/default/containers/x"
Y = f"{ACCOUNT}/blobServices/default/containers/y"
WS = f"{RG}/providers/Microsoft.MachineLearningServices/workspaces/ws"


def grant(role: str, scope: str, principal: str = "alice", condition: str | None = None) -> Assignment:
    return Assignment(f"{principal}-id", principal, role, {**ROLE_IDS, **INFRA_ROLE_IDS}[role], scope, condition)


def rbac(*granted: Assignment) -> Rbac:
    return Rbac(granted, definitions())


# -- known values ------------------------------------------------------------------------------------
def test_a_blob_reader_on_a_container_reads_its_blobs_only() -> None:
    r = rbac(grant("Storage Blob Data Reader", X))
    assert r.check("alice", *required("blob.read", container=X, path="a/b.txt")).allowed
    assert r.check("alice", *required("blob.list", container=X)).allowed
    write = r.check("alice", *required("blob.write", container=X, path="a/b.txt"))
    assert not write.allowed
    assert "alice" in write.reason and f"{BLOBS}/write" in write.reason and f"{X}/blobs/a/b.txt" in write.reason
    assert "\n" not in write.reason
    assert not r.check("alice", *required("blob.read", container=Y, path="a/b.txt")).allowed
    # the scope comparison is case-insensitive; an assignment above the container covers it
    assert r.check("alice", *required("blob.read", container=X.upper(), path="a")).allowed
    assert rbac(grant("Storage Blob Data Reader", ACCOUNT)).check("alice", *required("blob.read", container=Y, path="a")).allowed


def test_reader_gives_control_plane_reads_and_no_data_action() -> None:
    r = rbac(grant("Reader", RG))
    assert r.check("alice", *required("container.get_properties", container=X)).allowed
    assert not r.check("alice", *required("blob.read", container=X, path="a")).allowed
    # the same string checked as a control-plane action would match Reader's */read: the lists are separate
    assert r.check("alice", f"{BLOBS}/read", f"{X}/blobs/a", data=False).allowed


def test_data_scientist_submits_jobs_but_cannot_assign_roles() -> None:
    r = rbac(grant("AzureML Data Scientist", WS))
    assert r.check("alice", *required("jobs.create_or_update", workspace=WS, name="j1")).allowed
    assert r.check("alice", *required("online_endpoints.get_keys", workspace=WS, endpoint="e")).allowed
    assert not r.check("alice", "Microsoft.Authorization/roleAssignments/write", WS).allowed
    assert not r.check("alice", *required("jobs.create_or_update", workspace=WS.replace("/ws", "/other"), name="j1")).allowed


def test_not_actions_remove_from_the_role_and_another_role_still_grants() -> None:
    r = rbac(grant("AzureML Data Scientist", WS))
    keys = r.check("alice", f"{ML}/computes/listKeys/action", f"{WS}/computes/gpu")  # matches workspaces/*/action
    assert not keys.allowed and "notActions" in keys.reason
    assert not r.check("alice", f"{ML}/computes/write", f"{WS}/computes/gpu").allowed  # computes/*/write
    assert not r.check("alice", f"{ML}/write", WS).allowed
    both = rbac(grant("AzureML Data Scientist", WS), grant("Contributor", RG))
    assert both.check("alice", f"{ML}/computes/listKeys/action", f"{WS}/computes/gpu").allowed
    assert not both.check("alice", "Microsoft.Authorization/roleAssignments/write", WS).allowed


def test_a_path_condition_limits_writes_and_leaves_reads() -> None:
    cond = blob_path_condition("*/export/manifest.json")
    r = rbac(grant("Storage Blob Data Contributor", X, condition=cond))
    assert r.check("alice", *required("blob.write", container=X, path="p/r1/export/manifest.json")).allowed
    denied = r.check("alice", *required("blob.write", container=X, path="p/r1/export/model.pt"))
    assert not denied.allowed and "condition" in denied.reason
    assert r.check("alice", *required("blob.read", container=X, path="p/r1/export/model.pt")).allowed
    assert r.check("alice", *required("container.get_properties", container=X)).allowed


def test_unsupported_conditions_raise_instead_of_allowing() -> None:
    with pytest.raises(ValueError):
        condition_holds("@Principal[Microsoft.Directory/CustomSecurityAttributes/Id:x] StringEquals 'y'", "a", {})
    with pytest.raises(ValueError):
        condition_holds("(ActionMatches{'a'}", "a", {})


def test_the_rbac_administrator_condition_of_the_bootstrap_limits_the_roles_it_assigns() -> None:
    guids = f"{ROLE_IDS['Reader']}, {ROLE_IDS['AcrPull']}"
    cond = ("((!(ActionMatches{'Microsoft.Authorization/roleAssignments/write'})) OR "
            f"(@Request[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {{{guids}}}))")
    r = rbac(grant("Role Based Access Control Administrator", RG, condition=cond))
    attr = "Microsoft.Authorization/roleAssignments:RoleDefinitionId"
    assert r.check("alice", "Microsoft.Authorization/roleAssignments/write", WS, attributes={attr: ROLE_IDS["AcrPull"]}).allowed
    assert not r.check("alice", "Microsoft.Authorization/roleAssignments/write", WS,
                       attributes={attr: "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"}).allowed  # Owner


# -- the dev stack ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dev(program_runs):
    """(Rbac of the dev stack, container id by name, workspace id)."""
    run = program_runs["azure", "dev"]
    containers = {r.inputs["containerName"]: r.id for r in run.of_type("azure-native:storage:BlobContainer")}
    (workspace,) = run.of_type("azure-native:machinelearningservices:Workspace")
    return Rbac(assignments(run), definitions()), containers, workspace.id


def may(dev, principal: str, operation: str, **resource) -> bool:
    r, containers, ws = dev
    if "container" in resource:
        resource["container"] = containers[resource["container"]]
    decision = r.check(principal, *required(operation, workspace=ws, **resource))
    return decision.allowed


def test_the_trainer_writes_runs_reads_datasets_and_submits_jobs(dev) -> None:
    assert may(dev, "trainer", "blob.write", container="runs", path="bccd/runs/r1/config.yaml")
    assert may(dev, "trainer", "blob.read", container="datasets", path="bccd/train/a.jpg")
    assert may(dev, "trainer", "jobs.create_or_update", name="detops-r1")
    assert not may(dev, "trainer", "blob.write", container="datasets", path="bccd/train/a.jpg")


def test_the_registrar_may_not_approve(dev) -> None:
    assert may(dev, "registrar", "blob.read", container="approvals", path="m/1.json")
    assert not may(dev, "registrar", "blob.write", container="approvals", path="m/1.json")
    assert may(dev, "registrar", "blob.write", container="runs", path="bccd/runs/r1/export/detops-manifest.json")
    assert not may(dev, "registrar", "blob.write", container="runs", path="bccd/runs/r1/export/model.onnx")


def test_the_approver_writes_approvals_and_not_runs(dev) -> None:
    assert may(dev, "approver", "blob.write", container="approvals", path="m/1.json")
    assert not may(dev, "approver", "blob.write", container="runs", path="bccd/runs/r1/x")
    assert may(dev, "approver", "models.get", name="m", version="1")  # Reader on the workspace
    assert not may(dev, "approver", "models.create_or_update", name="m", version="1")


def test_the_deployer_deploys_and_may_not_approve(dev) -> None:
    assert may(dev, "deployer", "online_deployments.begin_create_or_update", endpoint="detops-dev-staging", deployment="blue")
    assert may(dev, "deployer", "online_endpoints.get_keys", endpoint="detops-dev-staging")
    assert not may(dev, "deployer", "blob.write", container="approvals", path="m/1.json")


def test_the_endpoint_identity_reads_models(dev) -> None:
    assert may(dev, "serving", "blob.read", container="models", path="m/1/model.onnx")
    assert may(dev, "serving", "acr.pull", registry=_registry(dev))
    assert not may(dev, "serving", "blob.write", container="models", path="m/1/model.onnx")


def test_each_compute_cluster_reads_datasets_and_writes_the_run_folder(dev) -> None:
    """A job with no identity mounts its datastores as the compute's managed identity (``ro_mount`` datasets,
    ``rw_mount`` run folder, training/backends/azureml.py)."""
    for compute in ("compute:gpu-cluster", "compute:cpu-cluster"):
        assert may(dev, compute, "blob.read", container="datasets", path="bccd/train/a.jpg")
        assert may(dev, compute, "blob.write", container="runs", path="bccd/runs/r1/metrics.json")
        assert not may(dev, compute, "blob.write", container="approvals", path="m/1.json")


def _registry(dev) -> str:
    r, _, _ = dev
    (push,) = [a for a in r.of("trainer") if a.role == "AcrPush"]
    return push.scope


def test_without_removes_one_grant_and_refuses_a_grant_that_is_not_there(dev) -> None:
    r, containers, _ = dev
    less = r.without("trainer", "Storage Blob Data Contributor", "runs")
    assert len(less.assignments) == len(r.assignments) - 1
    assert not less.check("trainer", *required("blob.write", container=containers["runs"], path="p/r1/x")).allowed
    assert less.check("trainer", *required("blob.read", container=containers["datasets"], path="p/a.jpg")).allowed
    with pytest.raises(ValueError, match="approver has no AcrPush"):
        r.without("approver", "AcrPush")
