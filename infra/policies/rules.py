"""The security rules of the detops infrastructure: ONE source of truth, plain Python.

Used by the CrossGuard policy pack (``infra/policies/__main__.py``: ``pulumi preview --policy-pack
infra/policies``) and by the unit tests (``tests/infra``), which apply them to every resource the
programs register under Pulumi mocks.

A rule reads a resource's input properties as the Pulumi engine holds them (``props``: provider wire
names in camelCase, e.g. ``enableHttpsTrafficOnly``, ``enableNodePublicIP``; JSON policies as strings)
and returns a list of violation messages, empty when compliant. This module imports nothing from
Pulumi, so the rules can be read, reused and tested on their own.

- :data:`RESOURCE_RULES`: per-resource rules (``ResourceRule.check(props) -> list[str]``).
- :data:`STACK_RULES`: rules over the whole stack (``StackRule.check(resources) -> [(name, message)]``),
  for settings that live in companion resources (an S3 bucket's encryption, versioning, public access
  block and policy; an ECR repository's lifecycle policy).
- :func:`check_resource` and :func:`check_stack` apply them.

Where a value comes from a cloud default (Azure ML's ``enableNodePublicIp`` defaults to *true*) the
rule requires it explicitly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "RESOURCE_RULES",
    "STACK_RULES",
    "ResourceRule",
    "StackResource",
    "StackRule",
    "Violation",
    "check_resource",
    "check_stack",
    "rules_for",
]


@dataclass(frozen=True)
class Violation:
    """One broken rule: ``rule`` name, ``message``, and for stack rules the resource's logical name."""

    rule: str
    message: str
    resource: str | None = None

    def __str__(self) -> str:
        where = f" [{self.resource}]" if self.resource else ""
        return f"{self.rule}{where}: {self.message}"


@dataclass(frozen=True)
class ResourceRule:
    """A rule on single resources of ``resource_types`` (Pulumi type tokens)."""

    name: str
    description: str
    resource_types: frozenset[str]
    check: Callable[[Mapping[str, Any]], list[str]]


@dataclass(frozen=True)
class StackResource:
    """A resource as a stack rule sees it: type token, logical name, input properties."""

    type: str
    name: str
    props: Mapping[str, Any]


@dataclass(frozen=True)
class StackRule:
    """A rule over every resource of a stack; ``check`` returns ``(resource name, message)`` pairs."""

    name: str
    description: str
    check: Callable[[Sequence[StackResource]], list[tuple[str, str]]]


# ---------------------------------------------------------------------------------------------------
# helpers


def _get(props: Mapping[str, Any] | None, *path: str) -> Any:
    value: Any = props
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _json_document(value: Any, what: str) -> tuple[dict[str, Any] | None, list[str]]:
    if isinstance(value, Mapping):
        return dict(value), []
    if not isinstance(value, str) or not value.strip():
        return None, [f"{what} is missing"]
    try:
        document = json.loads(value)
    except json.JSONDecodeError as exc:
        return None, [f"{what} is not valid JSON ({exc.msg})"]
    if not isinstance(document, dict):
        return None, [f"{what} is not a JSON object"]
    return document, []


def _statements(document: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    statements = document.get("Statement", [])
    if isinstance(statements, Mapping):
        return [statements]
    return [s for s in statements if isinstance(s, Mapping)]


def _as_list(value: Any) -> list[Any]:
    """``value`` as a list: None -> [], a sequence (also CrossGuard's list proxy) -> its items, else [value]."""
    if value is None:
        return []
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return list(value)
    return [value]


# ---------------------------------------------------------------------------------------------------
# Azure (pulumi-azure-native v3 type tokens)

AZ_STORAGE = "azure-native:storage:StorageAccount"
AZ_CONTAINER = "azure-native:storage:BlobContainer"
AZ_VAULT = "azure-native:keyvault:Vault"
AZ_ACR = "azure-native:containerregistry:Registry"
AZ_ML_WORKSPACE = "azure-native:machinelearningservices:Workspace"
AZ_ML_COMPUTE = "azure-native:machinelearningservices:Compute"
AZ_AKS = "azure-native:containerservice:ManagedCluster"
AZ_AKS_POOL = "azure-native:containerservice:AgentPool"
AZ_ROLE_ASSIGNMENT = "azure-native:authorization:RoleAssignment"
AZ_FEDERATED = "azure-native:managedidentity:FederatedIdentityCredential"
AZ_EXTENSION = "azure-native:kubernetesconfiguration:Extension"
AZ_APP_INSIGHTS = "azure-native:applicationinsights:Component"
AZ_BLOB_SERVICE = "azure-native:storage:BlobServiceProperties"

# Built-in roles that grant write on everything or the right to grant access ("Azure built-in roles").
PRIVILEGED_AZURE_ROLES: Mapping[str, str] = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "18d7d88d-d35e-4fb3-a5c3-7773c20a72d9": "User Access Administrator",
    "f58310d9-a9f6-439a-9e8d-f62e7b41a168": "Role Based Access Control Administrator",
}
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
ENTRA_TOKEN_AUDIENCE = "api://AzureADTokenExchange"
_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_ADO_ISSUERS = (
    re.compile(rf"^https://vstoken\.dev\.azure\.com/{_GUID}$"),
    re.compile(rf"^https://login\.microsoftonline\.com/{_GUID}/v2\.0$"),
)
# GitHub subjects that only a protected ref or a deployment environment can carry (not pull requests).
_GITHUB_SUBJECT = re.compile(r"^repo:[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+:(ref:refs/(heads|tags)/[^*]+|environment:[^*]+)$")
# A read-only identity's pull-request pattern (training.github_oidc): one environment, one workflow file, any ref.
_GITHUB_READER_PATTERN = re.compile(
    r"^repo:([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+):environment:[^*:]+:job_workflow_ref:\1/\.github/workflows/[^*/@:]+@\*$")


def _storage_https_only(props: Mapping[str, Any]) -> list[str]:
    if props.get("enableHttpsTrafficOnly") is not True:
        return ["enableHttpsTrafficOnly must be true (HTTPS only)"]
    return []


def _storage_tls(props: Mapping[str, Any]) -> list[str]:
    if props.get("minimumTlsVersion") not in ("TLS1_2", "TLS1_3"):
        return [f"minimumTlsVersion must be TLS1_2 or newer (got {props.get('minimumTlsVersion')!r})"]
    return []


def _storage_no_public_blob(props: Mapping[str, Any]) -> list[str]:
    if props.get("allowBlobPublicAccess") is not False:
        return ["allowBlobPublicAccess must be set to false (anonymous blob access off)"]
    return []


def _container_private(props: Mapping[str, Any]) -> list[str]:
    access = props.get("publicAccess")
    if access not in (None, "None"):
        return [f"publicAccess must be 'None' (got {access!r})"]
    return []


def _blob_soft_delete(props: Mapping[str, Any]) -> list[str]:
    return [
        f"{key}.enabled must be true (deleted blobs/containers stay recoverable)"
        for key in ("deleteRetentionPolicy", "containerDeleteRetentionPolicy")
        if _get(props, key, "enabled") is not True
    ]


def _vault_rbac(props: Mapping[str, Any]) -> list[str]:
    problems = []
    if _get(props, "properties", "enableRbacAuthorization") is not True:
        problems.append("properties.enableRbacAuthorization must be true (Azure RBAC, not access policies)")
    if _get(props, "properties", "accessPolicies"):
        problems.append("properties.accessPolicies must be empty when using Azure RBAC")
    return problems


def _vault_recoverable(props: Mapping[str, Any]) -> list[str]:
    problems = []
    if _get(props, "properties", "enableSoftDelete") is False:
        problems.append("properties.enableSoftDelete must not be false")
    if _get(props, "properties", "enablePurgeProtection") is not True:
        problems.append("properties.enablePurgeProtection must be true")
    return problems


def _acr_no_admin(props: Mapping[str, Any]) -> list[str]:
    problems = []
    if props.get("adminUserEnabled") is not False:
        problems.append("adminUserEnabled must be set to false (use Entra ID roles AcrPush/AcrPull)")
    if props.get("anonymousPullEnabled") is True:
        problems.append("anonymousPullEnabled must not be true")
    return problems


def _identity_managed(props: Mapping[str, Any]) -> list[str]:
    kind = str(_get(props, "identity", "type") or "")
    if "SystemAssigned" not in kind and "UserAssigned" not in kind:
        return [f"identity.type must be SystemAssigned and/or UserAssigned (got {kind or None!r})"]
    return []


def _aml_compute_no_public_ip(props: Mapping[str, Any]) -> list[str]:
    if _get(props, "properties", "computeType") != "AmlCompute":
        return []
    inner = _get(props, "properties", "properties") or {}
    problems = []
    if inner.get("enableNodePublicIp") is not False:
        problems.append("properties.properties.enableNodePublicIp must be set to false (the API default is true)")
    if inner.get("remoteLoginPortPublicAccess") != "Disabled":
        problems.append("properties.properties.remoteLoginPortPublicAccess must be 'Disabled' (no public SSH)")
    return problems


def _aks_managed_identity(props: Mapping[str, Any]) -> list[str]:
    problems = _identity_managed(props)
    if _get(props, "servicePrincipalProfile", "secret"):
        problems.append("servicePrincipalProfile.secret must not be set (use a managed identity)")
    return problems


def _aks_azure_rbac(props: Mapping[str, Any]) -> list[str]:
    problems = []
    if props.get("enableRBAC") is False:
        problems.append("enableRBAC must not be false")
    if _get(props, "aadProfile", "managed") is not True:
        problems.append("aadProfile.managed must be true (Entra ID integration)")
    if _get(props, "aadProfile", "enableAzureRBAC") is not True:
        problems.append("aadProfile.enableAzureRBAC must be true (Azure RBAC for Kubernetes authorization)")
    return problems


def _aks_no_node_public_ip(props: Mapping[str, Any]) -> list[str]:
    pools = props.get("agentPoolProfiles")
    if pools is None:  # an AgentPool resource
        pools = [props]
    return [
        f"node pool {pool.get('name') or props.get('agentPoolName') or '?'!r}: enableNodePublicIP must not be true"
        for pool in _as_list(pools)
        if isinstance(pool, Mapping) and pool.get("enableNodePublicIP") is True
    ]


READER_ROLE = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
_RESOURCE_SCOPE = re.compile(r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/.+", re.IGNORECASE)
_GROUP_SCOPE = re.compile(r"^/subscriptions/[^/]+/resourceGroups/[^/]+$", re.IGNORECASE)


def _role_assignment_least_privilege(props: Mapping[str, Any]) -> list[str]:
    """Owner and User Access Administrator never. Contributor, Reader and RBAC Administrator only on one
    resource group (the infra identities of infra/bootstrap), RBAC Administrator only with an ABAC
    condition on the role definitions it may assign. Every other role on one resource."""
    problems = []
    role_id = str(props.get("roleDefinitionId") or "")
    guid = role_id.rsplit("/", 1)[-1].lower()
    scope = str(props.get("scope") or "")
    name = PRIVILEGED_AZURE_ROLES.get(guid)
    if not guid:
        problems.append("roleDefinitionId is missing")
    if name in ("Owner", "User Access Administrator"):
        problems.append(f"role {name!r} is too broad; grant a data-plane or service role")
    elif name in ("Contributor", "Role Based Access Control Administrator") or guid == READER_ROLE:
        if not _GROUP_SCOPE.match(scope) and not (guid == READER_ROLE and _RESOURCE_SCOPE.match(scope)):
            problems.append(f"role {name or 'Reader'!r} only on one resource group (got scope {scope!r})")
        if name == "Role Based Access Control Administrator" and "RoleDefinitionId" not in str(props.get("condition") or ""):
            problems.append("Role Based Access Control Administrator needs an ABAC condition naming the assignable roles")
    elif not _RESOURCE_SCOPE.match(scope):
        problems.append(f"scope must be a single resource, not a subscription, group or tenant (got {scope!r})")
    return problems


def _federated_credential_trusted(props: Mapping[str, Any]) -> list[str]:
    problems = []
    issuer = str(props.get("issuer") or "")
    subject = str(props.get("subject") or "")
    audiences = list(props.get("audiences") or [])
    if audiences != [ENTRA_TOKEN_AUDIENCE]:
        problems.append(f"audiences must be [{ENTRA_TOKEN_AUDIENCE!r}] (got {audiences!r})")
    if "*" in subject or not subject:
        problems.append(f"subject must be one exact identity, no wildcard (got {subject!r})")
    if issuer == GITHUB_ISSUER:
        if not _GITHUB_SUBJECT.match(subject):
            problems.append(
                f"GitHub subject {subject!r} must be 'repo:<owner>/<name>:ref:refs/heads/<branch>' or "
                "'repo:<owner>/<name>:environment:<environment>'"
            )
    elif not any(pattern.match(issuer) for pattern in _ADO_ISSUERS):
        problems.append(f"issuer {issuer!r} is not GitHub Actions or an Azure DevOps organization")
    return problems


def _aml_extension_secure(props: Mapping[str, Any]) -> list[str]:
    if props.get("extensionType") != "Microsoft.AzureML.Kubernetes":
        return []
    value = str(_get(props, "configurationSettings", "allowInsecureConnections") or "False")
    if value.lower() == "true":
        return ["configurationSettings.allowInsecureConnections must be 'False' (HTTPS inference only)"]
    return []


def _aks_private_api(props: Mapping[str, Any]) -> list[str]:
    profile = props.get("apiServerAccessProfile") or {}
    if _get(profile, "enablePrivateCluster") is True or _as_list(_get(profile, "authorizedIPRanges")):
        return []
    return ["apiServerAccessProfile: enablePrivateCluster must be true or authorizedIPRanges set (no open API server)"]


#: Tag that states why a prod resource keeps a public endpoint (only the bootstrap's state backend, which
#: GitHub-hosted runners reach with Entra ID tokens); the rule accepts it only with a reason in it.
PUBLIC_ACCESS_REASON_TAG = "public-access-reason"


def _prod_public_access(props: Mapping[str, Any]) -> list[str]:
    if _get(props, "tags", "environment") != "prod":
        return []
    if len(str(_get(props, "tags", PUBLIC_ACCESS_REASON_TAG) or "").strip()) >= 20:
        return []
    value = props.get("publicNetworkAccess") or _get(props, "properties", "publicNetworkAccess")
    if value != "Disabled":
        return [f"publicNetworkAccess must be 'Disabled' in prod (got {value!r}); traffic goes through private endpoints"]
    return []


def _storage_shared_key(props: Mapping[str, Any]) -> list[str]:
    if props.get("allowSharedKeyAccess") is not False:
        return ["allowSharedKeyAccess must be set to false (Entra ID only; no account keys or SAS)"]
    return []


def _vault_default_deny(props: Mapping[str, Any]) -> list[str]:
    action = _get(props, "properties", "networkAcls", "defaultAction")
    if action != "Deny":
        return [f"properties.networkAcls.defaultAction must be 'Deny' (got {action!r})"]
    return []


def _ml_compute_local_auth(props: Mapping[str, Any]) -> list[str]:
    kind = _get(props, "properties", "computeType")
    if kind in ("AmlCompute", "Kubernetes", "ComputeInstance") and _get(props, "properties", "disableLocalAuth") is not True:
        return [f"properties.disableLocalAuth must be true for {kind} compute (Entra ID only)"]
    return []


def _app_insights_workspace(props: Mapping[str, Any]) -> list[str]:
    if not props.get("workspaceResourceId"):
        return ["workspaceResourceId must be set (workspace-based Application Insights)"]
    return []


# ---------------------------------------------------------------------------------------------------
# AWS (pulumi-aws v7 type tokens)

AWS_BUCKET = "aws:s3/bucket:Bucket"
AWS_PAB = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
AWS_SSE = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
AWS_VERSIONING = "aws:s3/bucketVersioning:BucketVersioning"
AWS_BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
AWS_ECR = "aws:ecr/repository:Repository"
AWS_ECR_LIFECYCLE = "aws:ecr/lifecyclePolicy:LifecyclePolicy"
AWS_KMS_KEY = "aws:kms/key:Key"
AWS_ROLE = "aws:iam/role:Role"
AWS_ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
AWS_POLICY = "aws:iam/policy:Policy"
AWS_LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
AWS_OIDC_PROVIDER = "aws:iam/openIdConnectProvider:OpenIdConnectProvider"
AWS_OWNERSHIP = "aws:s3/bucketOwnershipControls:BucketOwnershipControls"

# Actions without resource-level permissions (AWS Service Authorization Reference): "Resource": "*" is
# the only possible value for them.
# The SageMaker registry listings are granted on "*": a listing names no single package (the roles'
# Describe/Create/Update stay on the stack's group). The quota pre-flight's reads (Service Quotas
# values, the running training jobs / endpoints) are listings too.
STAR_RESOURCE_ACTIONS = frozenset({
    "ecr:GetAuthorizationToken", "cloudwatch:PutMetricData", "sts:GetCallerIdentity",
    "sagemaker:ListModelPackages", "sagemaker:ListModelPackageGroups",
    "servicequotas:ListServiceQuotas", "servicequotas:ListAWSDefaultServiceQuotas",
    "sagemaker:ListTrainingJobs", "sagemaker:ListEndpoints",
})
_PUBLIC_ACLS = {"public-read", "public-read-write", "authenticated-read"}


def _s3_public_access_block(props: Mapping[str, Any]) -> list[str]:
    return [
        f"{key} must be true"
        for key in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
        if props.get(key) is not True
    ]


def _s3_sse_kms(props: Mapping[str, Any]) -> list[str]:
    rules = _as_list(props.get("rules"))
    if not rules:
        return ["rules must hold a default encryption rule"]
    problems = []
    for rule in rules:
        default = _get(rule, "applyServerSideEncryptionByDefault") or {}
        if default.get("sseAlgorithm") not in ("aws:kms", "aws:kms:dsse"):
            problems.append(f"sseAlgorithm must be aws:kms (got {default.get('sseAlgorithm')!r})")
        elif not default.get("kmsMasterKeyId"):
            problems.append("kmsMasterKeyId must name the project key (not the AWS-managed aws/s3 key)")
    return problems


def _s3_versioning(props: Mapping[str, Any]) -> list[str]:
    status = _get(props, "versioningConfiguration", "status")
    if status != "Enabled":
        return [f"versioningConfiguration.status must be 'Enabled' (got {status!r})"]
    return []


def _s3_tls_only(props: Mapping[str, Any]) -> list[str]:
    document, problems = _json_document(props.get("policy"), "policy")
    if document is None:
        return problems
    for statement in _statements(document):
        condition = _get(statement, "Condition", "Bool", "aws:SecureTransport")
        actions = _as_list(statement.get("Action"))
        if (
            statement.get("Effect") == "Deny"
            and statement.get("Principal") in ("*", {"AWS": "*"})
            and str(condition).lower() == "false"
            and ("s3:*" in actions or "*" in actions)
        ):
            return []
    return ["policy must deny s3:* to every principal when aws:SecureTransport is false (TLS only)"]


def _s3_no_public_acl(props: Mapping[str, Any]) -> list[str]:
    if props.get("acl") in _PUBLIC_ACLS:
        return [f"acl {props.get('acl')!r} makes the bucket public"]
    return []


def _s3_acls_disabled(props: Mapping[str, Any]) -> list[str]:
    ownership = _get(props, "rule", "objectOwnership")
    if ownership != "BucketOwnerEnforced":
        return [f"rule.objectOwnership must be BucketOwnerEnforced (ACLs disabled; got {ownership!r})"]
    return []


def _ecr_scan_on_push(props: Mapping[str, Any]) -> list[str]:
    if _get(props, "imageScanningConfiguration", "scanOnPush") is not True:
        return ["imageScanningConfiguration.scanOnPush must be true"]
    return []


def _ecr_immutable(props: Mapping[str, Any]) -> list[str]:
    if props.get("imageTagMutability") != "IMMUTABLE":
        return [f"imageTagMutability must be IMMUTABLE (got {props.get('imageTagMutability')!r})"]
    return []


def _kms_rotation(props: Mapping[str, Any]) -> list[str]:
    if props.get("enableKeyRotation") is not True:
        return ["enableKeyRotation must be true"]
    return []


def _principal_is_public(principal: Any) -> bool:
    if principal == "*":
        return True
    if isinstance(principal, Mapping):
        return any("*" in _as_list(value) for value in principal.values())
    return False


def _iam_trust_no_wildcard(props: Mapping[str, Any]) -> list[str]:
    document, problems = _json_document(props.get("assumeRolePolicy"), "assumeRolePolicy")
    if document is None:
        return problems
    return [
        f"statement {index}: Principal must not be '*' (anyone could assume the role)"
        for index, statement in enumerate(_statements(document))
        if statement.get("Effect") == "Allow" and _principal_is_public(statement.get("Principal"))
    ]


def _iam_oidc_trust_pinned(props: Mapping[str, Any]) -> list[str]:
    document, problems = _json_document(props.get("assumeRolePolicy"), "assumeRolePolicy")
    if document is None:
        return problems
    reader = (props.get("tags") or {}).get("detops:purpose") == "infra-reader"
    for index, statement in enumerate(_statements(document)):
        if "sts:AssumeRoleWithWebIdentity" not in _as_list(statement.get("Action")) or statement.get("Effect") != "Allow":
            continue
        conditions = statement.get("Condition") or {}
        pinned: dict[str, list[str]] = {}
        like: list[str] = []
        for operator, entries in conditions.items():
            if operator in ("StringEquals", "StringLike") and isinstance(entries, Mapping):
                for key, value in entries.items():
                    pinned.setdefault(key.rsplit(":", 1)[-1], []).extend(str(v) for v in _as_list(value))
                    if operator == "StringLike" and key.endswith(":sub"):
                        like.extend(str(v) for v in _as_list(value))
        if not pinned.get("aud"):
            problems.append(f"statement {index}: the token audience (':aud') must be pinned")
        subjects = pinned.get("sub", [])
        if not subjects:
            problems.append(f"statement {index}: the token subject (':sub') must be pinned")
        for subject in subjects:
            if reader and subject in like and _GITHUB_READER_PATTERN.match(subject):
                continue  # read only: one environment and workflow file, the ref of any pull request
            if subject.startswith("repo:") and not _GITHUB_SUBJECT.match(subject):
                problems.append(
                    f"statement {index}: GitHub subject {subject!r} must name one repository and a branch, tag "
                    "or environment, without wildcards"
                )
            elif "*" in subject.split(":", 1)[0] or subject.strip("*") == "":
                problems.append(f"statement {index}: subject {subject!r} is a wildcard")
    return problems


_GITHUB_MAIN_SUBJECT = re.compile(
    r"^repo:([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+):environment:[^*:]+:job_workflow_ref:\1/\.github/workflows/[^*/@:]+@refs/heads/main$")


def _iam_oidc_write_main_only(props: Mapping[str, Any]) -> list[str]:
    """A role other than the read-only infra-reader trusts GitHub subjects of main's workflow files only."""
    if (props.get("tags") or {}).get("detops:purpose") == "infra-reader":
        return []
    document, problems = _json_document(props.get("assumeRolePolicy"), "assumeRolePolicy")
    if document is None:
        return problems
    for index, statement in enumerate(_statements(document)):
        if "sts:AssumeRoleWithWebIdentity" not in _as_list(statement.get("Action")) or statement.get("Effect") != "Allow":
            continue
        for entries in (statement.get("Condition") or {}).values():
            for key, value in (entries.items() if isinstance(entries, Mapping) else []):
                if not key.endswith(":sub"):
                    continue
                for subject in (str(v) for v in _as_list(value)):
                    if subject.startswith("repo:") and not _GITHUB_MAIN_SUBJECT.match(subject):
                        problems.append(
                            f"statement {index}: write identity trusts {subject!r}; it must name an environment and "
                            "one workflow file on main (repo:R:environment:E:job_workflow_ref:R/.github/workflows/F@refs/heads/main)")
    return problems


def _iam_policy_least_privilege(props: Mapping[str, Any]) -> list[str]:
    document, problems = _json_document(props.get("policy"), "policy")
    if document is None:
        return problems
    for index, statement in enumerate(_statements(document)):
        if statement.get("Effect") != "Allow":
            continue
        label = statement.get("Sid") or f"statement {index}"
        if "NotAction" in statement or "NotResource" in statement:
            problems.append(f"{label}: NotAction/NotResource in an Allow statement grants too much")
        actions = [str(action) for action in _as_list(statement.get("Action"))]
        resources = [str(resource) for resource in _as_list(statement.get("Resource"))]
        for action in actions:
            if action == "*" or action.endswith(":*"):
                problems.append(f"{label}: action {action!r} is a wildcard over a whole service")
        if "*" in resources:
            loose = sorted(set(actions) - STAR_RESOURCE_ACTIONS)
            if loose:
                problems.append(f"{label}: Resource '*' for {', '.join(loose)} (name the resources)")
        if "iam:PassRole" in actions and any("*" in resource.split("/")[-1] for resource in resources):
            problems.append(f"{label}: iam:PassRole must name the exact role")
    return problems


def _ecr_kms(props: Mapping[str, Any]) -> list[str]:
    configs = _as_list(props.get("encryptionConfigurations"))
    if not configs or _get(configs[0], "encryptionType") != "KMS" or not _get(configs[0], "kmsKey"):
        return ["encryptionConfigurations must use encryptionType KMS with the project key (kmsKey)"]
    return []


#: SageMaker actions that must carry a condition on the named key in every Allow (AWS Service
#: Authorization Reference condition keys); the value check is the second element (None: any value).
SAGEMAKER_CONDITIONS: Mapping[str, tuple[str, Callable[[list[str]], bool] | None, str]] = {
    "sagemaker:createmodelpackage": (
        "sagemaker:ModelApprovalStatus", lambda values: values == ["PendingManualApproval"],
        "registration only as PendingManualApproval (approval stays with a person)",
    ),
    "sagemaker:updatemodelpackage": ("sagemaker:ModelApprovalStatus", None, "the approval statuses the role may set"),
    "sagemaker:createtrainingjob": ("sagemaker:VolumeKmsKeyArn", None, "the project key for training volumes"),
    "sagemaker:createendpointconfig": ("sagemaker:VolumeKmsKeyArn", None, "the project key for endpoint volumes"),
    "sagemaker:createmodel": ("sagemaker:NetworkIsolation", lambda values: values == ["true"], "network isolation"),
}


def _condition_values(statement: Mapping[str, Any], key: str) -> list[str] | None:
    found = None
    for operator, entries in (statement.get("Condition") or {}).items():
        if not isinstance(entries, Mapping) or operator.startswith(("StringNot", "ArnNot")):
            continue
        for name, value in entries.items():
            if name.lower() == key.lower():
                found = (found or []) + [str(v).lower() if isinstance(v, bool) else str(v) for v in _as_list(value)]
    return found


def _iam_sagemaker_conditions(props: Mapping[str, Any]) -> list[str]:
    document, problems = _json_document(props.get("policy"), "policy")
    if document is None:
        return problems
    for index, statement in enumerate(_statements(document)):
        if statement.get("Effect") != "Allow":
            continue
        label = statement.get("Sid") or f"statement {index}"
        for action in (str(a).lower() for a in _as_list(statement.get("Action"))):
            if action not in SAGEMAKER_CONDITIONS:
                continue
            key, accept, why = SAGEMAKER_CONDITIONS[action]
            values = _condition_values(statement, key)
            if values is None:
                problems.append(f"{label}: {action} needs a condition on {key} ({why})")
            elif accept is not None and not accept([v.lower() if v in ("True", "False") else v for v in values]):
                problems.append(f"{label}: {action} condition on {key} allows {values} ({why})")
    return problems


def _iam_no_partial_wildcards(props: Mapping[str, Any]) -> list[str]:
    document, problems = _json_document(props.get("policy"), "policy")
    if document is None:
        return problems
    for index, statement in enumerate(_statements(document)):
        if statement.get("Effect") != "Allow":
            continue
        label = statement.get("Sid") or f"statement {index}"
        for action in (str(a) for a in _as_list(statement.get("Action"))):
            name = action.split(":", 1)[-1]
            if ("*" in name or "?" in name) and name != "*":
                problems.append(f"{label}: action {action!r} is a partial wildcard (list the actions)")
    return problems


def _log_group_retention_encryption(props: Mapping[str, Any]) -> list[str]:
    problems = []
    if not props.get("retentionInDays"):
        problems.append("retentionInDays must be set (logs kept forever otherwise)")
    if not props.get("kmsKeyId"):
        problems.append("kmsKeyId must be set (encrypt with the project key)")
    return problems


def _oidc_provider_audience(props: Mapping[str, Any]) -> list[str]:
    if props.get("url") != GITHUB_ISSUER:
        return []
    clients = list(props.get("clientIdLists") or [])
    if clients != ["sts.amazonaws.com"]:
        return [f"clientIdLists must be ['sts.amazonaws.com'] for GitHub Actions (got {clients!r})"]
    return []


def _rule(name: str, description: str, types: Iterable[str], check: Callable[[Mapping[str, Any]], list[str]]) -> ResourceRule:
    return ResourceRule(name, description, frozenset(types), check)


RESOURCE_RULES: tuple[ResourceRule, ...] = (
    # Azure
    _rule("azure-storage-https-only", "Storage accounts accept HTTPS only.", [AZ_STORAGE], _storage_https_only),
    _rule("azure-storage-min-tls-1-2", "Storage accounts require TLS 1.2 or newer.", [AZ_STORAGE], _storage_tls),
    _rule("azure-storage-no-public-blob-access", "Storage accounts forbid anonymous blob access.", [AZ_STORAGE], _storage_no_public_blob),
    _rule("azure-storage-soft-delete", "Blob and container soft delete are on.", [AZ_BLOB_SERVICE], _blob_soft_delete),
    _rule("azure-blob-container-private", "Blob containers have no public access level.", [AZ_CONTAINER], _container_private),
    _rule("azure-key-vault-rbac", "Key Vaults use Azure RBAC, not access policies.", [AZ_VAULT], _vault_rbac),
    _rule("azure-key-vault-recoverable", "Key Vaults keep soft delete and purge protection on.", [AZ_VAULT], _vault_recoverable),
    _rule("azure-acr-admin-user-disabled", "Container registries have the admin user and anonymous pull off.", [AZ_ACR], _acr_no_admin),
    _rule("azure-ml-managed-identity", "Azure ML workspaces and computes run as managed identities.", [AZ_ML_WORKSPACE, AZ_ML_COMPUTE], _identity_managed),
    _rule("azure-aml-compute-no-public-ip", "AmlCompute nodes get no public IP and no public SSH.", [AZ_ML_COMPUTE], _aml_compute_no_public_ip),
    _rule("azure-aks-managed-identity", "AKS runs as a managed identity, no service principal secret.", [AZ_AKS], _aks_managed_identity),
    _rule("azure-aks-azure-rbac", "AKS uses Entra ID with Azure RBAC for Kubernetes authorization.", [AZ_AKS], _aks_azure_rbac),
    _rule("azure-aks-no-node-public-ip", "AKS nodes get no public IP.", [AZ_AKS, AZ_AKS_POOL], _aks_no_node_public_ip),
    _rule("azure-role-assignment-least-privilege", "No Owner or access administrator; Contributor/Reader/RBAC admin (with an ABAC condition) only on one resource group; other roles on one resource.", [AZ_ROLE_ASSIGNMENT], _role_assignment_least_privilege),
    _rule("azure-federated-credential-trusted", "Federated credentials trust GitHub Actions (branch/environment subjects) or Azure DevOps only.", [AZ_FEDERATED], _federated_credential_trusted),
    _rule("azure-ml-extension-https", "The Azure ML AKS extension serves inference over HTTPS only.", [AZ_EXTENSION], _aml_extension_secure),
    _rule("azure-app-insights-workspace-based", "Application Insights is workspace-based.", [AZ_APP_INSIGHTS], _app_insights_workspace),
    _rule("azure-aks-private-api-server", "AKS API servers are private or limited to authorized IP ranges.", [AZ_AKS], _aks_private_api),
    _rule("azure-public-network-disabled-in-prod", "In prod, storage, Key Vault, ACR and the Azure ML workspace have public network access disabled.", [AZ_STORAGE, AZ_VAULT, AZ_ACR, AZ_ML_WORKSPACE], _prod_public_access),
    _rule("azure-storage-shared-key-disabled", "Storage accounts accept Entra ID only (allowSharedKeyAccess false).", [AZ_STORAGE], _storage_shared_key),
    _rule("azure-key-vault-default-deny", "Key Vault network ACLs deny by default.", [AZ_VAULT], _vault_default_deny),
    _rule("azure-ml-compute-local-auth-disabled", "Azure ML compute disables local authentication.", [AZ_ML_COMPUTE], _ml_compute_local_auth),
    # AWS
    _rule("aws-s3-public-access-block", "S3 public access blocks set all four switches.", [AWS_PAB], _s3_public_access_block),
    _rule("aws-s3-sse-kms", "S3 default encryption is SSE-KMS with the project key.", [AWS_SSE], _s3_sse_kms),
    _rule("aws-s3-versioning-enabled", "S3 versioning is enabled.", [AWS_VERSIONING], _s3_versioning),
    _rule("aws-s3-tls-only-policy", "S3 bucket policies deny requests without TLS.", [AWS_BUCKET_POLICY], _s3_tls_only),
    _rule("aws-s3-no-public-acl", "S3 buckets have no public canned ACL.", [AWS_BUCKET], _s3_no_public_acl),
    _rule("aws-s3-acls-disabled", "S3 object ownership is BucketOwnerEnforced (ACLs disabled).", [AWS_OWNERSHIP], _s3_acls_disabled),
    _rule("aws-ecr-scan-on-push", "ECR repositories scan images on push.", [AWS_ECR], _ecr_scan_on_push),
    _rule("aws-ecr-immutable-tags", "ECR repositories have immutable tags.", [AWS_ECR], _ecr_immutable),
    _rule("aws-kms-key-rotation", "KMS keys rotate yearly.", [AWS_KMS_KEY], _kms_rotation),
    _rule("aws-iam-trust-no-wildcard-principal", "No role may be assumed by '*'.", [AWS_ROLE], _iam_trust_no_wildcard),
    _rule("aws-iam-oidc-write-main-only", "Write roles trust GitHub tokens of main's own workflow files only (the template repo, context, job_workflow_ref).", [AWS_ROLE], _iam_oidc_write_main_only),
    _rule("aws-iam-oidc-trust-pinned", "Web-identity trust pins audience and exact repository/branch/environment subjects.", [AWS_ROLE], _iam_oidc_trust_pinned),
    _rule("aws-iam-least-privilege", "IAM policies name their resources; no service-wide wildcards.", [AWS_ROLE_POLICY, AWS_POLICY], _iam_policy_least_privilege),
    _rule("aws-log-group-retention-kms", "Log groups have a retention and use the project key.", [AWS_LOG_GROUP], _log_group_retention_encryption),
    _rule("aws-ecr-kms-encryption", "ECR repositories are encrypted with the project KMS key.", [AWS_ECR], _ecr_kms),
    _rule("aws-iam-sagemaker-conditions", "SageMaker create/update permissions carry their conditions (ModelApprovalStatus, VolumeKmsKeyArn, NetworkIsolation).", [AWS_ROLE_POLICY, AWS_POLICY], _iam_sagemaker_conditions),
    _rule("aws-iam-no-partial-wildcards", "IAM Allow statements list their actions (no 's3:Put*').", [AWS_ROLE_POLICY, AWS_POLICY], _iam_no_partial_wildcards),
    _rule("aws-github-oidc-audience", "The GitHub OIDC provider accepts only the STS audience.", [AWS_OIDC_PROVIDER], _oidc_provider_audience),
)


# ---------------------------------------------------------------------------------------------------
# stack rules


def _s3_bucket_companions(resources: Sequence[StackResource]) -> list[tuple[str, str]]:
    covered: dict[str, set[str]] = {}
    for resource in resources:
        if resource.type in (AWS_PAB, AWS_SSE, AWS_VERSIONING, AWS_BUCKET_POLICY, AWS_OWNERSHIP):
            covered.setdefault(resource.type, set()).add(str(resource.props.get("bucket")))
    labels = {
        AWS_PAB: "BucketPublicAccessBlock",
        AWS_SSE: "BucketServerSideEncryptionConfiguration",
        AWS_VERSIONING: "BucketVersioning",
        AWS_BUCKET_POLICY: "BucketPolicy (TLS only)",
        AWS_OWNERSHIP: "BucketOwnershipControls",
    }
    problems = []
    for resource in resources:
        if resource.type != AWS_BUCKET:
            continue
        bucket = resource.props.get("bucket")
        if not bucket:
            problems.append((resource.name, "bucket has no explicit name, so its companions cannot be verified"))
            continue
        missing = [label for token, label in labels.items() if str(bucket) not in covered.get(token, set())]
        if missing:
            problems.append((resource.name, f"bucket {bucket!r} lacks {', '.join(missing)}"))
    return problems


def _ecr_lifecycle(resources: Sequence[StackResource]) -> list[tuple[str, str]]:
    with_policy = {str(r.props.get("repository")) for r in resources if r.type == AWS_ECR_LIFECYCLE}
    return [
        (r.name, f"repository {r.props.get('name')!r} has no lifecycle policy")
        for r in resources
        if r.type == AWS_ECR and str(r.props.get("name")) not in with_policy
    ]


REQUIRED_TAGS = ("project", "environment", "managed-by")


def _required_tags(resources: Sequence[StackResource]) -> list[tuple[str, str]]:
    """Azure resources that have a location carry the required tags; every AWS provider sets them as
    default tags (pulumi-aws applies them to every taggable resource it creates)."""
    problems = []
    for resource in resources:
        if resource.type.startswith("azure-native:") and resource.props.get("location"):
            tags = resource.props.get("tags") or {}
            missing = [t for t in REQUIRED_TAGS if not _get(tags, t)]
            if missing:
                problems.append((resource.name, f"tags lack {', '.join(missing)}"))
        elif resource.type == "pulumi:providers:aws":
            default, _ = _json_document(resource.props.get("defaultTags"), "defaultTags")
            tags = (default or {}).get("tags") or {}
            missing = [t for t in REQUIRED_TAGS if not _get(tags, t)]
            if missing:
                problems.append((resource.name, f"defaultTags lack {', '.join(missing)}"))
    return problems


def _aks_azureml_fit(resources: Sequence[StackResource]) -> list[tuple[str, str]]:
    """AKS with the Azure ML extension is configured the way the extension supports ("Deploy Azure
    Machine Learning extension on AKS", limitations; "Workspace managed network isolation", limitations):
    local accounts NOT disabled; HTTPS with sslCname and a certificate (sslSecret, or sslCertPemFile and
    sslKeyPemFile as protected settings); inferenceRouterHA only with >= 3 system nodes; no managed
    network on a workspace with Kubernetes compute."""
    extensions = [r for r in resources if r.type == AZ_EXTENSION and r.props.get("extensionType") == "Microsoft.AzureML.Kubernetes"]
    if not extensions:
        return []
    problems = []
    clusters = [r for r in resources if r.type == AZ_AKS]
    for cluster in clusters:
        if cluster.props.get("disableLocalAccounts") is True:
            problems.append((cluster.name, "disableLocalAccounts must not be true: the Azure ML extension does not support it"))
    for extension in extensions:
        settings = extension.props.get("configurationSettings") or {}
        protected = extension.props.get("configurationProtectedSettings") or {}
        if str(settings.get("allowInsecureConnections", "False")).lower() != "true":
            has_cert = settings.get("sslSecret") or (protected.get("sslCertPemFile") and protected.get("sslKeyPemFile"))
            if not settings.get("sslCname") or not has_cert:
                problems.append((extension.name, "allowInsecureConnections=False needs sslCname and sslSecret (or sslCertPemFile/sslKeyPemFile)"))
        if str(settings.get("inferenceRouterHA", "True")).lower() == "true":
            for cluster in clusters:
                system = [p for p in _as_list(cluster.props.get("agentPoolProfiles")) if isinstance(p, Mapping) and p.get("mode") == "System"]
                smallest = min((int(p.get("minCount") or p.get("count") or 0) for p in system), default=0)
                if smallest < 3:
                    problems.append((cluster.name, f"inferenceRouterHA needs at least 3 system nodes (minCount {smallest})"))
    if any(r.type == AZ_ML_COMPUTE and _get(r.props, "properties", "computeType") == "Kubernetes" for r in resources):
        for workspace in (r for r in resources if r.type == AZ_ML_WORKSPACE):
            mode = _get(workspace.props, "managedNetwork", "isolationMode")
            if mode not in (None, "Disabled"):
                problems.append((workspace.name, f"managed network ({mode}) does not support Kubernetes compute; set isolationMode Disabled"))
    return problems


def _aks_local_accounts(resources: Sequence[StackResource]) -> list[tuple[str, str]]:
    """AKS disables local accounts, except a cluster that hosts the Azure ML extension (which needs them)."""
    if any(r.type == AZ_EXTENSION and r.props.get("extensionType") == "Microsoft.AzureML.Kubernetes" for r in resources):
        return []
    return [
        (r.name, "disableLocalAccounts must be true (no static cluster-admin kubeconfig)")
        for r in resources
        if r.type == AZ_AKS and r.props.get("disableLocalAccounts") is not True
    ]


STACK_RULES: tuple[StackRule, ...] = (
    StackRule(
        "aws-s3-bucket-protected",
        "Every S3 bucket has a public access block, SSE-KMS, versioning, ownership controls and a TLS-only policy.",
        _s3_bucket_companions,
    ),
    StackRule("aws-ecr-lifecycle-policy", "Every ECR repository has a lifecycle policy.", _ecr_lifecycle),
    StackRule("required-tags", "Azure resources and AWS providers carry the project, environment and managed-by tags.", _required_tags),
    StackRule("azure-aks-azureml-extension-compatible", "AKS hosting the Azure ML extension is configured as the extension supports.", _aks_azureml_fit),
    StackRule("azure-aks-local-accounts-disabled", "AKS local accounts are disabled (except for the Azure ML extension, which needs them).", _aks_local_accounts),
)


# ---------------------------------------------------------------------------------------------------
# entry points


def rules_for(resource_type: str) -> list[ResourceRule]:
    """The resource rules that apply to ``resource_type`` (a Pulumi type token)."""
    return [rule for rule in RESOURCE_RULES if resource_type in rule.resource_types]


def check_resource(resource_type: str, props: Mapping[str, Any]) -> list[Violation]:
    """Apply every resource rule for ``resource_type`` to ``props``; return the violations (empty: compliant)."""
    return [
        Violation(rule.name, message) for rule in rules_for(resource_type) for message in rule.check(props)
    ]


def check_stack(resources: Iterable[StackResource]) -> list[Violation]:
    """Apply every stack rule to ``resources``; return the violations with the resource names."""
    listed = list(resources)
    return [
        Violation(rule.name, message, name) for rule in STACK_RULES for name, message in rule.check(listed)
    ]
