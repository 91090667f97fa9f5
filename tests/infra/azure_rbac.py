"""An offline Azure RBAC check: who may do what at which scope, from the role assignments a Pulumi program
makes (under mocks) and Microsoft's published built-in role definitions.

Stable API (tests/ci uses it):

- ``assignments(run) -> list[Assignment]``: every ``authorization.RoleAssignment`` of a mocked program run
  (``infra_helpers.run_cloud`` / ``run_bootstrap``), each with the principal's id and name (see
  :func:`principal_names`), role name, scope and ABAC condition.
- ``containers(run) -> dict[name, ARM id]``: the program's blob containers.
- ``definitions() -> dict[guid, dict]``: tests/infra/data/azure_builtin_roles.json (roleName, actions,
  notActions, dataActions, notDataActions, source).
- ``Rbac(assignments, definitions).check(principal, action, scope, *, data=None, attributes=None) ->
  Decision(allowed, reason)``; ``principal`` is a name (``trainer``, ``compute:gpu-cluster``) or an id;
  ``Rbac.without(principal, role, container=None) -> Rbac``: the model less some assignments.
- ``required(operation, **resource) -> (action, scope)``: the RBAC action one call of the code needs and the
  scope it is checked at (:data:`OPERATIONS`); ``is_data_action(action)``.

The rules ("Understand Azure role definitions", "Understand scope for Azure RBAC", learn.microsoft.com):

- An assignment at scope S applies to S and every scope below it (ARM ids, compared case-insensitively).
  A blob is addressed as ``<container id>/blobs/<path>`` (below its container).
- Actions (control plane) and DataActions (data plane) are separate: a data action is granted only by a
  role's ``dataActions`` minus its ``notDataActions``, a control-plane action only by ``actions`` minus
  ``notActions``. Role permissions are additive: a ``notActions`` entry removes the action from *that*
  role only (it is not a deny); another role that grants it still allows.
- Wildcards: ``*`` matches any run of characters, case-insensitively; ``/*/`` also matches a single ``/``
  (Microsoft's AzureML Data Scientist lists ``workspaces/delete`` in notActions next to the action
  ``workspaces/*/delete``, which only makes sense when ``*`` may match no segment).
- ABAC conditions (version 2.0): evaluated for every request an assignment would grant. Supported: ``AND``,
  ``OR``, ``!``, parentheses, ``ActionMatches{'...'}``, ``@Resource[...]`` / ``@Request[...]`` attributes
  with ``StringEquals``, ``StringLike`` (``*`` any run), ``StringStartsWith``, ``StringNotEquals``,
  ``StringNotLike`` and ``ForAnyOfAnyValues:GuidEquals {...}``. The blob path attribute
  (``...containers/blobs:path``) is taken from the blob's scope; others come from ``attributes``. An
  attribute absent from the request makes its comparison false (as Azure does). Not evaluated:
  ``SubOperationMatches``, ``@Principal``/``@Environment`` attributes, other operators: they raise, so a
  condition is never silently treated as true. Deny assignments, PIM and Key Vault access policies are not
  modelled (the programs make none).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.components.azure import INFRA_ROLE_IDS, ROLE_IDS

ROLES_FILE = Path(__file__).resolve().parent / "data" / "azure_builtin_roles.json"
ROLE_ASSIGNMENT = "azure-native:authorization:RoleAssignment"
CONTAINERS = "Microsoft.Storage/storageAccounts/blobServices/containers"
BLOBS = f"{CONTAINERS}/blobs"
BLOB_PATH = f"{BLOBS}:path"
ML = "Microsoft.MachineLearningServices/workspaces"


@dataclass(frozen=True)
class Assignment:
    """One role assignment: ``principal_id``; ``principal`` (its name, see :func:`principal_names`, or the id
    when the program does not name it); ``role`` (built-in role name) and ``role_id`` (GUID); ``scope`` (ARM
    id); ``condition`` (ABAC, version 2.0) or None; ``name`` (the Pulumi resource name)."""

    principal_id: str
    principal: str
    role: str
    role_id: str
    scope: str
    condition: str | None = None
    name: str = ""


@dataclass(frozen=True)
class Decision:
    """``allowed``; ``reason``: one line naming the principal, the action and the scope (and, when allowed,
    the role and the assignment's scope)."""

    allowed: bool
    reason: str


def definitions(path: Path = ROLES_FILE) -> dict[str, dict[str, Any]]:
    """The built-in role definitions by GUID (tests/infra/data/azure_builtin_roles.json)."""
    return json.loads(path.read_text(encoding="utf-8"))["roles"]


def principal_names(run) -> dict[str, str]:
    """Principal id -> name for the identities a run creates: a user-assigned identity by its
    ``detops-purpose`` tag (``trainer``, ``registrar``, ``approver``, ``deployer``, ``serving``,
    ``infra-reader``, ``infra-deployer``); a system-assigned identity by its resource (``compute:<name>``
    for Azure ML computes, ``workspace:<name>``); the AKS kubelet identity as ``aks-kubelet``."""
    names: dict[str, str] = {}
    for r in run.of_type("azure-native:managedidentity:UserAssignedIdentity"):
        names[r.outputs["principalId"]] = (r.inputs.get("tags") or {}).get("detops-purpose", r.name)
    for token, label, key in (("azure-native:machinelearningservices:Compute", "compute", "computeName"),
                              ("azure-native:machinelearningservices:Workspace", "workspace", "name")):
        for r in run.of_type(token):
            if principal := (r.outputs.get("identity") or {}).get("principalId"):
                names[principal] = f"{label}:{r.inputs.get(key) or r.outputs.get('name')}"
    for r in run.of_type("azure-native:containerservice:ManagedCluster"):
        names[r.outputs["identityProfile"]["kubeletidentity"]["objectId"]] = "aks-kubelet"
    return names


def assignments(run) -> list[Assignment]:
    """Every role assignment of a mocked program run (``ProgramRun``), with principal names resolved.

    Raises ``KeyError`` for a role definition GUID outside ROLE_IDS / INFRA_ROLE_IDS.
    """
    by_guid = {guid: name for name, guid in {**ROLE_IDS, **INFRA_ROLE_IDS}.items()}
    names = principal_names(run)
    found = []
    for r in run.of_type(ROLE_ASSIGNMENT):
        guid = r.inputs["roleDefinitionId"].rsplit("/", 1)[-1]
        pid = r.inputs["principalId"]
        found.append(Assignment(pid, names.get(pid, pid), by_guid[guid], guid, r.inputs["scope"],
                                r.inputs.get("condition"), r.name))
    return found


def containers(run) -> dict[str, str]:
    """Blob container name -> its ARM id (``<account id>/blobServices/default/containers/<name>``) in a run."""
    return {r.inputs["containerName"]: r.id for r in run.of_type("azure-native:storage:BlobContainer")}


# -- matching ------------------------------------------------------------------------------------------
def _wildcard(pattern: str, value: str) -> bool:
    """Azure permission wildcard match (case-insensitive; ``*`` any run; ``/*/`` may match ``/``)."""
    parts = [re.escape(p) for p in pattern.split("*")]
    regex = ".*".join(parts).replace("/.*/", "/(?:.*/)?")
    return re.fullmatch(regex, value, re.IGNORECASE) is not None


def in_scope(assigned: str, scope: str) -> bool:
    """Whether ``scope`` is ``assigned`` or below it (ARM ids, case-insensitive, segment-wise)."""
    a, s = assigned.rstrip("/").lower(), scope.rstrip("/").lower()
    return s == a or s.startswith(a + "/") or a == ""


#: DataAction patterns of the providers the programs use ("Azure resource provider operations":
#: ``isDataAction: true``): blob data, Key Vault secret/key data, scoring an online endpoint.
DATA_ACTIONS = (f"{BLOBS}/*", "Microsoft.KeyVault/vaults/secrets/getSecret/action",
                "Microsoft.KeyVault/vaults/secrets/readMetadata/action", "Microsoft.KeyVault/vaults/keys/*/action",
                f"{ML}/onlineEndpoints/score/action")


def is_data_action(action: str) -> bool:
    """Whether ``action`` is a data action (:data:`DATA_ACTIONS`). ``Microsoft.KeyVault/vaults/keys/read``
    exists as both; it is taken as the control-plane Action here (pass ``data=True`` for the other)."""
    return any(_wildcard(p, action) for p in DATA_ACTIONS)


def _permits(role: Mapping[str, Any], action: str, data: bool) -> tuple[bool, str]:
    """Whether a role definition grants ``action``; the second item names the entry that decided."""
    allow, deny = ("dataActions", "notDataActions") if data else ("actions", "notActions")
    granting = next((p for p in role.get(allow, []) if _wildcard(p, action)), None)
    if granting is None:
        return False, f"not in its {allow}"
    removing = next((p for p in role.get(deny, []) if _wildcard(p, action)), None)
    if removing is not None:
        return False, f"removed by its {deny} entry {removing!r}"
    return True, f"{allow} entry {granting!r}"


# -- ABAC conditions -----------------------------------------------------------------------------------
_TOKEN = re.compile(r"""\s*(?:(?P<paren>[()])|(?P<not>!)|(?P<bool>AND|OR)\b|(?P<match>ActionMatches)\s*\{\s*'(?P<act>[^']*)'\s*\}
    |(?P<sub>SubOperationMatches)|@(?P<src>Resource|Request|Principal|Environment)\[(?P<attr>[^\]]+)\]\s*
    (?P<op>[A-Za-z:]+)\s*(?:'(?P<str>[^']*)'|\{(?P<set>[^}]*)\}))""", re.VERBOSE)

_STRING_OPS = {
    "StringEquals": lambda a, e: a.lower() == e.lower(),
    "StringNotEquals": lambda a, e: a.lower() != e.lower(),
    "StringLike": lambda a, e: re.fullmatch(".*".join(map(re.escape, e.split("*"))), a) is not None,
    "StringNotLike": lambda a, e: re.fullmatch(".*".join(map(re.escape, e.split("*"))), a) is None,
    "StringStartsWith": lambda a, e: a.startswith(e),
}


def _tokens(condition: str) -> list[re.Match]:
    found, pos, text = [], 0, condition.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ValueError(f"ABAC condition not understood at {text[pos:pos + 40]!r}")
        found.append(m)
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return found


def _comparison(m: re.Match, action: str, attributes: Mapping[str, Any]) -> bool:
    if m["match"]:
        return _wildcard(m["act"], action)
    if m["sub"] or m["src"] in ("Principal", "Environment"):
        raise ValueError(f"ABAC expression not supported by this evaluator: {m.group(0).strip()!r}")
    value, op = attributes.get(m["attr"]), m["op"]
    if value is None:
        return False
    if op == "ForAnyOfAnyValues:GuidEquals" and m["set"] is not None:
        wanted = {g.strip().replace("-", "").lower() for g in m["set"].split(",")}
        values = value if isinstance(value, (list, tuple, set)) else [value]
        return any(str(v).replace("-", "").lower() in wanted for v in values)
    if op in _STRING_OPS and m["str"] is not None:
        return _STRING_OPS[op](str(value), m["str"])
    raise ValueError(f"ABAC operator {op!r} not supported by this evaluator")


def condition_holds(condition: str, action: str, attributes: Mapping[str, Any]) -> bool:
    """Evaluate an ABAC condition (the subset in the module docstring) for ``action`` with request/resource
    ``attributes`` (``{"<attribute name>": value}``). ``!`` binds tighter than ``AND``, ``AND`` than ``OR``.
    Raises ``ValueError`` on syntax or operators outside that subset."""
    tokens, pos = _tokens(condition), 0

    def expr(level: int) -> bool:
        nonlocal pos
        left = unary() if level == 1 else expr(1)
        word = ("OR", "AND")[level]
        while pos < len(tokens) and tokens[pos]["bool"] == word:
            pos += 1
            right = unary() if level == 1 else expr(1)
            left = (left or right) if word == "OR" else (left and right)
        return left

    def unary() -> bool:
        nonlocal pos
        m = tokens[pos]
        pos += 1
        if m["not"]:
            return not unary()
        if m["paren"] == "(":
            value = expr(0)
            if pos >= len(tokens) or tokens[pos]["paren"] != ")":
                raise ValueError(f"unbalanced parentheses in ABAC condition {condition!r}")
            pos += 1
            return value
        return _comparison(m, action, attributes)

    value = expr(0)
    if pos != len(tokens):
        raise ValueError(f"trailing tokens in ABAC condition {condition!r}")
    return value


def blob_attributes(scope: str) -> dict[str, str]:
    """``{BLOB_PATH: <path>}`` for a blob scope ``<container id>/blobs/<path>``; ``{}`` otherwise."""
    head, sep, path = scope.partition("/blobs/")
    return {BLOB_PATH: path} if sep and "/containers/" in head.lower() else {}


# -- the evaluator -------------------------------------------------------------------------------------
class Rbac:
    """Role assignments + role definitions -> :meth:`check`. ``definitions`` as :func:`definitions` returns.

    Raises ``KeyError`` in :meth:`check` for an assignment whose role GUID has no definition.
    """

    def __init__(self, assigned: Iterable[Assignment], roles: Mapping[str, Mapping[str, Any]]) -> None:
        self.assignments = list(assigned)
        self.roles = roles

    def without(self, principal: str, role: str, container: str | None = None) -> Rbac:
        """This model less ``principal``'s ``role`` assignments (those on the container named ``container`` only,
        if given): a put-back break. Raises ``ValueError`` when there is no such assignment to remove."""
        kept = [a for a in self.assignments if not (principal in (a.principal, a.principal_id) and a.role == role and (
            container is None or a.scope.lower().endswith(f"/containers/{container}".lower())))]
        if len(kept) == len(self.assignments):
            raise ValueError(f"{principal} has no {role} assignment{f' on {container}' if container else ''} to remove")
        return Rbac(kept, self.roles)

    def of(self, principal: str) -> list[Assignment]:
        """The assignments of ``principal`` (a name or a principal id)."""
        return [a for a in self.assignments if principal in (a.principal, a.principal_id)]

    def check(self, principal: str, action: str, scope: str, *, data: bool | None = None,
              attributes: Mapping[str, Any] | None = None) -> Decision:
        """May ``principal`` perform ``action`` on ``scope`` (an ARM id; a blob ``<container id>/blobs/<path>``)?

        ``data``: whether ``action`` is a DataAction (default :func:`is_data_action`). ``attributes``: ABAC
        request/resource attributes beyond the blob path derived from ``scope``.
        """
        data = is_data_action(action) if data is None else data
        attrs = {**blob_attributes(scope), **(attributes or {})}
        why = []
        for a in self.of(principal):
            if not in_scope(a.scope, scope):
                continue
            granted, detail = _permits(self.roles[a.role_id], action, data)
            if granted and a.condition and not condition_holds(a.condition, action, attrs):
                granted, detail = False, "its ABAC condition is false for this request"
            if granted:
                return Decision(True, f"{principal} may {action} on {scope}: {a.role} at {a.scope} ({detail})")
            why.append(f"{a.role} at {a.scope}: {detail}")
        kind = "data action" if data else "action"
        found = "; ".join(why) or "no role assignment at or above this scope"
        return Decision(False, f"{principal} may not {action} ({kind}) on {scope}: {found}")


# -- what the code's calls need ------------------------------------------------------------------------
_BLOB_DOC = "https://learn.microsoft.com/en-us/rest/api/storageservices/authorize-with-azure-active-directory#permissions-for-calling-data-operations"
_ML_DOC = "https://learn.microsoft.com/en-us/azure/role-based-access-control/permissions/ai-machine-learning#microsoftmachinelearningservices"
_EP_DOC = "https://learn.microsoft.com/en-us/azure/machine-learning/concept-endpoints-online-auth#authorization-for-control-plane-operations"

#: operation -> (action, scope template, source). Scope templates use the ``resource`` keywords of
#: :func:`required`: ``container`` (container ARM id), ``path`` (blob path), ``workspace`` (workspace ARM id),
#: ``name``/``version``/``endpoint``/``deployment``, ``registry``, ``vault``. Blob calls are those of
#: azure-storage-blob and adlfs (``open``/``cat`` = Get Blob, ``ls``/``find`` = List Blobs, ``pipe``/
#: ``put``/upload = Put Blob / Put Block (List), ``rm`` = Delete Blob); MLClient calls those of
#: training/backends/azureml.py, deployment/targets/azureml.py, deployment/registry/azureml.py,
#: deployment/smoke.py and training/cloud/azure.py.
OPERATIONS: dict[str, tuple[str, str, str]] = {
    "blob.read": (f"{BLOBS}/read", "{container}/blobs/{path}", _BLOB_DOC),
    "blob.list": (f"{BLOBS}/read", "{container}", _BLOB_DOC),
    # Put Blob / Put Block List: blobs/write (add/action only creates new blobs; adlfs may overwrite)
    "blob.write": (f"{BLOBS}/write", "{container}/blobs/{path}", _BLOB_DOC),
    "blob.delete": (f"{BLOBS}/delete", "{container}/blobs/{path}", _BLOB_DOC),
    # Get Container Properties through ARM is a control-plane Action, not a DataAction
    "container.get_properties": (f"{CONTAINERS}/read", "{container}", _BLOB_DOC),
    # Create Container, Set Container Metadata: containers/write; Delete Container: containers/delete (the
    # "Permissions" section of each operation's page in the Blob service REST API, learn.microsoft.com)
    "container.create": (f"{CONTAINERS}/write", "{container}", _BLOB_DOC),
    "container.set_metadata": (f"{CONTAINERS}/write", "{container}", _BLOB_DOC),
    "container.delete": (f"{CONTAINERS}/delete", "{container}", _BLOB_DOC),
    "workspaces.get": (f"{ML}/read", "{workspace}", _ML_DOC),
    "datastores.get": (f"{ML}/datastores/read", "{workspace}/datastores/{name}", _ML_DOC),
    "compute.get": (f"{ML}/computes/read", "{workspace}/computes/{name}", _ML_DOC),
    # MLClient.compute.list_sizes / list_usage: GET /subscriptions/{s}/providers/Microsoft.MachineLearningServices/
    # locations/{l}/vmSizes | /usages (the quota pre-flight, training/cloud/quota.py)
    "compute.list_sizes": ("Microsoft.MachineLearningServices/locations/vmsizes/read",
                           "/subscriptions/{subscription}/providers/Microsoft.MachineLearningServices/locations/{location}", _ML_DOC),
    "compute.list_usage": ("Microsoft.MachineLearningServices/locations/usages/read",
                           "/subscriptions/{subscription}/providers/Microsoft.MachineLearningServices/locations/{location}", _ML_DOC),
    "jobs.create_or_update": (f"{ML}/jobs/write", "{workspace}/jobs/{name}", _ML_DOC),
    "jobs.get": (f"{ML}/jobs/read", "{workspace}/jobs/{name}", _ML_DOC),
    "jobs.stream": (f"{ML}/jobs/read", "{workspace}/jobs/{name}", _ML_DOC),
    "jobs.begin_cancel": (f"{ML}/jobs/cancel/action", "{workspace}/jobs/{name}", _ML_DOC),
    "models.create_or_update": (f"{ML}/models/versions/write", "{workspace}/models/{name}/versions/{version}", _ML_DOC),
    "models.get": (f"{ML}/models/versions/read", "{workspace}/models/{name}/versions/{version}", _ML_DOC),
    "models.list": (f"{ML}/models/read", "{workspace}/models", _ML_DOC),
    "online_endpoints.begin_create_or_update": (f"{ML}/onlineEndpoints/write", "{workspace}/onlineEndpoints/{endpoint}", _EP_DOC),
    "online_endpoints.get": (f"{ML}/onlineEndpoints/read", "{workspace}/onlineEndpoints/{endpoint}", _EP_DOC),
    "online_endpoints.get_keys": (f"{ML}/onlineEndpoints/listKeys/action", "{workspace}/onlineEndpoints/{endpoint}", _EP_DOC),
    "online_deployments.begin_create_or_update": (
        f"{ML}/onlineEndpoints/deployments/write", "{workspace}/onlineEndpoints/{endpoint}/deployments/{deployment}", _ML_DOC),
    "online_deployments.get": (
        f"{ML}/onlineEndpoints/deployments/read", "{workspace}/onlineEndpoints/{endpoint}/deployments/{deployment}", _ML_DOC),
    "acr.push": ("Microsoft.ContainerRegistry/registries/push/write", "{registry}",
                 "https://learn.microsoft.com/en-us/azure/role-based-access-control/built-in-roles/containers#acrpush"),
    "acr.pull": ("Microsoft.ContainerRegistry/registries/pull/read", "{registry}",
                 "https://learn.microsoft.com/en-us/azure/role-based-access-control/built-in-roles/containers#acrpull"),
    "keyvault.get_secret": ("Microsoft.KeyVault/vaults/secrets/getSecret/action", "{vault}/secrets/{name}",
                            "https://learn.microsoft.com/en-us/azure/role-based-access-control/built-in-roles/security#key-vault-secrets-user"),
}


def required(operation: str, **resource: str) -> tuple[str, str]:
    """``(action, scope)`` one call needs, e.g. ``required("blob.write", container=<id>, path="p/r/x.pt")``.

    Raises ``KeyError`` for an operation not in :data:`OPERATIONS` and for a missing scope keyword.
    """
    action, template, _source = OPERATIONS[operation]
    return action, template.format(**resource)
