"""Each security rule with a compliant and a non-compliant resource, both through the rules module and
through the CrossGuard policy pack's real analyzer (``pulumi_policy``'s gRPC servicer, called in-process),
so the pack and the unit tests provably apply the same rules."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2
from pulumi.runtime import proto
from pulumi_policy import EnforcementLevel
from pulumi_policy.policy import _PolicyAnalyzerServicer

from infra.policies import pack, rules

SUB = "/subscriptions/00000000-1111-2222-3333-444444444444"
RG = f"{SUB}/resourceGroups/rg"
ROLE = f"{SUB}/providers/Microsoft.Authorization/roleDefinitions/"


def _deny_tls(principal: Any = "*", condition: str = "false") -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Deny",
                    "Principal": principal,
                    "Action": "s3:*",
                    "Resource": ["arn:aws:s3:::b", "arn:aws:s3:::b/*"],
                    "Condition": {"Bool": {"aws:SecureTransport": condition}},
                }
            ],
        }
    )


def _github_trust(sub: Any, aud: str | None = "sts.amazonaws.com") -> str:
    equals: dict[str, Any] = {"token.actions.githubusercontent.com:sub": sub}
    if aud:
        equals["token.actions.githubusercontent.com:aud"] = aud
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Federated": "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"},
                    "Action": "sts:AssumeRoleWithWebIdentity",
                    "Condition": {"StringEquals": equals},
                }
            ],
        }
    )


def _policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


_STORAGE = {"enableHttpsTrafficOnly": True, "minimumTlsVersion": "TLS1_2", "allowBlobPublicAccess": False}
_VAULT = {"properties": {"enableRbacAuthorization": True, "enableSoftDelete": True, "enablePurgeProtection": True,
                          "networkAcls": {"defaultAction": "Deny"}}}
_AML = {
    "identity": {"type": "SystemAssigned"},
    "properties": {
        "computeType": "AmlCompute",
        "disableLocalAuth": True,
        "properties": {"enableNodePublicIp": False, "remoteLoginPortPublicAccess": "Disabled"},
    },
}
_AKS = {
    "identity": {"type": "SystemAssigned"},
    "enableRBAC": True,
    "aadProfile": {"managed": True, "enableAzureRBAC": True},
    "disableLocalAccounts": True,
    "agentPoolProfiles": [{"name": "system", "enableNodePublicIP": False}],
}
_FED = {
    "issuer": "https://token.actions.githubusercontent.com",
    "subject": "repo:octo/detops:environment:prod",
    "audiences": ["api://AzureADTokenExchange"],
}
_PAB = {"blockPublicAcls": True, "blockPublicPolicy": True, "ignorePublicAcls": True, "restrictPublicBuckets": True}
_SSE = {"rules": [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": "arn:aws:kms:eu-west-1:1:key/k"}}]}
_ECR = {
    "imageScanningConfiguration": {"scanOnPush": True},
    "imageTagMutability": "IMMUTABLE",
    "encryptionConfigurations": [{"encryptionType": "KMS", "kmsKey": "arn:aws:kms:eu-west-1:1:key/k"}],
}
_PKG = "arn:aws:sagemaker:eu-west-1:1:model-package/detops-dev-detector/*"


def _sm(action: str, condition: dict[str, Any] | None = None) -> str:
    statement: dict[str, Any] = {"Sid": "S", "Effect": "Allow", "Action": [action], "Resource": [_PKG]}
    if condition is not None:
        statement["Condition"] = condition
    return _policy(statement)
_GOOD_STATEMENT = {"Sid": "Read", "Effect": "Allow", "Action": ["s3:GetObject"], "Resource": ["arn:aws:s3:::b/*"]}


def _with(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``base`` with the dotted ``path`` set to ``value``."""
    out = copy.deepcopy(base)
    node = out
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[keys[-1]] = value
    return out


# rule name -> (resource type, compliant props, non-compliant props)
CASES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "azure-storage-https-only": (rules.AZ_STORAGE, _STORAGE, _with(_STORAGE, "enableHttpsTrafficOnly", False)),
    "azure-storage-min-tls-1-2": (rules.AZ_STORAGE, _STORAGE, _with(_STORAGE, "minimumTlsVersion", "TLS1_0")),
    "azure-storage-no-public-blob-access": (rules.AZ_STORAGE, _STORAGE, {k: v for k, v in _STORAGE.items() if k != "allowBlobPublicAccess"}),
    "azure-storage-soft-delete": (
        rules.AZ_BLOB_SERVICE,
        {"deleteRetentionPolicy": {"enabled": True, "days": 7}, "containerDeleteRetentionPolicy": {"enabled": True, "days": 7}},
        {"deleteRetentionPolicy": {"enabled": True, "days": 7}},
    ),
    "azure-blob-container-private": (rules.AZ_CONTAINER, {"publicAccess": "None"}, {"publicAccess": "Blob"}),
    "azure-key-vault-rbac": (rules.AZ_VAULT, _VAULT, _with(_VAULT, "properties.enableRbacAuthorization", False)),
    "azure-key-vault-recoverable": (rules.AZ_VAULT, _VAULT, {"properties": {"enableRbacAuthorization": True}}),
    "azure-acr-admin-user-disabled": (rules.AZ_ACR, {"adminUserEnabled": False}, {"adminUserEnabled": True}),
    "azure-ml-managed-identity": (rules.AZ_ML_WORKSPACE, {"identity": {"type": "SystemAssigned"}}, {"identity": {"type": "None"}}),
    "azure-aml-compute-no-public-ip": (rules.AZ_ML_COMPUTE, _AML, _with(_AML, "properties.properties", {"remoteLoginPortPublicAccess": "Disabled"})),
    "azure-aks-managed-identity": (rules.AZ_AKS, _AKS, {**{k: v for k, v in _AKS.items() if k != "identity"}, "servicePrincipalProfile": {"clientId": "x", "secret": "s"}}),
    "azure-aks-azure-rbac": (rules.AZ_AKS, _AKS, _with(_AKS, "aadProfile.enableAzureRBAC", False)),
    "azure-aks-no-node-public-ip": (rules.AZ_AKS_POOL, {"agentPoolName": "gpu", "enableNodePublicIP": False}, {"agentPoolName": "gpu", "enableNodePublicIP": True}),
    "azure-role-assignment-least-privilege": (
        rules.AZ_ROLE_ASSIGNMENT,
        {"roleDefinitionId": ROLE + "8311e382-0749-4cb8-b61a-304f252e45ec", "scope": f"{RG}/providers/Microsoft.ContainerRegistry/registries/acr"},
        {"roleDefinitionId": ROLE + "b24988ac-6180-42a0-ab88-20f7382dd24c", "scope": SUB},
    ),
    "azure-federated-credential-trusted": (rules.AZ_FEDERATED, _FED, _with(_FED, "subject", "repo:octo/detops:pull_request")),
    "azure-ml-extension-https": (
        rules.AZ_EXTENSION,
        {"extensionType": "Microsoft.AzureML.Kubernetes", "configurationSettings": {"allowInsecureConnections": "False"}},
        {"extensionType": "Microsoft.AzureML.Kubernetes", "configurationSettings": {"allowInsecureConnections": "True"}},
    ),
    "azure-app-insights-workspace-based": (rules.AZ_APP_INSIGHTS, {"workspaceResourceId": f"{RG}/providers/x/y"}, {"kind": "web"}),
    "aws-s3-public-access-block": (rules.AWS_PAB, _PAB, _with(_PAB, "restrictPublicBuckets", False)),
    "aws-s3-sse-kms": (rules.AWS_SSE, _SSE, {"rules": [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}}]}),
    "aws-s3-versioning-enabled": (rules.AWS_VERSIONING, {"versioningConfiguration": {"status": "Enabled"}}, {"versioningConfiguration": {"status": "Suspended"}}),
    "aws-s3-tls-only-policy": (rules.AWS_BUCKET_POLICY, {"policy": _deny_tls()}, {"policy": _deny_tls(condition="true")}),
    "aws-s3-no-public-acl": (rules.AWS_BUCKET, {"bucket": "b"}, {"bucket": "b", "acl": "public-read"}),
    "aws-s3-acls-disabled": (rules.AWS_OWNERSHIP, {"rule": {"objectOwnership": "BucketOwnerEnforced"}}, {"rule": {"objectOwnership": "ObjectWriter"}}),
    "aws-ecr-scan-on-push": (rules.AWS_ECR, _ECR, _with(_ECR, "imageScanningConfiguration.scanOnPush", False)),
    "aws-ecr-immutable-tags": (rules.AWS_ECR, _ECR, _with(_ECR, "imageTagMutability", "MUTABLE")),
    "aws-kms-key-rotation": (rules.AWS_KMS_KEY, {"enableKeyRotation": True}, {"enableKeyRotation": False}),
    "aws-iam-trust-no-wildcard-principal": (
        rules.AWS_ROLE,
        {"assumeRolePolicy": _policy({"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"})},
        {"assumeRolePolicy": _policy({"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"})},
    ),
    "aws-iam-oidc-trust-pinned": (
        rules.AWS_ROLE,
        {"assumeRolePolicy": _github_trust(["repo:octo/detops:ref:refs/heads/main", "repo:octo/detops:environment:prod"])},
        {"assumeRolePolicy": _github_trust("repo:octo/*")},
    ),
    "aws-iam-oidc-write-main-only": (
        rules.AWS_ROLE,
        {"assumeRolePolicy": _github_trust(["repo:octo/detops:environment:staging:job_workflow_ref:octo/detops/.github/workflows/release.yml@refs/heads/main"])},
        {"assumeRolePolicy": _github_trust(["repo:octo/detops:environment:staging"])},
    ),
    "aws-iam-least-privilege": (
        rules.AWS_ROLE_POLICY,
        {"policy": _policy(_GOOD_STATEMENT, {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"})},
        {"policy": _policy(_GOOD_STATEMENT, {"Effect": "Allow", "Action": "s3:*", "Resource": "*"})},
    ),
    "aws-log-group-retention-kms": (
        rules.AWS_LOG_GROUP,
        {"name": "/aws/sagemaker/TrainingJobs", "retentionInDays": 30, "kmsKeyId": "arn:aws:kms:eu-west-1:1:key/k"},
        {"name": "/aws/sagemaker/TrainingJobs"},
    ),
    "azure-aks-private-api-server": (
        rules.AZ_AKS, {**_AKS, "apiServerAccessProfile": {"enablePrivateCluster": True}}, {**_AKS, "apiServerAccessProfile": {}},
    ),
    "azure-public-network-disabled-in-prod": (
        rules.AZ_VAULT,
        {"tags": {"environment": "prod"}, "properties": {"tenantId": "t", "publicNetworkAccess": "Disabled"}},
        {"tags": {"environment": "prod"}, "properties": {"tenantId": "t", "publicNetworkAccess": "Enabled"}},
    ),
    "azure-storage-shared-key-disabled": (rules.AZ_STORAGE, {**_STORAGE, "allowSharedKeyAccess": False}, _STORAGE),
    "azure-key-vault-default-deny": (
        rules.AZ_VAULT, _with(_VAULT, "properties.networkAcls", {"defaultAction": "Deny"}), _with(_VAULT, "properties.networkAcls", {"defaultAction": "Allow"}),
    ),
    "azure-ml-compute-local-auth-disabled": (
        rules.AZ_ML_COMPUTE, _with(_AML, "properties.disableLocalAuth", True), _with(_AML, "properties.disableLocalAuth", False),
    ),
    "aws-ecr-kms-encryption": (rules.AWS_ECR, _ECR, _with(_ECR, "encryptionConfigurations", [{"encryptionType": "AES256"}])),
    "aws-iam-sagemaker-conditions": (
        rules.AWS_ROLE_POLICY,
        {"policy": _sm("sagemaker:CreateModelPackage", {"StringEquals": {"sagemaker:ModelApprovalStatus": "PendingManualApproval"}})},
        {"policy": _sm("sagemaker:CreateModelPackage")},
    ),
    "aws-iam-no-partial-wildcards": (
        rules.AWS_ROLE_POLICY,
        {"policy": _policy({"Effect": "Allow", "Action": ["s3:PutObject"], "Resource": ["arn:aws:s3:::b/*"]})},
        {"policy": _policy({"Effect": "Allow", "Action": ["s3:Put*"], "Resource": ["arn:aws:s3:::b/*"]})},
    ),
    "aws-github-oidc-audience": (
        rules.AWS_OIDC_PROVIDER,
        {"url": "https://token.actions.githubusercontent.com", "clientIdLists": ["sts.amazonaws.com"]},
        {"url": "https://token.actions.githubusercontent.com", "clientIdLists": ["sts.amazonaws.com", "my-app"]},
    ),
}


def _bucket_stack(*, without: str | None = None) -> list[rules.StackResource]:
    resources = [
        rules.StackResource(rules.AWS_BUCKET, "data", {"bucket": "detops-data"}),
        rules.StackResource(rules.AWS_PAB, "data-pab", {"bucket": "detops-data", **_PAB}),
        rules.StackResource(rules.AWS_SSE, "data-sse", {"bucket": "detops-data", **_SSE}),
        rules.StackResource(rules.AWS_VERSIONING, "data-ver", {"bucket": "detops-data", "versioningConfiguration": {"status": "Enabled"}}),
        rules.StackResource(rules.AWS_BUCKET_POLICY, "data-policy", {"bucket": "detops-data", "policy": _deny_tls()}),
        rules.StackResource(rules.AWS_OWNERSHIP, "data-own", {"bucket": "detops-data", "rule": {"objectOwnership": "BucketOwnerEnforced"}}),
        rules.StackResource(rules.AWS_ECR, "training", {"name": "detops/training", **_ECR}),
        rules.StackResource(rules.AWS_ECR_LIFECYCLE, "training-lc", {"repository": "detops/training", "policy": "{}"}),
    ]
    return [r for r in resources if r.type != without]


_TAGS = {"project": "detops", "environment": "dev", "managed-by": "pulumi"}
_EXT = {"extensionType": "Microsoft.AzureML.Kubernetes", "configurationSettings": {
    "allowInsecureConnections": "False", "sslCname": "ml.example.com", "sslSecret": "azureml-tls", "inferenceRouterHA": "True"}}
_CLUSTER = {**_AKS, "disableLocalAccounts": False, "agentPoolProfiles": [{"name": "system", "mode": "System", "minCount": 3}]}


def _aks_stack(*, cluster: dict[str, Any] = _CLUSTER, extension: dict[str, Any] | None = _EXT,
               isolation: str = "Disabled") -> list[rules.StackResource]:
    resources = [
        rules.StackResource(rules.AZ_AKS, "aks", cluster),
        rules.StackResource(rules.AZ_ML_WORKSPACE, "mlw", {"managedNetwork": {"isolationMode": isolation}}),
        rules.StackResource(rules.AZ_ML_COMPUTE, "attach", {"properties": {"computeType": "Kubernetes"}}),
    ]
    if extension is not None:
        resources.append(rules.StackResource(rules.AZ_EXTENSION, "azureml", extension))
    return resources


STACK_CASES: dict[str, tuple[list[rules.StackResource], list[rules.StackResource]]] = {
    "aws-s3-bucket-protected": (_bucket_stack(), _bucket_stack(without=rules.AWS_SSE)),
    "aws-ecr-lifecycle-policy": (_bucket_stack(), _bucket_stack(without=rules.AWS_ECR_LIFECYCLE)),
    "required-tags": (
        [rules.StackResource(rules.AZ_VAULT, "kv", {"location": "westeurope", "tags": _TAGS})],
        [rules.StackResource(rules.AZ_VAULT, "kv", {"location": "westeurope", "tags": {"project": "detops"}})],
    ),
    "azure-aks-azureml-extension-compatible": (_aks_stack(), _aks_stack(cluster={**_CLUSTER, "disableLocalAccounts": True})),
    "azure-aks-local-accounts-disabled": (
        _aks_stack(cluster={**_AKS, "disableLocalAccounts": True}, extension=None),
        _aks_stack(cluster={**_AKS, "disableLocalAccounts": False}, extension=None),
    ),
}

# Each way the Azure ML extension's constraints can be broken (the stack rule names the resource).
AKS_BREAKS = {
    "local accounts disabled": (_aks_stack(cluster={**_CLUSTER, "disableLocalAccounts": True}), "aks"),
    "TLS without sslCname": (_aks_stack(extension=_with(_EXT, "configurationSettings.sslCname", "")), "azureml"),
    "TLS without a certificate": (
        _aks_stack(extension={**_EXT, "configurationSettings": {k: v for k, v in _EXT["configurationSettings"].items() if k != "sslSecret"}}),
        "azureml",
    ),
    "router HA on 1 system node": (_aks_stack(cluster=_with(_CLUSTER, "agentPoolProfiles.0.minCount", 1)), "aks"),
    "managed network with Kubernetes compute": (_aks_stack(isolation="AllowInternetOutbound"), "mlw"),
}


@pytest.mark.parametrize("case", sorted(AKS_BREAKS))
def test_aks_azureml_constraints(case: str) -> None:
    resources, culprit = AKS_BREAKS[case]
    broken = [v for v in rules.check_stack(resources) if v.rule == "azure-aks-azureml-extension-compatible"]
    assert [v.resource for v in broken] == [culprit], broken


def test_public_access_exemption_needs_a_reason() -> None:
    base = {"tags": {"environment": "prod"}, "publicNetworkAccess": "Enabled"}
    assert rules.check_resource(rules.AZ_STORAGE, {**base, "tags": {"environment": "prod", "public-access-reason": "x"}})
    reason = "Pulumi state for GitHub-hosted runners; Entra ID only"
    found = rules.check_resource(rules.AZ_STORAGE, {**base, "tags": {"environment": "prod", "public-access-reason": reason}})
    assert "azure-public-network-disabled-in-prod" not in {v.rule for v in found}


def test_sagemaker_conditions_rule_details() -> None:
    approved = {"StringEquals": {"sagemaker:ModelApprovalStatus": ["PendingManualApproval", "Approved"]}}
    assert rules.check_resource(rules.AWS_ROLE_POLICY, {"policy": _sm("sagemaker:CreateModelPackage", approved)})
    negated = {"StringNotEquals": {"sagemaker:ModelApprovalStatus": "Approved"}}
    assert rules.check_resource(rules.AWS_ROLE_POLICY, {"policy": _sm("sagemaker:CreateModelPackage", negated)})
    assert rules.check_resource(rules.AWS_ROLE_POLICY, {"policy": _sm("sagemaker:CreateModel", {"Bool": {"sagemaker:NetworkIsolation": "false"}})})
    assert not rules.check_resource(rules.AWS_ROLE_POLICY, {"policy": _sm("sagemaker:CreateModel", {"Bool": {"sagemaker:NetworkIsolation": "true"}})})


def test_every_rule_has_a_case() -> None:
    assert set(CASES) == {rule.name for rule in rules.RESOURCE_RULES}
    assert set(STACK_CASES) == {rule.name for rule in rules.STACK_RULES}
    assert len(rules.RESOURCE_RULES) + len(rules.STACK_RULES) == 45


@pytest.mark.parametrize("rule_name", sorted(CASES))
def test_resource_rule(rule_name: str) -> None:
    resource_type, good, bad = CASES[rule_name]
    assert rule_name in {rule.name for rule in rules.rules_for(resource_type)}
    assert [v for v in rules.check_resource(resource_type, good) if v.rule == rule_name] == []
    broken = [v for v in rules.check_resource(resource_type, bad) if v.rule == rule_name]
    assert broken, f"{rule_name} accepted {bad}"
    assert all(v.message for v in broken)


@pytest.mark.parametrize("rule_name", sorted(STACK_CASES))
def test_stack_rule(rule_name: str) -> None:
    good, bad = STACK_CASES[rule_name]
    assert [v for v in rules.check_stack(good) if v.rule == rule_name] == []
    broken = [v for v in rules.check_stack(bad) if v.rule == rule_name]
    assert len(broken) >= 1 and all(v.resource in {"data", "training", "kv", "aks", "mlw", "azureml"} for v in broken)


def test_unrelated_resource_type_is_not_checked() -> None:
    assert rules.check_resource("azure-native:resources:ResourceGroup", {"location": "westeurope"}) == []


def test_rules_report_bad_json_policies() -> None:
    violations = rules.check_resource(rules.AWS_ROLE_POLICY, {"policy": "{not json"})
    assert [v.rule for v in violations] == ["aws-iam-least-privilege", "aws-iam-sagemaker-conditions", "aws-iam-no-partial-wildcards"]
    assert all("not valid JSON" in v.message for v in violations)


def test_github_subject_rules_cover_wildcards_and_pull_requests() -> None:
    for subject in ("repo:octo/*:ref:refs/heads/main", "repo:octo/detops:pull_request", "repo:octo/detops:ref:refs/heads/*"):
        assert rules.check_resource(rules.AZ_FEDERATED, {**_FED, "subject": subject}), subject
    ado = {**_FED, "issuer": "https://vstoken.dev.azure.com/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "subject": "sc://org/proj/conn"}
    assert rules.check_resource(rules.AZ_FEDERATED, ado) == []
    assert rules.check_resource(rules.AZ_FEDERATED, {**ado, "issuer": "https://evil.example.com"})


def test_pass_role_on_wildcard_is_rejected() -> None:
    statement = {"Effect": "Allow", "Action": ["iam:PassRole"], "Resource": ["arn:aws:iam::1:role/*"]}
    messages = [v.message for v in rules.check_resource(rules.AWS_ROLE_POLICY, {"policy": _policy(statement)})]
    assert any("PassRole" in m for m in messages)


# --- the CrossGuard pack, through pulumi_policy's own analyzer -------------------------------------


@pytest.fixture(scope="module")
def analyzer() -> _PolicyAnalyzerServicer:
    """The servicer that ``PolicyPack`` serves to the Pulumi engine, holding the pack's policies."""
    return _PolicyAnalyzerServicer(
        pack.PACK_NAME, "0.1.0", pack.build_policies(), EnforcementLevel.MANDATORY, None, None, None, None, None, None, None
    )


def _struct(props: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    json_format.ParseDict(props, message)
    return message


def _analyze(analyzer: _PolicyAnalyzerServicer, resource_type: str, props: dict[str, Any]) -> set[str]:
    request = proto.AnalyzeRequest(
        type=resource_type, properties=_struct(props), urn=f"urn:pulumi:dev::detops::{resource_type}::r", name="r"
    )
    response = analyzer.Analyze(request, None)
    return {d.policyName for d in response.diagnostics}


def test_pack_mirrors_rules() -> None:
    names = [policy.name for policy in pack.build_policies()]
    assert names == [r.name for r in rules.RESOURCE_RULES] + [r.name for r in rules.STACK_RULES]


@pytest.mark.parametrize("rule_name", sorted(CASES))
def test_policy_pack_analyzer(analyzer: _PolicyAnalyzerServicer, rule_name: str) -> None:
    resource_type, good, bad = CASES[rule_name]
    assert rule_name not in _analyze(analyzer, resource_type, good)
    assert rule_name in _analyze(analyzer, resource_type, bad)


@pytest.mark.parametrize("rule_name", sorted(STACK_CASES))
def test_policy_pack_stack_analyzer(analyzer: _PolicyAnalyzerServicer, rule_name: str) -> None:
    good, bad = STACK_CASES[rule_name]

    def names(resources: list[rules.StackResource]) -> set[str]:
        request = proto.AnalyzeStackRequest(
            resources=[
                proto.AnalyzerResource(type=r.type, properties=_struct(dict(r.props)), urn=f"urn:pulumi:dev::detops::{r.type}::{r.name}", name=r.name)
                for r in resources
            ]
        )
        return {d.policyName for d in analyzer.AnalyzeStack(request, None).diagnostics}

    assert rule_name not in names(good)
    assert rule_name in names(bad)


def test_policy_pack_serves_the_rules_over_grpc() -> None:
    """Start infra/policies/__main__.py as the Pulumi CLI does (its own folder, no repository on the path),
    then ask it over gRPC on 127.0.0.1 for its policies and to analyze a non-compliant resource."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import grpc
    from google.protobuf import empty_pb2
    from pulumi.runtime.proto import analyzer_pb2_grpc

    folder = Path(__file__).resolve().parents[2] / "infra" / "policies"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    process = subprocess.Popen(
        [sys.executable, str(folder / "__main__.py")], cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        port = int(process.stdout.readline().decode().strip())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = analyzer_pb2_grpc.AnalyzerStub(channel)
            info = stub.GetAnalyzerInfo(empty_pb2.Empty(), timeout=30)
            assert info.name == pack.PACK_NAME
            assert [p.name for p in info.policies] == [r.name for r in (*rules.RESOURCE_RULES, *rules.STACK_RULES)]
            resource_type, _, bad = CASES["azure-acr-admin-user-disabled"]
            response = stub.Analyze(
                proto.AnalyzeRequest(type=resource_type, properties=_struct(bad), urn="urn:pulumi:dev::p::t::acr", name="acr"),
                timeout=30,
            )
            assert {d.policyName for d in response.diagnostics} == {"azure-acr-admin-user-disabled"}
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert b"Traceback" not in stderr, stderr.decode()[-2000:]


def test_github_pattern_subjects_only_for_the_read_only_infra_reader() -> None:
    """A StringLike subject pinned to one environment and workflow file, any ref, passes only on a role tagged
    infra-reader (the pull-request preview); on any other role, or with a wildcard elsewhere, it is refused."""
    pattern = "repo:octo/detops:environment:infra-preview-dev:job_workflow_ref:octo/detops/.github/workflows/infra.yml@*"
    trust = json.loads(_github_trust([]))
    trust["Statement"][0]["Condition"] = {
        "StringEquals": {"token.actions.githubusercontent.com:aud": "sts.amazonaws.com"},
        "StringLike": {"token.actions.githubusercontent.com:sub": [pattern]},
    }
    props = {"assumeRolePolicy": json.dumps(trust), "tags": {"detops:purpose": "infra-reader"}}
    assert rules.check_resource(rules.AWS_ROLE, props) == []
    assert rules.check_resource(rules.AWS_ROLE, {**props, "tags": {"detops:purpose": "trainer"}})
    loose = json.dumps(trust).replace("workflows/infra.yml@*", "workflows/*")
    assert rules.check_resource(rules.AWS_ROLE, {**props, "assumeRolePolicy": loose})
    main = "repo:octo/detops:environment:training:job_workflow_ref:octo/detops/.github/workflows/train.yml@refs/heads/main"
    assert rules.check_resource(rules.AWS_ROLE, {"assumeRolePolicy": _github_trust([main])}) == []
