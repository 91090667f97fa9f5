"""``detops ci setup azure-devops``: everything the four Azure Pipelines rely on, made through the Azure
DevOps REST API 7.1 from the pipeline files and a stack's outputs, idempotently.

What it manages (docs/cicd.md, "Setting up Azure DevOps"), each read first and sent only when it differs:

- **service connections** ``detops-<backend>-<identity>``, one per ``identity:`` the pipelines name: type
  ``azurerm``, scheme ``WorkloadIdentityFederation``, creation mode ``Manual`` (the identity is the stack's
  ``<purpose>_client_id`` output; Azure DevOps generates the issuer and subject, which :func:`setup` reads
  back so that ``pulumi up`` can pin them in the identity's federated credential);
- **environments** the deployment jobs target, with an Exclusive Lock check on each, an Approval check
  (the reviewers, never the run's requester) on the gated ones, and a Branch control check allowing only
  ``refs/heads/main`` on every environment and connection that hands out a write identity;
- **variable groups** the pipelines link, from the stack outputs (:func:`detops.contract.ci_variables`:
  ``detops-common`` and ``detops-<CI environment>``); variables set by hand in a group are kept;
- **pipelines** ``<prefix><file stem>`` from ``.azure-pipelines/{ci,infra,train,release}.yml``;
- **pipeline permissions**: each pipeline is authorized on exactly the connections, groups and
  environments its YAML uses (no "Permit" on the first run, no pipeline authorized on what it does not use).

Why plain httpx and not the ``azure-devops`` package: its last release (7.1.0b4, November 2023) is a beta
without clients for check configurations and pipeline permissions; the request bodies here follow
Microsoft's REST descriptions (vsts-rest-api-specs, 7.1), and tests/ci/test_ci_setup_azure_devops.py
validates every request against them. Sources of the values that the descriptions leave open (check type
ids, the branch-control task, the connection's authorization parameters): Azure DevOps documentation
"Approvals and checks" / "Workload identity federation for Azure Resource Manager service connections" and
Microsoft's Terraform provider (microsoft/terraform-provider-azuredevops, ``pipelineschecksextras``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from detops import contract
from training.errors import AccessDeniedError, BackendError, ConfigError

HOST = "https://dev.azure.com"
API = "7.1"
PREVIEW = "7.1-preview.1"
#: The pipeline files that are pipelines; the rest of the folder are templates and scripts.
PIPELINE_FILES = ("ci.yml", "infra.yml", "train.yml", "release.yml")
#: ``azureSubscription: detops-<backend>-${{ parameters.identity }}`` in templates/cloud-<backend>.yml.
CONNECTION = "detops-{backend}-{identity}"
#: Identities that write nothing (contract.ENVIRONMENT_IDENTITY: infra-reader runs on pull requests).
READ_ONLY_IDENTITIES = frozenset({"infra-reader"})
#: Environments whose deployments wait for a person (the release to production, ``pulumi up``).
GATED_ENVIRONMENTS = ("detops-production", "detops-infra")
#: Connections whose use waits for a person: registration (a YAML edit cannot skip a resource's check).
GATED_IDENTITIES = ("registrar",)
MAIN = "refs/heads/main"
#: The stack outputs a connection needs: its tenant and subscription (infra/azure/program.py).
STACK_IDS = ("AZURE_TENANT_ID", "AZURE_SUBSCRIPTION_ID")
#: Entra's issuer of workload-identity service connections (infra/settings.py ENTRA_ISSUER, the same text).
ENTRA_ISSUER = "https://login.microsoftonline.com/{tenant_id}/v2.0"

#: Check types (Azure DevOps "Approvals and checks"; Terraform provider pipelineschecksextras).
APPROVAL = {"id": "8c6f20a7-a545-4486-9777-f762fafe0d4d", "name": "Approval"}
EXCLUSIVE_LOCK = {"id": "2ef31ad6-baa0-403a-8b45-2cbc9b4e5563", "name": "ExclusiveLock"}
TASK_CHECK = {"id": "fe1de3ee-a436-41b4-bb20-f6eb4cb879a7", "name": "Task Check"}
#: The task a Branch control check runs (a "Task Check" of this definition).
BRANCH_CONTROL_TASK = {
    "id": "86b05a0c-73e6-4f7d-b3cf-e38f3b39a75b",
    "name": "evaluatebranchProtection",
    "version": "0.0.1",
}
APPROVAL_TIMEOUT = 4320  # minutes: three days, as the registration gate's ManualValidation
CHECK_TIMEOUT = 1440  # minutes a run waits for a lock or a branch evaluation

#: GETs (no body) the vendored descriptions do not describe, listed so that the tests can tell them from a
#: typo: the project and the repository (core and git areas, not vendored), and the list of a project's
#: variable groups ("Variablegroups - Get Variable Groups", which the 7.1 file lost: it keeps one operation per
#: path, the by-id one that requires ``groupIds``).
UNDESCRIBED_GETS = (
    "/{organization}/_apis/projects/{project}",
    "/{organization}/{project}/_apis/git/repositories/{name}",
    "/{organization}/{project}/_apis/distributedtask/variablegroups",
)


# -- what the pipeline files use ---------------------------------------------------------------------


@dataclass
class PipelineUse:
    """What one pipeline file uses: variable groups, environments, identities (``identity:`` of its cloud
    steps), and per environment the identities its deployment jobs log in as."""

    file: str
    groups: set[str] = field(default_factory=set)
    environments: set[str] = field(default_factory=set)
    identities: set[str] = field(default_factory=set)
    environment_identities: dict[str, set[str]] = field(default_factory=dict)


_CLOUD_TEMPLATE = re.compile(r"^(?:templates/)?cloud-\$\{\{\s*parameters\.backend\s*\}\}\.yml$")


def read_pipelines(folder: Path) -> dict[str, PipelineUse]:
    """``{file name: PipelineUse}`` of :data:`PIPELINE_FILES` in ``folder`` (``.azure-pipelines``); job
    templates (``template: templates/images.yml``) are read where they are used.

    Raises:
        ConfigError: a pipeline file is missing or is not YAML (names the file).
    """
    out = {}
    for name in PIPELINE_FILES:
        use = PipelineUse(name)
        _walk(folder, _load(folder / name), use, None)
        out[name] = use
    return out


def _load(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such pipeline file (run from the repository root or pass --pipelines)") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not YAML ({e})") from None


def _walk(folder: Path, node: Any, use: PipelineUse, environment: str | None) -> None:
    if isinstance(node, list):
        for item in node:
            _walk(folder, item, use, environment)
        return
    if not isinstance(node, dict):
        return
    if isinstance(node.get("group"), str):
        use.groups.add(node["group"])
    if "deployment" in node and node.get("environment"):
        env = node["environment"]
        environment = str(env.get("name")) if isinstance(env, dict) else str(env)
        use.environments.add(environment)
        use.environment_identities.setdefault(environment, set())
    template = str(node.get("template", ""))
    if _CLOUD_TEMPLATE.match(template):
        identity = (node.get("parameters") or {}).get("identity")
        if identity:
            use.identities.add(identity)
            if environment:
                use.environment_identities[environment].add(identity)
    elif template.endswith(".yml") and "${{" not in template and template != "templates/setup.yml":
        path = folder / template
        if path.exists():  # a job template: its jobs are this pipeline's
            _walk(path.parent, _load(path), use, environment)
    for key, value in node.items():
        if key not in ("group", "template"):
            _walk(folder, value, use, environment)


# -- the desired state -------------------------------------------------------------------------------


@dataclass
class Desired:
    """What the project should hold: connection name -> (identity, client id), environments, group name ->
    variables, pipeline name -> YAML path, and the checks of each connection and environment."""

    connections: dict[str, tuple[str, str]]
    environments: list[str]
    groups: dict[str, dict[str, str]]
    pipelines: dict[str, str]
    uses: dict[str, PipelineUse]
    backend: str
    tenant_id: str
    subscription_id: str
    skipped: list[str] = field(default_factory=list)

    def write_environments(self) -> list[str]:
        """Environments whose deployment jobs log in as an identity that writes (branch control)."""
        return [
            e
            for e in self.environments
            if any(
                ids - READ_ONLY_IDENTITIES
                for u in self.uses.values()
                for en, ids in u.environment_identities.items()
                if en == e
            )
        ]

    def write_connections(self) -> list[str]:
        """Connections of identities that write (branch control)."""
        return [name for name, (identity, _) in self.connections.items() if identity not in READ_ONLY_IDENTITIES]


def merge_outputs(outputs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Several stacks' ``pulumi stack output --json`` (the application stack and the bootstrap) as one.

    Raises:
        ConfigError: two stacks give one output (or one CI environment's variable) different values.
    """
    merged: dict[str, Any] = {}
    for out in outputs:
        for key, value in out.items():
            if key == contract.CI_ENVIRONMENTS_OUTPUT:
                envs = merged.setdefault(key, {})
                for env, variables in (value or {}).items():
                    for name, v in variables.items():
                        if envs.setdefault(env, {}).setdefault(name, v) != v:
                            raise ConfigError(
                                f"stack outputs disagree on {key}.{env}.{name}: {envs[env][name]!r} vs {v!r}"
                            )
            elif merged.setdefault(key, value) != value:
                raise ConfigError(f"stack outputs disagree on {key}: {merged[key]!r} vs {value!r}")
    return merged


def desired_state(
    outputs: Mapping[str, Any],
    uses: Mapping[str, PipelineUse],
    backend: str = "azureml",
    prefix: str = "detops-",
    common_group: str = "detops-common",
) -> Desired:
    """The project's desired state from the stack outputs (merged: :func:`merge_outputs`) and the pipelines.

    A connection needs its identity's client id (output ``<purpose>_client_id``); one without it is skipped
    (``skipped`` says which; e.g. the bootstrap's outputs were not given). A group gets the variables the
    outputs give it: ``common_group`` the settings-named outputs, ``detops-<name>`` the CI environment
    ``<name>``'s, or those of the CI environments whose identity is ``<name>`` (``detops-infra-deployer``).
    The prod stack's settings go to ``common_group="detops-production"``: a stage's group overrides the
    pipeline's ``detops-common`` (Azure Pipelines: stage variables win over root ones).

    Raises:
        ConfigError: ``backend`` is not ``azureml`` (SageMaker's connections federate with AWS, not made
            here yet), or the outputs lack ``AZURE_TENANT_ID`` / ``AZURE_SUBSCRIPTION_ID``.
    """
    if backend != "azureml":
        raise ConfigError(
            f"--backend {backend}: only azureml service connections are made (SageMaker's need an "
            "Entra app federated with AWS; set them up as docs/cicd.md describes)"
        )
    for name in STACK_IDS:
        if not outputs.get(name):
            raise ConfigError(f"stack outputs: no {name} (give the infra/azure stack's `pulumi stack output --json`)")
    tenant_id, subscription_id = (str(outputs[name]) for name in STACK_IDS)
    variables = contract.ci_variables(outputs)
    connections, skipped = {}, []
    for identity in sorted({i for u in uses.values() for i in u.identities}):
        client_id = outputs.get(f"{identity.replace('-', '_')}_client_id")
        name = CONNECTION.format(backend=backend, identity=identity)
        if client_id:
            connections[name] = (identity, str(client_id))
        else:
            skipped.append(f"service connection {name}: no output {identity.replace('-', '_')}_client_id")
    groups: dict[str, dict[str, str]] = {}
    for group in sorted({g for u in uses.values() for g in u.groups}):
        suffix = group.removeprefix("detops-")
        values = dict(variables.repository) if group == common_group else {}
        values.update(variables.environments.get(suffix, {}))
        if group != common_group:
            if not values and suffix in contract.IDENTITIES:
                for env, identity in contract.ENVIRONMENT_IDENTITY.items():
                    if identity == suffix:
                        values.update(variables.environments.get(env, {}))
        if values:
            groups[group] = values
        else:
            skipped.append(
                f"variable group {group}: nothing in the stack outputs for it (set it by hand, docs/cicd.md)"
            )
    environments = sorted({e for u in uses.values() for e in u.environments})
    pipelines = {prefix + Path(f).stem: f"/.azure-pipelines/{f}" for f in uses}
    return Desired(
        connections, environments, groups, pipelines, dict(uses), backend, tenant_id, subscription_id, skipped
    )


# -- requests ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One REST call: ``method``, ``path`` from the host (``/<org>/<project>/_apis/...``), query ``params``
    (``api-version`` included) and a JSON ``body`` (None for GET)."""

    method: str
    path: str
    params: Mapping[str, str]
    body: Any = None

    def show(self) -> str:
        """``METHOD path?query`` and the body as indented JSON (what ``--dry-run`` prints)."""
        query = "&".join(f"{k}={v}" for k, v in self.params.items())
        head = f"{self.method} {self.path}?{query}"
        return head if self.body is None else head + "\n" + json.dumps(self.body, indent=2, sort_keys=True)


class AzureDevOps:
    """A thin Azure DevOps REST client: GETs always go out; writes are recorded in :attr:`writes` and sent
    unless ``dry_run``. ``http`` is an ``httpx.Client`` (tests give one with a MockTransport); None with
    ``dry_run`` means an empty project is assumed and nothing is read.

    Writes in a dry run return placeholders: negative ids for resources with integer ids, and
    ``00000000-0000-0000-0000-0000000000NN`` for connections, standing for what the run would create.
    """

    def __init__(self, organization: str, project: str, http: Any = None, dry_run: bool = False) -> None:
        self.organization, self.project, self.http, self.dry_run = organization, project, http, dry_run
        self.writes: list[Request] = []
        self._placeholder = 0

    @property
    def offline(self) -> bool:
        """True when nothing is read (a dry run without a token)."""
        return self.http is None

    def org_path(self, rest: str) -> str:
        """``/<org>/_apis/<rest>``."""
        return f"/{self.organization}/_apis/{rest}"

    def project_path(self, rest: str) -> str:
        """``/<org>/<project>/_apis/<rest>``."""
        return f"/{self.organization}/{self.project}/_apis/{rest}"

    def get(
        self, path: str, params: Mapping[str, str] | None = None, version: str = API, missing_ok: bool = False
    ) -> Any:
        """GET ``path``; None when ``missing_ok`` and the service answers 404.

        Raises:
            AccessDeniedError: 401 / 203 (a sign-in page: the token is wrong or expired) / 403.
            BackendError: any other error status (names the method, path, status and the service's message).
        """
        if self.http is None:
            return None
        return self._send(Request("GET", path, {**(params or {}), "api-version": version}), missing_ok)

    def write(
        self, method: str, path: str, body: Any, version: str = API, params: Mapping[str, str] | None = None
    ) -> Any:
        """Send (or, in a dry run, only record) a write; returns the service's answer (a placeholder in a dry run)."""
        request = Request(method, path, {**(params or {}), "api-version": version}, body)
        self.writes.append(request)
        if self.dry_run:
            self._placeholder += 1
            if "serviceendpoint" in path:
                return {**body, "id": f"00000000-0000-0000-0000-{self._placeholder:012d}"}
            return {**body, "id": -self._placeholder} if isinstance(body, dict) else body
        return self._send(request)

    def _send(self, request: Request, missing_ok: bool = False) -> Any:
        r = self.http.request(
            request.method,
            HOST + request.path,
            params=dict(request.params),
            json=request.body if request.body is not None else None,
        )
        what = f"{request.method} {request.path}"
        if r.status_code == 404 and missing_ok:
            return None
        if r.status_code in (401, 403) or r.status_code == 203:
            raise AccessDeniedError(
                f"Azure DevOps refused {what} ({r.status_code}): give the token the scopes "
                "in docs/cicd.md (service connections, environment, variable groups, build: read & manage)"
            )
        if r.status_code >= 400:
            try:
                message = r.json().get("message", r.text)
            except ValueError:
                message = r.text
            raise BackendError(f"Azure DevOps: {what} failed ({r.status_code}): {message}")
        return r.json() if r.content else None


def connect(pat: str | None, access_token: str | None, transport: Any = None) -> Any:
    """An ``httpx.Client`` that signs in to Azure DevOps: a personal access token as HTTP Basic with an empty
    user name, a pipeline's ``System.AccessToken`` as a Bearer token (Azure DevOps documentation, "Use
    personal access tokens" / "Access repositories, artifacts, and other resources"). ``transport``: tests.

    Raises:
        ConfigError: neither token is given.
    """
    import httpx

    if pat:
        return httpx.Client(auth=httpx.BasicAuth("", pat), timeout=60, transport=transport)
    if access_token:
        return httpx.Client(headers={"Authorization": f"Bearer {access_token}"}, timeout=60, transport=transport)
    raise ConfigError("set AZURE_DEVOPS_EXT_PAT (a personal access token) or map SYSTEM_ACCESSTOKEN into the step")


# -- reconcile ---------------------------------------------------------------------------------------


@dataclass
class Connection:
    """A service connection as the project has it: name, identity, id, issuer and subject of its tokens."""

    name: str
    identity: str
    id: str
    issuer: str | None
    subject: str | None


@dataclass
class Report:
    """What a run did (or, in a dry run, would do): ``changes`` one line each, ``unchanged`` count,
    ``connections`` with their subjects, ``skipped`` and ``problems`` (states this command cannot fix)."""

    changes: list[str] = field(default_factory=list)
    unchanged: int = 0
    connections: list[Connection] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    writes: list[Request] = field(default_factory=list)


@dataclass(frozen=True)
class Repository:
    """Where the pipelines' YAML lives: an Azure Repos repository (``name``) or a GitHub one
    (``name`` = ``owner/repo``, through the GitHub service connection ``connection``)."""

    name: str
    kind: str = "azureReposGit"
    connection: str | None = None


def setup(
    client: AzureDevOps,
    desired: Desired,
    approvers: Sequence[str],
    repository: Repository,
) -> Report:
    """Create or update everything ``desired`` names, reading the project's state first.

    ``approvers``: Azure DevOps identity ids (GUIDs) of the people or groups who approve the gated
    environments and connections. Order: connections, environments, checks, groups, pipelines, permissions
    (each needs the ids of the ones before).

    Raises:
        ConfigError: no approver is given.
        AccessDeniedError, BackendError: the service refused a request (:meth:`AzureDevOps.get`).
    """
    if not approvers:
        raise ConfigError(
            "--approver: give the Azure DevOps identity id of at least one person or group who approves "
            f"{', '.join(GATED_ENVIRONMENTS)} and the {', '.join(GATED_IDENTITIES)} connection"
        )
    report = Report(skipped=list(desired.skipped))
    project = _project_reference(client)
    connections = _connections(client, desired, project, desired.tenant_id, desired.subscription_id, report)
    environments = _environments(client, desired, report)
    approval = _approval(sorted(set(approvers)))
    for name, env_id in environments.items():
        wanted = [_exclusive_lock()]
        if name in GATED_ENVIRONMENTS:
            wanted.append(approval)
        if name in desired.write_environments():
            wanted.append(_branch_control())
        _checks(client, "environment", str(env_id), name, wanted, report)
    for conn in connections:
        wanted = []
        if conn.identity in GATED_IDENTITIES:
            wanted.append(approval)
        if conn.name in desired.write_connections():
            wanted.append(_branch_control())
        if wanted:
            _checks(client, "endpoint", conn.id, conn.name, wanted, report)
    groups = _groups(client, desired, project, report)
    pipelines = _pipelines(client, desired, repository, report)
    by_file = {Path(path).name: pid for name, (pid, path) in pipelines.items()}
    resources: list[tuple[str, str, str, set[str]]] = []
    for conn in connections:
        resources.append(
            ("endpoint", conn.id, conn.name, {f for f, u in desired.uses.items() if conn.identity in u.identities})
        )
    for name, gid in groups.items():
        resources.append(("variablegroup", str(gid), name, {f for f, u in desired.uses.items() if name in u.groups}))
    for name, eid in environments.items():
        resources.append(
            ("environment", str(eid), name, {f for f, u in desired.uses.items() if name in u.environments})
        )
    for kind, rid, name, files in resources:
        _permissions(client, kind, rid, name, sorted(by_file[f] for f in files if f in by_file), report)
    report.connections = connections
    report.writes = list(client.writes)
    return report


def _project_reference(client: AzureDevOps) -> dict[str, str]:
    got = client.get(client.org_path(f"projects/{client.project}"))
    if got is None:
        return {"id": "00000000-0000-0000-0000-000000000000" if client.offline else "", "name": client.project}
    return {"id": got["id"], "name": got["name"]}


def _connection_body(
    name: str, identity: str, client_id: str, project: Mapping[str, str], tenant_id: str, subscription_id: str
) -> dict[str, Any]:
    description = f"detops {identity}: workload identity federation (detops ci setup azure-devops)"
    return {
        "name": name,
        "type": "azurerm",
        "url": "https://management.azure.com/",
        "description": description,
        "authorization": {
            "scheme": "WorkloadIdentityFederation",
            "parameters": {"tenantid": tenant_id, "serviceprincipalid": client_id},
        },
        "data": {
            "environment": "AzureCloud",
            "scopeLevel": "Subscription",
            "subscriptionId": subscription_id,
            "subscriptionName": subscription_id,
            "creationMode": "Manual",
        },
        "isShared": False,
        "owner": "library",
        "serviceEndpointProjectReferences": [
            {"projectReference": dict(project), "name": name, "description": description}
        ],
    }


def _connection_differs(have: Mapping[str, Any], want: Mapping[str, Any]) -> list[str]:
    diffs = []
    if have.get("type", "").lower() != "azurerm":
        diffs.append(f"type {have.get('type')}")
    auth, wauth = have.get("authorization") or {}, want["authorization"]
    if auth.get("scheme") != wauth["scheme"]:
        diffs.append(f"scheme {auth.get('scheme')}")
    for key, value in wauth["parameters"].items():
        if (auth.get("parameters") or {}).get(key) != value:
            diffs.append(key)
    for key in ("scopeLevel", "subscriptionId", "creationMode"):
        if (have.get("data") or {}).get(key) != want["data"][key]:
            diffs.append(key)
    return diffs


def _connections(
    client: AzureDevOps,
    desired: Desired,
    project: Mapping[str, str],
    tenant_id: str,
    subscription_id: str,
    report: Report,
) -> list[Connection]:
    names = sorted(desired.connections)
    have = {}
    if names:
        got = client.get(client.project_path("serviceendpoint/endpoints"), {"endpointNames": ",".join(names)})
        have = {e["name"]: e for e in (got or {}).get("value", [])}
    out = []
    for name in names:
        identity, client_id = desired.connections[name]
        want = _connection_body(name, identity, client_id, project, tenant_id, subscription_id)
        if name not in have:
            got = client.write("POST", client.org_path("serviceendpoint/endpoints"), want)
            report.changes.append(f"created service connection {name} ({identity}, client id {client_id})")
        elif diffs := _connection_differs(have[name], want):
            body = {**have[name], **{k: want[k] for k in ("type", "url", "authorization", "data")}}
            body["authorization"] = {
                "scheme": want["authorization"]["scheme"],
                "parameters": {
                    **(have[name].get("authorization") or {}).get("parameters", {}),
                    **want["authorization"]["parameters"],
                },
            }
            got = client.write("PUT", client.org_path(f"serviceendpoint/endpoints/{have[name]['id']}"), body)
            report.changes.append(f"updated service connection {name} ({', '.join(diffs)})")
        else:
            got = have[name]
            report.unchanged += 1
        params = ((got or {}).get("authorization") or {}).get("parameters") or {}
        out.append(
            Connection(
                name,
                identity,
                str(got["id"]),
                params.get("workloadIdentityFederationIssuer"),
                params.get("workloadIdentityFederationSubject"),
            )
        )
    return out


def _environments(client: AzureDevOps, desired: Desired, report: Report) -> dict[str, Any]:
    got = client.get(client.project_path("distributedtask/environments"), {"$top": "1000"})
    have = {e["name"]: e["id"] for e in (got or {}).get("value", [])}
    out = {}
    for name in desired.environments:
        if name in have:
            out[name] = have[name]
            report.unchanged += 1
        else:
            made = client.write(
                "POST",
                client.project_path("distributedtask/environments"),
                {"name": name, "description": "detops (detops ci setup azure-devops)"},
            )
            out[name] = made["id"]
            report.changes.append(f"created environment {name}")
    return out


def _approval(approvers: Sequence[str]) -> dict[str, Any]:
    return {
        "type": dict(APPROVAL),
        "timeout": APPROVAL_TIMEOUT,
        "settings": {
            "approvers": [{"id": a} for a in approvers],
            "executionOrder": "anyOrder",
            "minRequiredApprovers": 1,
            "instructions": "detops: approve only a run of main whose evaluation and gate you have checked (docs/cicd.md).",
            "blockedApprovers": [],
            "requesterCannotBeApprover": True,
        },
    }


def _exclusive_lock() -> dict[str, Any]:
    return {"type": dict(EXCLUSIVE_LOCK), "timeout": CHECK_TIMEOUT, "settings": {}}


def _branch_control() -> dict[str, Any]:
    return {
        "type": dict(TASK_CHECK),
        "timeout": CHECK_TIMEOUT,
        "settings": {
            "displayName": "Branch control (detops: main only)",
            "definitionRef": dict(BRANCH_CONTROL_TASK),
            "inputs": {
                "allowedBranches": MAIN,
                "ensureProtectionOfBranch": "true",
                "allowUnknownStatusBranch": "false",
            },
            "retryInterval": 5,
        },
    }


def _kind(check: Mapping[str, Any]) -> str:
    type_id = str((check.get("type") or {}).get("id", "")).lower()
    if type_id == TASK_CHECK["id"]:
        ref = ((check.get("settings") or {}).get("definitionRef") or {}).get("id", "")
        return "branch" if str(ref).lower() == BRANCH_CONTROL_TASK["id"] else "task:" + str(ref)
    return {APPROVAL["id"]: "approval", EXCLUSIVE_LOCK["id"]: "lock"}.get(type_id, type_id)


def _check_differs(have: Mapping[str, Any], want: Mapping[str, Any]) -> list[str]:
    """What in an existing check of the same kind is weaker than wanted (empty: it is as wanted)."""
    diffs = ["disabled"] if have.get("isDisabled") else []
    hs, ws = have.get("settings") or {}, want["settings"]
    kind = _kind(want)
    if kind == "approval":
        if {a.get("id") for a in hs.get("approvers") or []} != {a["id"] for a in ws["approvers"]}:
            diffs.append("approvers")
        if hs.get("requesterCannotBeApprover") is not True:
            diffs.append("requester may approve")
        if (hs.get("minRequiredApprovers") or 0) < ws["minRequiredApprovers"] and len(ws["approvers"]) > 1:
            diffs.append("minRequiredApprovers")
    elif kind == "branch":
        inputs = hs.get("inputs") or {}
        branches = {b.strip() for b in str(inputs.get("allowedBranches", "")).split(",") if b.strip()}
        if branches != {MAIN}:
            diffs.append(f"allowedBranches {inputs.get('allowedBranches')!r}")
        for key in ("ensureProtectionOfBranch", "allowUnknownStatusBranch"):
            if str(inputs.get(key, "")).lower() != ws["inputs"][key]:
                diffs.append(key)
    return diffs


def _checks(
    client: AzureDevOps, kind: str, resource_id: str, name: str, wanted: list[dict[str, Any]], report: Report
) -> None:
    have: list[dict[str, Any]] = []
    if not _placeholder(resource_id):
        got = client.get(
            client.project_path("pipelines/checks/configurations"),
            {"resourceType": kind, "resourceId": resource_id, "$expand": "settings"},
            version=PREVIEW,
        )
        have = list((got or {}).get("value", []))
    resource = {"type": kind, "id": resource_id, "name": name}
    for want in wanted:
        body = {**want, "resource": resource}
        same = [c for c in have if _kind(c) == _kind(want)]
        label = {"approval": "approval", "lock": "exclusive lock", "branch": "branch control (main only)"}[_kind(want)]
        if not same:
            client.write("POST", client.project_path("pipelines/checks/configurations"), body, version=PREVIEW)
            report.changes.append(f"added {label} check on {kind} {name}")
        elif all(_check_differs(c, want) for c in same):
            current = same[0]
            client.write(
                "PATCH",
                client.project_path(f"pipelines/checks/configurations/{current['id']}"),
                {**body, "id": current["id"], "isDisabled": False},
                version=PREVIEW,
            )
            report.changes.append(
                f"updated {label} check on {kind} {name} ({', '.join(_check_differs(current, want))})"
            )
        else:
            report.unchanged += 1


def _placeholder(resource_id: Any) -> bool:
    text = str(resource_id)
    return text.startswith("-") or text.startswith("00000000-0000-0000-0000-")


def _groups(client: AzureDevOps, desired: Desired, project: Mapping[str, str], report: Report) -> dict[str, Any]:
    got = client.get(client.project_path("distributedtask/variablegroups"))
    have = {g["name"]: g for g in (got or {}).get("value", [])}
    out = {}
    for name in sorted({g for u in desired.uses.values() for g in u.groups}):
        values = desired.groups.get(name)
        if values is None:
            if name in have:
                out[name] = have[name]["id"]
            continue
        description = "detops: from the stack outputs (detops ci setup azure-devops); variables set by hand are kept"
        variables = {k: {"value": v, "isSecret": False} for k, v in sorted(values.items())}
        body: dict[str, Any]
        if name not in have:
            body = {
                "name": name,
                "description": description,
                "type": "Vsts",
                "variables": variables,
                "variableGroupProjectReferences": [
                    {"name": name, "description": description, "projectReference": dict(project)}
                ],
            }
            made = client.write("POST", client.org_path("distributedtask/variablegroups"), body)
            out[name] = made["id"]
            report.changes.append(f"created variable group {name} ({', '.join(sorted(values))})")
            continue
        current = have[name]
        out[name] = current["id"]
        old = current.get("variables") or {}
        changed = sorted(
            k for k, v in values.items() if (old.get(k) or {}).get("value") != v or (old.get(k) or {}).get("isSecret")
        )
        if not changed:
            report.unchanged += 1
            continue
        refs = current.get("variableGroupProjectReferences") or [
            {"name": name, "description": description, "projectReference": dict(project)}
        ]
        body = {
            "name": name,
            "description": current.get("description") or description,
            "type": current.get("type") or "Vsts",
            "variables": {**old, **variables},
            "variableGroupProjectReferences": refs,
        }
        if current.get("providerData"):
            body["providerData"] = current["providerData"]
        client.write("PUT", client.org_path(f"distributedtask/variablegroups/{current['id']}"), body)
        report.changes.append(f"updated variable group {name} ({', '.join(changed)})")
    return out


def _repository_body(client: AzureDevOps, repository: Repository) -> dict[str, Any]:
    if repository.kind == "gitHub":
        if not repository.connection:
            raise ConfigError("--github-connection: a GitHub repository needs the GitHub service connection's name")
        got = client.get(client.project_path("serviceendpoint/endpoints"), {"endpointNames": repository.connection})
        found = (got or {}).get("value", [])
        if not found and not client.offline:
            raise ConfigError(
                f"--github-connection {repository.connection}: no such service connection in {client.project}"
            )
        connection_id = found[0]["id"] if found else "00000000-0000-0000-0000-000000000000"
        return {"fullName": repository.name, "type": "gitHub", "connection": {"id": connection_id}}
    got = client.get(client.project_path(f"git/repositories/{repository.name}"), missing_ok=True)
    if got is None and not client.offline:
        raise ConfigError(f"--repository {repository.name}: no such Azure Repos repository in {client.project}")
    return {
        "id": (got or {}).get("id", "00000000-0000-0000-0000-000000000000"),
        "name": repository.name,
        "type": "azureReposGit",
    }


def _pipelines(
    client: AzureDevOps, desired: Desired, repository: Repository, report: Report
) -> dict[str, tuple[Any, str]]:
    got = client.get(client.project_path("pipelines"), {"$top": "1000"})
    have = {p["name"]: p for p in (got or {}).get("value", [])}
    out: dict[str, tuple[Any, str]] = {}
    repo_body = None
    for name, path in desired.pipelines.items():
        if name in have:
            pid = have[name]["id"]
            detail = client.get(client.project_path(f"pipelines/{pid}")) or {}
            have_path = (detail.get("configuration") or {}).get("path", "")
            if have_path.lstrip("/") != path.lstrip("/"):
                report.problems.append(
                    f"pipeline {name} runs {have_path or '(no YAML path)'}, not {path}: the Pipelines API "
                    "7.1 cannot change it; point it at the file in the pipeline's settings or delete it"
                )
            else:
                report.unchanged += 1
            out[name] = (pid, path)
            continue
        repo_body = repo_body or _repository_body(client, repository)
        made = client.write(
            "POST",
            client.project_path("pipelines"),
            {
                "name": name,
                "folder": "\\detops",
                "configuration": {"type": "yaml", "path": path, "repository": repo_body},
            },
        )
        out[name] = (made["id"], path)
        report.changes.append(f"created pipeline {name} ({path})")
    return out


def _permissions(
    client: AzureDevOps, kind: str, resource_id: str, name: str, pipeline_ids: list[Any], report: Report
) -> None:
    if not pipeline_ids:
        return
    authorized: set[Any] = set()
    if not _placeholder(resource_id):
        got = (
            client.get(client.project_path(f"pipelines/pipelinepermissions/{kind}/{resource_id}"), version=PREVIEW)
            or {}
        )
        authorized = {p["id"] for p in got.get("pipelines") or [] if p.get("authorized")}
    missing = [p for p in pipeline_ids if p not in authorized]
    if not missing:
        report.unchanged += 1
        return
    client.write(
        "PATCH",
        client.project_path(f"pipelines/pipelinepermissions/{kind}/{resource_id}"),
        {"resource": {"type": kind, "id": resource_id}, "pipelines": [{"id": p, "authorized": True} for p in missing]},
        version=PREVIEW,
    )
    report.changes.append(f"authorized pipeline(s) {', '.join(map(str, missing))} on {kind} {name}")


# -- after the run: what pulumi pins -----------------------------------------------------------------


def subject_commands(connections: Sequence[Connection], tenant_id: str) -> Iterator[str]:
    """``pulumi config set`` commands pinning each connection's subject in the stack that federates its
    identity (infra/bootstrap for infra-reader / infra-deployer, infra/azure for the others: their
    ``azure_devops.subjects``), and a warning line for a connection whose issuer is not Entra's."""
    issuer = ENTRA_ISSUER.format(tenant_id=tenant_id)
    for conn in connections:
        if not conn.subject:
            yield f"# {conn.name}: no subject yet (a dry run, or Azure DevOps has not generated it); run again"
            continue
        if conn.issuer and conn.issuer.rstrip("/") != issuer.rstrip("/"):
            yield (
                f"# {conn.name}: issuer {conn.issuer} is not the Entra issuer {issuer}: convert the connection "
                "(docs/cicd.md) or set azure_devops.issuer: azure-devops"
            )
        purpose = conn.identity.replace("-", "_")
        stack = (
            ("infra/bootstrap", "detops-bootstrap")
            if conn.identity.startswith("infra-")
            else ("infra/azure", "detops-azure")
        )
        yield f"pulumi -C {stack[0]} config set --path '{stack[1]}:azure_devops.subjects.{purpose}' '{conn.subject}'"
        yield f"pulumi -C {stack[0]} config set --path '{stack[1]}:azure_devops.service_connections.{purpose}' '{conn.name}'"


def organization_name(value: str) -> str:
    """``my-org`` from ``my-org``, ``https://dev.azure.com/my-org/`` or ``https://my-org.visualstudio.com/``.

    Raises:
        ConfigError: anything else (names the value).
    """
    text = value.strip()
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", text):
        return text
    url = urlparse(text)
    if url.hostname == "dev.azure.com" and url.path.strip("/"):
        return url.path.strip("/").split("/")[0]
    if url.hostname and url.hostname.endswith(".visualstudio.com"):
        return url.hostname.split(".")[0]
    raise ConfigError(f"Azure DevOps organization {value!r}: give its name or https://dev.azure.com/<org>/")
