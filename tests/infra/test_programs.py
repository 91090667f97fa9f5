"""Both Pulumi programs, with the dev and the prod stack settings, under Pulumi mocks.

Asserts over every registered resource: the security rules of infra/policies/rules.py, the GPU
cluster's scaling, the identities' role scopes and federation subjects, and the stack outputs.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from infra_helpers import REPO, run_cloud, stack_settings, with_settings
from infra_mocks import AWS_ACCOUNT_ID, SUBSCRIPTION_ID, ProgramRun, RegisteredResource

from infra.components.azure import ROLE_IDS
from infra.policies import rules

CASES = [("azure", "dev"), ("azure", "prod"), ("aws", "dev"), ("aws", "prod")]


def custom(run: ProgramRun) -> list[RegisteredResource]:
    """The cloud resources (components, ``detops:...``, hold no settings of their own)."""
    return [r for r in run.resources if not r.type.startswith("detops:")]


def one(run: ProgramRun, token: str, name: str | None = None) -> RegisteredResource:
    found = [r for r in run.of_type(token) if name is None or r.name == name]
    assert len(found) == 1, f"expected one {token} {name or ''}, got {[r.name for r in found]}"
    return found[0]


def violations(run: ProgramRun) -> list[str]:
    resources = custom(run)
    found = [f"{r.type} {r.name}: {v}" for r in resources for v in rules.check_resource(r.type, r.inputs)]
    found += [str(v) for v in rules.check_stack(rules.StackResource(r.type, r.name, r.inputs) for r in resources)]
    return found


# --- security rules over every resource ------------------------------------------------------------


@pytest.mark.parametrize(("cloud", "stack"), CASES)
def test_every_resource_passes_the_security_rules(program_runs, cloud: str, stack: str) -> None:
    run = program_runs[cloud, stack]
    assert violations(run) == []
    checked = [r for r in custom(run) if rules.rules_for(r.type)]
    print(f"{cloud}/{stack}: {len(custom(run))} resources registered, {len(checked)} matched by resource rules, "
          f"{sum(len(rules.rules_for(r.type)) for r in checked)} rule checks, {len(rules.STACK_RULES)} stack rules")
    assert len(checked) >= 20


def test_every_rule_applies_to_some_registered_resource(program_runs) -> None:
    registered = {r.type for run in program_runs.values() for r in custom(run)}
    unused = [rule.name for rule in rules.RESOURCE_RULES if not rule.resource_types & registered]
    assert unused == []


def test_the_rules_catch_a_regression_in_a_registered_resource(program_runs) -> None:
    """Break one setting in a real registered resource: the same check must now fail."""
    run = program_runs["azure", "dev"]
    gpu = one(run, rules.AZ_ML_COMPUTE, "detopsdev-mlw-gpu-cluster")
    broken = json.loads(json.dumps(gpu.inputs))
    del broken["properties"]["properties"]["enableNodePublicIp"]  # what the SDK default would give: true
    assert [v.rule for v in rules.check_resource(gpu.type, broken)] == ["azure-aml-compute-no-public-ip"]


def test_azure_resource_inventory(program_runs) -> None:
    counts = Counter(r.type for r in custom(program_runs["azure", "dev"]))
    assert counts[rules.AZ_STORAGE] == 1
    assert counts[rules.AZ_CONTAINER] == 4
    assert counts[rules.AZ_VAULT] == 1
    assert counts["azure-native:operationalinsights:Workspace"] == 1
    assert counts[rules.AZ_APP_INSIGHTS] == 1
    assert counts[rules.AZ_ACR] == 1
    assert counts[rules.AZ_ML_WORKSPACE] == 1
    assert counts[rules.AZ_ML_COMPUTE] == 3  # GPU cluster, CPU cluster, attached AKS
    assert counts[rules.AZ_AKS] == 1
    assert counts[rules.AZ_AKS_POOL] == 2
    assert counts[rules.AZ_EXTENSION] == 1
    assert counts["azure-native:managedidentity:UserAssignedIdentity"] == 1
    assert counts["azure-native:network:PrivateEndpoint"] == 0  # an option, off in dev


def test_aws_resource_inventory(program_runs) -> None:
    counts = Counter(r.type for r in custom(program_runs["aws", "prod"]))
    assert counts[rules.AWS_BUCKET] == 2
    for companion in (rules.AWS_PAB, rules.AWS_SSE, rules.AWS_VERSIONING, rules.AWS_BUCKET_POLICY, rules.AWS_OWNERSHIP):
        assert counts[companion] == 2, companion
    assert counts[rules.AWS_ECR] == 2 and counts[rules.AWS_ECR_LIFECYCLE] == 2
    assert counts[rules.AWS_KMS_KEY] == 1
    assert counts[rules.AWS_LOG_GROUP] == 2
    assert counts[rules.AWS_ROLE] == 2 and counts[rules.AWS_ROLE_POLICY] == 2
    assert counts["aws:sagemaker/modelPackageGroup:ModelPackageGroup"] == 1
    assert counts[rules.AWS_OIDC_PROVIDER] == 1
    assert not any(call.startswith("azure") for call in program_runs["aws", "prod"].calls)


# --- GPU cluster and AKS scaling --------------------------------------------------------------------


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_gpu_cluster_scaling(program_runs, stack: str) -> None:
    settings = stack_settings("azure", stack)
    gpu = one(program_runs["azure", stack], rules.AZ_ML_COMPUTE, f"{settings.name_prefix}-mlw-gpu-cluster")
    assert gpu.inputs["computeName"] == "gpu-cluster"
    props = gpu.inputs["properties"]["properties"]
    assert props["vmSize"] == settings.gpu_vm_size
    assert props["scaleSettings"] == {
        "minNodeCount": 0,
        "maxNodeCount": settings.gpu_max_nodes,
        "nodeIdleTimeBeforeScaleDown": f"PT{settings.gpu_idle_seconds}S",
    }
    assert props["vmPriority"] == ("LowPriority" if settings.gpu_low_priority else "Dedicated")
    assert props["enableNodePublicIp"] is False


def test_gpu_cluster_settings_differ_between_dev_and_prod(program_runs) -> None:
    def scale(stack: str) -> dict[str, Any]:
        run = program_runs["azure", stack]
        gpu = next(r for r in run.of_type(rules.AZ_ML_COMPUTE) if r.inputs["computeName"] == "gpu-cluster")
        return gpu.inputs["properties"]["properties"]

    dev, prod = scale("dev"), scale("prod")
    assert (dev["scaleSettings"]["maxNodeCount"], prod["scaleSettings"]["maxNodeCount"]) == (2, 4)
    assert (dev["vmPriority"], prod["vmPriority"]) == ("LowPriority", "Dedicated")
    assert (dev["vmSize"], prod["vmSize"]) == ("Standard_NC4as_T4_v3", "Standard_NC8as_T4_v3")


def test_gpu_node_public_ip_is_a_deliberate_setting(program_runs) -> None:
    settings = with_settings(stack_settings("azure", "dev"), gpu_node_public_ip=True)
    run = run_cloud("azure", settings)
    assert [v for v in violations(run) if "azure-aml-compute-no-public-ip" in v]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_aks_node_pools_autoscale(program_runs, stack: str) -> None:
    settings = stack_settings("azure", stack)
    run = program_runs["azure", stack]
    pools = {r.inputs["agentPoolName"]: r.inputs for r in run.of_type(rules.AZ_AKS_POOL)}
    assert set(pools) == {"cpu", "gpu"}
    assert (pools["cpu"]["minCount"], pools["cpu"]["maxCount"]) == (0, settings.aks_cpu_max_nodes)
    assert (pools["gpu"]["minCount"], pools["gpu"]["maxCount"]) == (0, settings.aks_gpu_max_nodes)
    assert all(pool["enableAutoScaling"] is True and pool["mode"] == "User" for pool in pools.values())
    assert pools["gpu"]["vmSize"] == settings.aks_gpu_vm_size and pools["gpu"]["nodeTaints"] == ["sku=gpu:NoSchedule"]
    cluster = one(run, rules.AZ_AKS)
    assert cluster.inputs["identity"] == {"type": "SystemAssigned"}
    assert cluster.inputs["disableLocalAccounts"] is True
    assert cluster.inputs["aadProfile"] == {"managed": True, "enableAzureRBAC": True}


def test_aks_is_attached_to_the_workspace_with_the_azureml_extension(program_runs) -> None:
    run = program_runs["azure", "prod"]
    cluster = one(run, rules.AZ_AKS)
    extension = one(run, rules.AZ_EXTENSION)
    assert extension.inputs["extensionType"] == "Microsoft.AzureML.Kubernetes"
    assert extension.inputs["clusterName"] == cluster.outputs["name"]
    assert extension.inputs["configurationSettings"]["inferenceRouterHA"] == "True"  # prod
    attached = next(r for r in run.of_type(rules.AZ_ML_COMPUTE) if r.inputs["computeName"] == "aks-compute")
    assert attached.inputs["properties"]["computeType"] == "Kubernetes"
    assert attached.inputs["properties"]["resourceId"] == cluster.id
    assert attached.inputs["workspaceName"] == one(run, rules.AZ_ML_WORKSPACE).outputs["name"]


def test_workspace_links_storage_key_vault_app_insights_and_acr(program_runs) -> None:
    run = program_runs["azure", "dev"]
    workspace = one(run, rules.AZ_ML_WORKSPACE).inputs
    assert workspace["storageAccount"] == one(run, rules.AZ_STORAGE).id
    assert workspace["keyVault"] == one(run, rules.AZ_VAULT).id
    assert workspace["applicationInsights"] == one(run, rules.AZ_APP_INSIGHTS).id
    assert workspace["containerRegistry"] == one(run, rules.AZ_ACR).id
    assert workspace["identity"] == {"type": "SystemAssigned"}
    assert workspace["managedNetwork"]["isolationMode"] == "AllowInternetOutbound"


# --- identities -------------------------------------------------------------------------------------


def _role(assignment: RegisteredResource) -> str:
    guid = assignment.inputs["roleDefinitionId"].rsplit("/", 1)[-1]
    return {v: k for k, v in ROLE_IDS.items()}[guid]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_azure_ci_identity_role_scopes(program_runs, stack: str) -> None:
    run = program_runs["azure", stack]
    identity = one(run, "azure-native:managedidentity:UserAssignedIdentity")
    containers = {r.inputs["containerName"]: r.id for r in run.of_type(rules.AZ_CONTAINER)}
    grants = {
        (_role(a), a.inputs["scope"])
        for a in run.of_type(rules.AZ_ROLE_ASSIGNMENT)
        if a.inputs["principalId"] == identity.outputs["principalId"]
    }
    assert grants == {
        ("AzureML Data Scientist", one(run, rules.AZ_ML_WORKSPACE).id),
        ("Storage Blob Data Reader", containers["datasets"]),
        ("Storage Blob Data Contributor", containers["runs"]),
        ("Storage Blob Data Contributor", containers["models"]),
        ("AcrPush", one(run, rules.AZ_ACR).id),
        ("Key Vault Secrets User", one(run, rules.AZ_VAULT).id),
    }
    for assignment in run.of_type(rules.AZ_ROLE_ASSIGNMENT):
        assert assignment.inputs["roleDefinitionId"].startswith(f"/subscriptions/{SUBSCRIPTION_ID}/providers/")
        assert assignment.inputs["principalType"] == "ServicePrincipal"
    kubelet = [a for a in run.of_type(rules.AZ_ROLE_ASSIGNMENT) if a.inputs["principalId"].startswith("kubelet-")]
    assert [(_role(a), a.inputs["scope"]) for a in kubelet] == [("AcrPull", one(run, rules.AZ_ACR).id)]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_azure_federated_credentials(program_runs, stack: str) -> None:
    settings = stack_settings("azure", stack)
    run = program_runs["azure", stack]
    identity = one(run, "azure-native:managedidentity:UserAssignedIdentity")
    credentials = run.of_type(rules.AZ_FEDERATED)
    assert sorted(c.inputs["subject"] for c in credentials) == sorted(settings.github.oidc_subjects())
    for credential in credentials:
        assert credential.inputs["resourceName"] == identity.outputs["name"]
        assert credential.inputs["issuer"] == "https://token.actions.githubusercontent.com"
        assert credential.inputs["audiences"] == ["api://AzureADTokenExchange"]


def test_azure_devops_federation() -> None:
    settings = with_settings(
        stack_settings("azure", "dev"),
        azure_devops={
            "organization": "contoso",
            "organization_id": "0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0",
            "project": "detops",
            "service_connection": "detops-dev",
        },
    )
    run = run_cloud("azure", settings)
    ado = [c for c in run.of_type(rules.AZ_FEDERATED) if "vstoken" in c.inputs["issuer"]]
    assert [(c.inputs["issuer"], c.inputs["subject"]) for c in ado] == [
        ("https://vstoken.dev.azure.com/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "sc://contoso/detops/detops-dev")
    ]
    assert violations(run) == []


def _policy_statements(resource: RegisteredResource, key: str = "policy") -> dict[str, dict[str, Any]]:
    return {s["Sid"]: s for s in json.loads(resource.inputs[key])["Statement"]}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_sagemaker_role_is_limited_to_the_project_resources(program_runs, stack: str) -> None:
    run = program_runs["aws", stack]
    buckets = {r.name.rsplit("-", 1)[-1]: r.outputs["arn"] for r in run.of_type(rules.AWS_BUCKET)}
    repositories = sorted(r.outputs["arn"] for r in run.of_type(rules.AWS_ECR))
    log_groups = sorted(f"{r.outputs['arn']}:*" for r in run.of_type(rules.AWS_LOG_GROUP))
    role = next(r for r in run.of_type(rules.AWS_ROLE) if "sagemaker" in r.name)
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
    assert trust == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "sagemaker.amazonaws.com"},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"aws:SourceAccount": AWS_ACCOUNT_ID}},
        }
    ]
    statements = _policy_statements(next(r for r in run.of_type(rules.AWS_ROLE_POLICY) if "sagemaker" in r.name))
    assert statements["ReadObjects"]["Resource"] == [f"{buckets['data']}/*", f"{buckets['runs']}/*"]
    assert statements["WriteObjects"]["Resource"] == [f"{buckets['runs']}/*"]  # datasets are read-only
    assert sorted(statements["PullImages"]["Resource"]) == repositories
    assert sorted(statements["WriteLogs"]["Resource"]) == log_groups
    assert statements["UseProjectKey"]["Resource"] == [one(run, rules.AWS_KMS_KEY).outputs["arn"]]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_ci_role_trusts_only_this_repository_branch_and_environments(program_runs, stack: str) -> None:
    settings = stack_settings("aws", stack)
    run = program_runs["aws", stack]
    role = next(r for r in run.of_type(rules.AWS_ROLE) if r.name.endswith("-ci"))
    (statement,) = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
    assert statement["Principal"] == {"Federated": one(run, rules.AWS_OIDC_PROVIDER).outputs["arn"]}
    assert statement["Condition"] == {
        "StringEquals": {
            "token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
            "token.actions.githubusercontent.com:sub": [
                f"repo:{settings.github.repository}:ref:refs/heads/main",
                *[f"repo:{settings.github.repository}:environment:{env}" for env in settings.github.environments],
            ],
        }
    }
    statements = _policy_statements(next(r for r in run.of_type(rules.AWS_ROLE_POLICY) if r.name.endswith("-ci-access")))
    sagemaker_role = next(r for r in run.of_type(rules.AWS_ROLE) if "sagemaker" in r.name)
    assert statements["PassSageMakerRole"]["Resource"] == [sagemaker_role.outputs["arn"]]
    assert statements["PassSageMakerRole"]["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    actions = {a for s in statements.values() for a in s["Action"]}
    assert "sagemaker:UpdateModelPackage" not in actions  # approval stays with a person
    group = one(run, "aws:sagemaker/modelPackageGroup:ModelPackageGroup").inputs["modelPackageGroupName"]
    assert any(res.endswith(f":model-package/{group}/*") for res in statements["RegisterModelVersions"]["Resource"])


def test_existing_github_oidc_provider_is_reused() -> None:
    arn = f"arn:aws:iam::{AWS_ACCOUNT_ID}:oidc-provider/token.actions.githubusercontent.com"
    run = run_cloud("aws", with_settings(stack_settings("aws", "dev"), github_oidc_provider_arn=arn))
    assert run.of_type(rules.AWS_OIDC_PROVIDER) == []
    role = next(r for r in run.of_type(rules.AWS_ROLE) if r.name.endswith("-ci"))
    assert json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]["Principal"] == {"Federated": arn}


# --- options -------------------------------------------------------------------------------------------


def test_private_endpoints_option() -> None:
    settings = with_settings(stack_settings("azure", "prod"), private_endpoints=True)
    run = run_cloud("azure", settings)
    assert violations(run) == []
    endpoints = {r.inputs["privateLinkServiceConnections"][0]["groupIds"][0]: r for r in run.of_type("azure-native:network:PrivateEndpoint")}
    assert set(endpoints) == {"blob", "vault", "registry", "amlworkspace"}
    assert endpoints["blob"].inputs["privateLinkServiceConnections"][0]["privateLinkServiceId"] == one(run, rules.AZ_STORAGE).id
    zones = {r.inputs["privateZoneName"] for r in run.of_type("azure-native:privatedns:PrivateZone")}
    assert zones == {
        "privatelink.blob.core.windows.net",
        "privatelink.vaultcore.azure.net",
        "privatelink.azurecr.io",
        "privatelink.api.azureml.ms",
        "privatelink.notebooks.azure.net",
    }
    assert len(run.of_type("azure-native:privatedns:VirtualNetworkLink")) == 5
    assert one(run, rules.AZ_STORAGE).inputs["publicNetworkAccess"] == "Disabled"
    assert one(run, rules.AZ_VAULT).inputs["properties"]["publicNetworkAccess"] == "Disabled"
    assert one(run, rules.AZ_ACR).inputs["publicNetworkAccess"] == "Disabled"
    assert one(run, rules.AZ_ML_WORKSPACE).inputs["publicNetworkAccess"] == "Disabled"


def test_aks_can_be_left_out() -> None:
    run = run_cloud("azure", with_settings(stack_settings("azure", "dev"), aks_enabled=False))
    assert run.of_type(rules.AZ_AKS) == [] and run.of_type(rules.AZ_EXTENSION) == []
    assert "aks_compute_name" not in run.outputs
    assert violations(run) == []


# --- outputs -----------------------------------------------------------------------------------------

AZURE_OUTPUTS = {
    "region", "resource_group_name", "storage_account_name", "datasets_container", "runs_container",
    "models_container", "captures_container", "key_vault_name", "key_vault_uri", "acr_name", "acr_login_server",
    "workspace_name", "gpu_cluster_name", "cpu_cluster_name", "aks_cluster_name", "aks_compute_name",
    "ci_client_id", "tenant_id", "subscription_id",
}
AWS_OUTPUTS = {
    "region", "s3_data_bucket", "s3_runs_bucket", "training_ecr_repository_url", "serving_ecr_repository_url",
    "sagemaker_role_arn", "model_package_group_name", "ci_role_arn", "kms_key_arn",
}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_azure_outputs(program_runs, stack: str) -> None:
    settings = stack_settings("azure", stack)
    run = program_runs["azure", stack]
    out = run.outputs
    assert AZURE_OUTPUTS <= set(out) and all(out[k] not in (None, "") for k in AZURE_OUTPUTS)
    assert out["region"] == settings.region and out["environment"] == stack
    assert out["resource_group_name"] == one(run, "azure-native:resources:ResourceGroup").outputs["name"]
    assert out["storage_account_name"] == one(run, rules.AZ_STORAGE).outputs["name"]
    assert (out["datasets_container"], out["runs_container"], out["models_container"], out["captures_container"]) == (
        "datasets", "runs", "models", "captures",
    )
    assert out["workspace_name"] == one(run, rules.AZ_ML_WORKSPACE).outputs["name"]
    assert out["acr_login_server"] == f"{one(run, rules.AZ_ACR).outputs['name']}.azurecr.io"
    assert (out["gpu_cluster_name"], out["cpu_cluster_name"], out["aks_compute_name"]) == ("gpu-cluster", "cpu-cluster", "aks-compute")
    assert out["ci_client_id"] == one(run, "azure-native:managedidentity:UserAssignedIdentity").outputs["clientId"]
    assert out["key_vault_uri"].startswith("https://") and out["storage_account_name"].startswith(settings.name_prefix)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_aws_outputs(program_runs, stack: str) -> None:
    settings = stack_settings("aws", stack)
    run = program_runs["aws", stack]
    out = run.outputs
    assert AWS_OUTPUTS <= set(out) and all(out[k] not in (None, "") for k in AWS_OUTPUTS)
    assert out["region"] == settings.region
    assert out["s3_runs_bucket"] == f"{settings.name_prefix}-{AWS_ACCOUNT_ID}-{settings.region}-runs"
    assert out["s3_data_bucket"] == f"{settings.name_prefix}-{AWS_ACCOUNT_ID}-{settings.region}-data"
    assert out["training_ecr_repository_url"].endswith(f"/{settings.name_prefix}/training")
    assert out["serving_ecr_repository_url"].endswith(f"/{settings.name_prefix}/serving")
    assert out["sagemaker_role_arn"] == next(r for r in run.of_type(rules.AWS_ROLE) if "sagemaker" in r.name).outputs["arn"]
    assert out["ci_role_arn"] == next(r for r in run.of_type(rules.AWS_ROLE) if r.name.endswith("-ci")).outputs["arn"]
    assert out["model_package_group_name"] == f"{settings.name_prefix}-detector"
    assert (out["training_instance_type"], out["max_training_instances"]) == (
        settings.training_instance_type, settings.max_training_instances,
    )


def test_output_names_are_documented() -> None:
    doc = (REPO / "docs" / "infra.md").read_text(encoding="utf-8")
    missing = sorted(name for name in AZURE_OUTPUTS | AWS_OUTPUTS if f"`{name}`" not in doc)
    assert missing == []


def test_aws_resources_use_the_explicit_regional_provider(program_runs) -> None:
    run = program_runs["aws", "prod"]
    providers = [r for r in run.resources if r.type == "pulumi:providers:aws"]
    assert [p.inputs["region"] for p in providers] == ["eu-west-1"]
    assert json.loads(providers[0].inputs["defaultTags"])["tags"]["environment"] == "prod"


def test_shared_training_log_group_can_be_owned_by_another_stack(program_runs) -> None:
    run = run_cloud("aws", with_settings(stack_settings("aws", "prod"), manage_training_log_group=False))
    assert [r.inputs["name"] for r in run.of_type(rules.AWS_LOG_GROUP)] == ["/aws/sagemaker/Endpoints/detops-prod-serving"]
    role_policy = next(r for r in run.of_type(rules.AWS_ROLE_POLICY) if "sagemaker" in r.name)
    assert f"arn:aws:logs:eu-west-1:{AWS_ACCOUNT_ID}:log-group:/aws/sagemaker/TrainingJobs:*" in _policy_statements(role_policy)["WriteLogs"]["Resource"]
    assert run.outputs["training_log_group"] == "/aws/sagemaker/TrainingJobs"
    assert violations(run) == []


def test_rules_are_documented() -> None:
    doc = (REPO / "docs" / "infra.md").read_text(encoding="utf-8")
    missing = [r.name for r in (*rules.RESOURCE_RULES, *rules.STACK_RULES) if f"`{r.name}`" not in doc]
    assert missing == []


@pytest.mark.parametrize(("cloud", "stack"), CASES)
def test_policy_pack_analyzer_accepts_every_registered_resource(program_runs, cloud: str, stack: str) -> None:
    """The same resources through CrossGuard's analyzer (as `pulumi up --policy-pack` would send them)."""
    from google.protobuf import json_format, struct_pb2
    from pulumi.runtime import proto
    from pulumi_policy import EnforcementLevel
    from pulumi_policy.policy import _PolicyAnalyzerServicer

    from infra.policies import pack

    analyzer = _PolicyAnalyzerServicer(
        pack.PACK_NAME, "0.1.0", pack.build_policies(), EnforcementLevel.MANDATORY, None, None, None, None, None, None, None
    )

    def message(resource: RegisteredResource) -> dict[str, Any]:
        props = struct_pb2.Struct()
        json_format.ParseDict(json.loads(json.dumps(resource.inputs)), props)
        return {"type": resource.type, "properties": props, "urn": f"urn:pulumi:{stack}::detops-{cloud}::{resource.type}::{resource.name}", "name": resource.name}

    resources = custom(program_runs[cloud, stack])
    diagnostics = [d for r in resources for d in analyzer.Analyze(proto.AnalyzeRequest(**message(r)), None).diagnostics]
    stack_request = proto.AnalyzeStackRequest(resources=[proto.AnalyzerResource(**message(r)) for r in resources])
    diagnostics += list(analyzer.AnalyzeStack(stack_request, None).diagnostics)
    assert [f"{d.policyName}: {d.message}" for d in diagnostics] == []
