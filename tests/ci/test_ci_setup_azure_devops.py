"""``detops ci setup azure-devops`` (issue 32): every request it sends validates against Microsoft's REST
7.1 descriptions, a second run changes nothing, ``--dry-run`` sends nothing, and the rules that protect
users hold: branch control (main only) on every environment and connection that hands out a write
identity, approvals that the run's requester cannot give, least-privilege pipeline permissions.

The project is :class:`ado_fake.FakeAzureDevOps` (its docstring says what it cannot show); the stack
outputs are the Azure program's under Pulumi's mocks (scripts/mock_stack_outputs.py, the rehearsal's input).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ado_fake import FakeAzureDevOps
from ado_spec import Spec

from detops.ci import azure_devops as ado
from training.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
APPROVER = "6c3f2b1a-0000-4000-8000-0000000000aa"
#: The bootstrap stack's outputs (infra/bootstrap/program.py): the infra identities' client ids.
BOOTSTRAP = {
    "infra_reader_client_id": "client-reader",
    "infra_deployer_client_id": "client-deployer",
    "CI_ENVIRONMENTS": {
        "infra-preview-dev": {"AZURE_CLIENT_ID": "client-reader"},
        "infra-dev": {"AZURE_CLIENT_ID": "client-deployer"},
    },
}


@pytest.fixture(scope="module")
def outputs() -> dict:
    r = subprocess.run(
        [sys.executable, "scripts/mock_stack_outputs.py", "azure", "dev"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return ado.merge_outputs([json.loads(r.stdout), BOOTSTRAP])


def run(fake: FakeAzureDevOps | None, outputs: dict, dry_run: bool = False, approvers=(APPROVER,)) -> ado.Report:
    desired = ado.desired_state(outputs, ado.read_pipelines(ROOT / ".azure-pipelines"))
    client = ado.AzureDevOps("my-org", "detops", fake.client() if fake else None, dry_run=dry_run)
    return ado.setup(client, desired, list(approvers), ado.Repository("detops"))


def test_every_request_of_a_dry_run_validates_against_the_descriptions(outputs):
    report = run(None, outputs, dry_run=True)
    spec = Spec()
    assert len(report.writes) == len(report.changes) > 30
    kinds = {(w.method, spec.operation(w.method, w.path).template) for w in report.writes}
    assert {
        ("POST", "/{organization}/_apis/serviceendpoint/endpoints"),
        ("POST", "/{organization}/{project}/_apis/distributedtask/environments"),
        ("POST", "/{organization}/{project}/_apis/pipelines/checks/configurations"),
        ("POST", "/{organization}/_apis/distributedtask/variablegroups"),
        ("POST", "/{organization}/{project}/_apis/pipelines"),
        ("PATCH", "/{organization}/{project}/_apis/pipelines/pipelinepermissions/{resourceType}/{resourceId}"),
    } == kinds
    problems = [p for w in report.writes for p in spec.check(w.method, w.path, w.params, w.body)]
    assert problems == []


def test_the_validator_refuses_what_the_descriptions_do_not_allow():
    spec = Spec()
    ok = {"name": "x", "type": "azurerm", "authorization": {"scheme": "WorkloadIdentityFederation", "parameters": {}}}
    assert spec.check("POST", "/o/_apis/serviceendpoint/endpoints", {"api-version": "7.1"}, ok) == []
    assert spec.check("POST", "/o/_apis/serviceendpoint/endpoints", {"api-version": "7.1"}, {**ok, "nmae": "x"})
    assert spec.check("POST", "/o/_apis/serviceendpoint/endpoints", {"api-version": "7.1-preview.1"}, ok)
    assert spec.check(
        "POST", "/o/p/_apis/pipelines/checks/configurations", {"api-version": "7.1-preview.1"}, {"timeout": "1"}
    )
    assert spec.check(
        "GET", "/o/p/_apis/serviceendpoint/endpoints", {"api-version": "7.1"}, None
    )  # endpointNames required
    assert spec.check("POST", "/o/p/_apis/environmentz", {"api-version": "7.1"}, {})
    assert spec.check(
        "PATCH",
        "/o/p/_apis/pipelines/pipelinepermissions/endpoint/x",
        {"api-version": "7.1-preview.1"},
        {"pipelines": [{"id": "one", "authorized": True}]},
    )


def test_setup_makes_everything_then_a_second_run_changes_nothing(outputs):
    fake = FakeAzureDevOps()
    first = run(fake, outputs)
    assert fake.problems == []
    writes = len(fake.writes)
    assert writes == len(first.changes) > 30
    assert {e["name"] for e in fake.endpoints.values()} == {
        f"detops-azureml-{i}" for i in ("infra-reader", "infra-deployer", "trainer", "registrar", "deployer")
    }
    trainer = fake.endpoint("detops-azureml-trainer")
    assert trainer["authorization"]["scheme"] == "WorkloadIdentityFederation"
    assert trainer["authorization"]["parameters"]["serviceprincipalid"] == outputs["trainer_client_id"]
    assert trainer["data"]["subscriptionId"] == outputs["AZURE_SUBSCRIPTION_ID"]
    assert {e["name"] for e in fake.environments.values()} == {
        "detops-training",
        "detops-staging",
        "detops-production",
        "detops-infra",
    }
    assert set(fake.pipelines) and {p["configuration"]["path"] for p in fake.pipelines.values()} == {
        f"/.azure-pipelines/{f}" for f in ("ci.yml", "infra.yml", "train.yml", "release.yml")
    }
    assert fake.group("detops-common")["variables"]["AZUREML_WORKSPACE"]["value"] == outputs["AZUREML_WORKSPACE"]
    assert fake.group("detops-staging")["variables"]["ENDPOINT_NAME"]["value"] == "detopsdev-staging"
    assert fake.group("detops-infra-deployer")["variables"]["AZURE_CLIENT_ID"]["value"] == "client-deployer"

    second = run(fake, outputs)
    assert second.changes == [] and len(fake.writes) == writes and fake.problems == []
    assert second.unchanged == len(first.changes)


def test_a_dry_run_reads_but_sends_nothing(outputs):
    fake = FakeAzureDevOps()
    report = run(fake, outputs, dry_run=True)
    assert fake.writes == [] and fake.problems == []
    assert report.writes and any(m == "GET" for m, _ in fake.requests)


def branch_checks(fake, kind, rid):
    return [
        c
        for c in fake.checks_on(kind, rid)
        if c["type"]["id"] == ado.TASK_CHECK["id"]
        and c["settings"]["definitionRef"]["id"] == ado.BRANCH_CONTROL_TASK["id"]
    ]


def test_every_write_identity_is_reachable_from_main_only(outputs):
    fake = FakeAzureDevOps()
    run(fake, outputs)
    for name in ("detops-training", "detops-staging", "detops-production", "detops-infra"):
        [check] = branch_checks(fake, "environment", fake.environment_id(name))
        assert check["settings"]["inputs"]["allowedBranches"] == "refs/heads/main"
        assert check["settings"]["inputs"]["ensureProtectionOfBranch"] == "true"
        assert check["settings"]["inputs"]["allowUnknownStatusBranch"] == "false"
    for identity in ("infra-deployer", "trainer", "registrar", "deployer"):
        [check] = branch_checks(fake, "endpoint", fake.endpoint(f"detops-azureml-{identity}")["id"])
        assert check["settings"]["inputs"]["allowedBranches"] == "refs/heads/main"
    # the read-only identity previews pull requests: no branch control on it
    assert branch_checks(fake, "endpoint", fake.endpoint("detops-azureml-infra-reader")["id"]) == []


def test_gated_resources_need_an_approver_other_than_the_requester(outputs):
    fake = FakeAzureDevOps()
    run(fake, outputs)
    gated = [
        ("environment", fake.environment_id("detops-production")),
        ("environment", fake.environment_id("detops-infra")),
        ("endpoint", fake.endpoint("detops-azureml-registrar")["id"]),
    ]
    for kind, rid in gated:
        [check] = [c for c in fake.checks_on(kind, rid) if c["type"]["id"] == ado.APPROVAL["id"]]
        assert check["settings"]["requesterCannotBeApprover"] is True
        assert [a["id"] for a in check["settings"]["approvers"]] == [APPROVER]
    for name in ("detops-training", "detops-staging"):
        assert not [
            c for c in fake.checks_on("environment", fake.environment_id(name)) if c["type"]["id"] == ado.APPROVAL["id"]
        ]
    for name in ("detops-training", "detops-staging", "detops-production", "detops-infra"):
        assert [
            c
            for c in fake.checks_on("environment", fake.environment_id(name))
            if c["type"]["id"] == ado.EXCLUSIVE_LOCK["id"]
        ]
    with pytest.raises(ConfigError, match="--approver"):
        run(FakeAzureDevOps(), outputs, approvers=())


def test_weakened_checks_are_put_back(outputs):
    fake = FakeAzureDevOps()
    run(fake, outputs)
    prod = fake.environment_id("detops-production")
    [branch] = branch_checks(fake, "environment", prod)
    branch["settings"] = copy.deepcopy(branch["settings"])
    branch["settings"]["inputs"]["allowedBranches"] = "refs/heads/main, refs/heads/*"
    [approval] = [c for c in fake.checks_on("environment", prod) if c["type"]["id"] == ado.APPROVAL["id"]]
    approval["settings"] = {**approval["settings"], "requesterCannotBeApprover": False}
    [lock] = [c for c in fake.checks_on("environment", prod) if c["type"]["id"] == ado.EXCLUSIVE_LOCK["id"]]
    lock["isDisabled"] = True

    report = run(fake, outputs)
    assert len(report.changes) == 3 and fake.problems == []
    assert branch_checks(fake, "environment", prod)[0]["settings"]["inputs"]["allowedBranches"] == "refs/heads/main"
    assert fake.checks[approval["id"]]["settings"]["requesterCannotBeApprover"] is True
    assert fake.checks[lock["id"]]["isDisabled"] is False
    assert run(fake, outputs).changes == []


def test_each_pipeline_may_use_only_what_its_yaml_names(outputs):
    fake = FakeAzureDevOps()
    run(fake, outputs)
    ids = {name: fake.pipeline_id(f"detops-{name}") for name in ("ci", "infra", "train", "release")}
    endpoint = lambda i: fake.authorized("endpoint", fake.endpoint(f"detops-azureml-{i}")["id"])  # noqa: E731
    assert endpoint("registrar") == {ids["train"]}
    assert endpoint("deployer") == {ids["release"]}
    assert endpoint("trainer") == {ids["train"], ids["release"]}
    assert endpoint("infra-deployer") == endpoint("infra-reader") == {ids["infra"]}
    env = lambda n: fake.authorized("environment", fake.environment_id(n))  # noqa: E731
    assert env("detops-production") == {ids["release"]} and env("detops-infra") == {ids["infra"]}
    group = lambda n: fake.authorized("variablegroup", str(fake.group(n)["id"]))  # noqa: E731
    assert group("detops-model-registration") == {ids["train"]}
    assert ids["ci"] not in set().union(*(v for v in fake.permissions.values()))


def test_changed_outputs_update_only_what_differs_and_keep_hand_set_variables(outputs):
    fake = FakeAzureDevOps()
    run(fake, outputs)
    common = fake.group("detops-common")
    common["variables"]["DETOPS_REVIEWERS"] = {"value": "[detops]\\Reviewers", "isSecret": False}
    changed = {**outputs, "AZUREML_WORKSPACE": "mlw-new", "trainer_client_id": "client-new"}
    report = run(fake, changed)
    assert sorted(report.changes) == [
        "updated service connection detops-azureml-trainer (serviceprincipalid)",
        "updated variable group detops-common (AZUREML_WORKSPACE)",
    ]
    assert fake.problems == []
    variables = fake.group("detops-common")["variables"]
    assert variables["AZUREML_WORKSPACE"]["value"] == "mlw-new"
    assert variables["DETOPS_REVIEWERS"]["value"] == "[detops]\\Reviewers"
    trainer = fake.endpoint("detops-azureml-trainer")
    assert trainer["authorization"]["parameters"]["serviceprincipalid"] == "client-new"
    assert trainer["authorization"]["parameters"]["workloadIdentityFederationSubject"].endswith(trainer["id"])


def test_the_subjects_printed_are_the_ones_the_pulumi_programs_pin(outputs):
    from infra.settings import ENTRA_ISSUER, AzureDevOpsSettings

    assert ado.ENTRA_ISSUER == ENTRA_ISSUER
    fake = FakeAzureDevOps()
    report = run(fake, outputs)
    lines = list(ado.subject_commands(report.connections, outputs["AZURE_TENANT_ID"]))
    assert not [line for line in lines if line.startswith("#")]  # every issuer is Entra's for the stack's tenant
    subjects = {}
    for conn in report.connections:
        assert (
            conn.subject == fake.endpoint(conn.name)["authorization"]["parameters"]["workloadIdentityFederationSubject"]
        )
        stack = "infra/bootstrap" if conn.identity.startswith("infra-") else "infra/azure"
        assert (
            f"pulumi -C {stack} config set --path '{stack.replace('infra/', 'detops-')}:azure_devops.subjects."
            f"{conn.identity.replace('-', '_')}' '{conn.subject}'"
        ) in lines
        subjects[conn.identity.replace("-", "_")] = conn.subject
    app = {k: v for k, v in subjects.items() if not k.startswith("infra_")}
    settings = AzureDevOpsSettings(
        organization="my-org",
        project="detops",
        subjects=app,
        service_connections={k: f"detops-azureml-{k.replace('_', '-')}" for k in app},
    )
    assert {k: settings.subject(k) for k in app} == app
    assert (
        settings.issuer_url(outputs["AZURE_TENANT_ID"])
        == fake.endpoint("detops-azureml-trainer")["authorization"]["parameters"]["workloadIdentityFederationIssuer"]
    )


def test_a_pipeline_pointing_elsewhere_is_reported(outputs):
    fake = FakeAzureDevOps()
    run(fake, outputs)
    fake.pipelines[fake.pipeline_id("detops-train")]["configuration"]["path"] = "/azure-pipelines.yml"
    report = run(fake, outputs)
    assert (
        report.changes == []
        and len(report.problems) == 1
        and "detops-train runs /azure-pipelines.yml" in report.problems[0]
    )


def test_the_command_prints_the_requests_of_a_dry_run_and_needs_a_token_otherwise(tmp_path):
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps({"AZURE_TENANT_ID": "t", "AZURE_SUBSCRIPTION_ID": "s", "trainer_client_id": "c"}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_DEVOPS", "SYSTEM_"))}
    env |= {
        "PYTHONPATH": str(ROOT),
        "AZURE_DEVOPS_ORG": "https://dev.azure.com/my-org/",
        "AZURE_DEVOPS_PROJECT": "detops",
    }
    cmd = [sys.executable, "-m", "detops.cli", "ci", "setup", "azure-devops", str(path), "--approver", APPROVER]
    r = subprocess.run([*cmd, "--dry-run"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "POST /my-org/_apis/serviceendpoint/endpoints?api-version=7.1\n{" in r.stdout
    assert '"serviceprincipalid": "c"' in r.stdout and "skipped: service connection detops-azureml-deployer" in r.stdout
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "AZURE_DEVOPS_EXT_PAT" in r.stderr


@pytest.mark.parametrize(
    ("value", "name"),
    [("my-org", "my-org"), ("https://dev.azure.com/my-org/", "my-org"), ("https://my-org.visualstudio.com/", "my-org")],
)
def test_organization_from_name_or_collection_uri(value, name):
    assert ado.organization_name(value) == name
    with pytest.raises(ConfigError):
        ado.organization_name("https://example.com/")


def test_a_token_signs_in_as_azure_devops_documents_and_a_refusal_is_one_error(outputs):
    import base64

    import httpx

    from training.errors import AccessDeniedError

    seen = []

    def refuse(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(401, json={"message": "TF400813"})

    for pat, access, header in [
        ("p4t", None, "Basic " + base64.b64encode(b":p4t").decode()),
        (None, "j0b", "Bearer j0b"),
    ]:
        client = ado.AzureDevOps("my-org", "detops", ado.connect(pat, access, httpx.MockTransport(refuse)))
        desired = ado.desired_state(outputs, ado.read_pipelines(ROOT / ".azure-pipelines"))
        with pytest.raises(AccessDeniedError, match="refused GET /my-org/_apis/projects/detops"):
            ado.setup(client, desired, [APPROVER], ado.Repository("detops"))
        assert seen[-1] == header
    with pytest.raises(ConfigError, match="AZURE_DEVOPS_EXT_PAT"):
        ado.connect(None, None)


def test_pipelines_from_a_github_repository_go_through_its_service_connection(outputs):
    fake = FakeAzureDevOps()
    github = {
        "id": "9d2a7c1e-0000-4000-8000-00000000c0c0",
        "name": "github-detops",
        "type": "github",
        "authorization": {"scheme": "InstallationToken", "parameters": {}},
    }
    fake.endpoints[github["id"]] = github
    desired = ado.desired_state(outputs, ado.read_pipelines(ROOT / ".azure-pipelines"))
    client = ado.AzureDevOps("my-org", "detops", fake.client())
    ado.setup(client, desired, [APPROVER], ado.Repository("me/detops", "gitHub", "github-detops"))
    assert fake.problems == []
    repos = [p["configuration"]["repository"] for p in fake.pipelines.values()]
    assert repos == [{"fullName": "me/detops", "type": "gitHub", "connection": {"id": github["id"]}}] * 4
    with pytest.raises(ConfigError, match="no such service connection"):
        ado.setup(
            ado.AzureDevOps("my-org", "detops", FakeAzureDevOps().client()),
            desired,
            [APPROVER],
            ado.Repository("me/detops", "gitHub", "missing"),
        )


def test_a_group_set_by_hand_is_left_alone_but_its_pipelines_may_use_it(outputs):
    fake = FakeAzureDevOps()
    variables = {"PULUMI_STACK": {"value": "dev", "isSecret": False}}
    fake.groups[999] = {"id": 999, "name": "detops-infra", "type": "Vsts", "variables": dict(variables)}
    report = run(fake, outputs)
    infra = fake.pipeline_id("detops-infra")
    assert fake.problems == [] and f"authorized pipeline(s) {infra} on variablegroup detops-infra" in report.changes
    assert not [c for c in report.changes if c.split(" (")[0].endswith("variable group detops-infra")]
    assert fake.groups[999]["variables"] == variables
    assert fake.authorized("variablegroup", "999") == {infra}


def test_a_connection_on_the_old_issuer_is_flagged_not_pinned_silently():
    old = ado.Connection(
        "detops-azureml-trainer", "trainer", "id", "https://vstoken.dev.azure.com/org-id", "sc://o/p/c"
    )
    new = ado.Connection(
        "detops-azureml-infra-reader",
        "infra-reader",
        "id",
        "https://login.microsoftonline.com/t/v2.0",
        "/eid1/c/pub/t/x/a/y/sc/z/id",
    )
    lines = list(ado.subject_commands([old, new], "t"))
    assert lines[0].startswith(
        "# detops-azureml-trainer: issuer https://vstoken.dev.azure.com/org-id is not the Entra issuer"
    )
    assert not [line for line in lines if line.startswith("# detops-azureml-infra-reader")]
    assert (
        "pulumi -C infra/bootstrap config set --path 'detops-bootstrap:azure_devops.subjects.infra_reader' "
        "'/eid1/c/pub/t/x/a/y/sc/z/id'" in lines
    )
