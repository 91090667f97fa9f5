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
from training.errors import ConfigError

CASES = [("azure", "dev"), ("azure", "prod"), ("azure-aks", "dev"), ("azure-aks", "prod"), ("aws", "dev"), ("aws", "prod")]


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
    from infra_helpers import bootstrap_settings, run_bootstrap

    bootstrap = [run_bootstrap(bootstrap_settings(cloud, "dev")) for cloud in ("aws", "azure")]
    registered = {r.type for run in [*program_runs.values(), *bootstrap] for r in custom(run)}
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
    assert counts[rules.AZ_CONTAINER] == 5
    assert counts[rules.AZ_VAULT] == 1
    assert counts["azure-native:operationalinsights:Workspace"] == 1
    assert counts[rules.AZ_APP_INSIGHTS] == 1
    assert counts[rules.AZ_ACR] == 1
    assert counts[rules.AZ_ML_WORKSPACE] == 1
    assert counts[rules.AZ_ML_COMPUTE] == 2  # GPU and CPU clusters; managed online endpoints need no cluster
    assert counts[rules.AZ_AKS] == 0  # AKS is an option, off by default
    assert counts["azure-native:managedidentity:UserAssignedIdentity"] == 5  # trainer, registrar, approver, deployer, serving
    assert counts["azure-native:network:PrivateEndpoint"] == 0  # dev keeps public access (docs/infra.md)
    assert counts["azure-native:monitor:DiagnosticSetting"] == 3
    assert counts["azure-native:consumption:Budget"] == 1
    assert counts["azure-native:machinelearningservices:Datastore"] == 1


def test_aws_resource_inventory(program_runs) -> None:
    counts = Counter(r.type for r in custom(program_runs["aws", "prod"]))
    assert counts[rules.AWS_BUCKET] == 2
    for companion in (rules.AWS_PAB, rules.AWS_SSE, rules.AWS_VERSIONING, rules.AWS_BUCKET_POLICY, rules.AWS_OWNERSHIP):
        assert counts[companion] == 2, companion
    assert counts[rules.AWS_ECR] == 2 and counts[rules.AWS_ECR_LIFECYCLE] == 2
    assert counts[rules.AWS_KMS_KEY] == 1
    assert counts[rules.AWS_LOG_GROUP] == 2
    assert counts[rules.AWS_ROLE] == 2 and counts[rules.AWS_ROLE_POLICY] == 2  # SageMaker execution role, deployer
    assert counts["aws:cloudwatch/metricAlarm:MetricAlarm"] == 2 and counts["aws:budgets/budget:Budget"] == 1
    assert counts["aws:sagemaker/modelPackageGroup:ModelPackageGroup"] == 1
    assert counts[rules.AWS_OIDC_PROVIDER] == 0  # the account's one provider belongs to infra/bootstrap
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
    run = program_runs["azure-aks", stack]
    pools = {r.inputs["agentPoolName"]: r.inputs for r in run.of_type(rules.AZ_AKS_POOL)}
    assert set(pools) == {"cpu", "gpu"}
    assert (pools["cpu"]["minCount"], pools["cpu"]["maxCount"]) == (0, settings.aks_cpu_max_nodes)
    assert (pools["gpu"]["minCount"], pools["gpu"]["maxCount"]) == (0, settings.aks_gpu_max_nodes)
    assert all(pool["enableAutoScaling"] is True and pool["mode"] == "User" for pool in pools.values())
    assert pools["gpu"]["vmSize"] == settings.aks_gpu_vm_size and pools["gpu"]["nodeTaints"] == ["sku=gpu:NoSchedule"]
    cluster = one(run, rules.AZ_AKS)
    assert cluster.inputs["identity"] == {"type": "SystemAssigned"}
    assert cluster.inputs["aadProfile"] == {"managed": True, "enableAzureRBAC": True}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_aks_fits_the_azureml_extension(program_runs, stack: str) -> None:
    """Each documented constraint of the Azure ML extension, on the dev and prod stacks with AKS on."""
    run = program_runs["azure-aks", stack]
    cluster = one(run, rules.AZ_AKS).inputs
    extension = one(run, rules.AZ_EXTENSION).inputs["configurationSettings"]
    # "Azure Machine Learning doesn't support disabling local accounts for AKS"
    assert cluster["disableLocalAccounts"] is False
    # HTTPS only, with sslCname and the certificate secret
    assert extension["allowInsecureConnections"] == "False"
    assert extension["sslCname"] == f"ml-{stack}.detops.example.com" and extension["sslSecret"] == "azureml-tls"
    # inferenceRouterHA runs 3 router replicas: the system pool never goes below 3 nodes
    (system,) = [p for p in cluster["agentPoolProfiles"] if p["mode"] == "System"]
    assert extension["inferenceRouterHA"] == "True" and system["minCount"] >= 3 and system["count"] >= 3
    # a workspace managed network does not cover Kubernetes compute
    assert one(run, rules.AZ_ML_WORKSPACE).inputs["managedNetwork"]["isolationMode"] == "Disabled"
    # AKS in the VNet, API server private
    subnet = next(r for r in run.of_type("azure-native:network:Subnet") if r.name.endswith("-aks"))
    assert system["vnetSubnetID"] == subnet.id
    assert all(p.inputs["vnetSubnetID"] == subnet.id for p in run.of_type(rules.AZ_AKS_POOL))
    assert cluster["apiServerAccessProfile"] == {"enablePrivateCluster": True}
    # attached as Kubernetes compute without local auth
    attached = next(r for r in run.of_type(rules.AZ_ML_COMPUTE) if r.inputs["computeName"] == "aks-compute").inputs
    assert attached["properties"]["computeType"] == "Kubernetes" and attached["properties"]["disableLocalAuth"] is True
    assert attached["properties"]["resourceId"] == one(run, rules.AZ_AKS).id
    assert violations(run) == []


def test_managed_online_endpoints_are_the_default(program_runs) -> None:
    for stack in ("dev", "prod"):
        run = program_runs["azure", stack]
        assert run.outputs["serving_target"] == "managed" and run.of_type(rules.AZ_AKS) == []
        assert one(run, rules.AZ_ML_WORKSPACE).inputs["managedNetwork"]["isolationMode"] == "AllowInternetOutbound"
    assert program_runs["azure-aks", "dev"].outputs["serving_target"] == "kubernetes"


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


def _identity(run: ProgramRun, purpose: str) -> RegisteredResource:
    return next(r for r in run.of_type("azure-native:managedidentity:UserAssignedIdentity") if r.inputs["tags"].get("detops-purpose") == purpose)


def _grants_of(run: ProgramRun, purpose: str) -> set[tuple[str, str]]:
    principal = _identity(run, purpose).outputs["principalId"]
    return {(_role(a), a.inputs["scope"]) for a in run.of_type(rules.AZ_ROLE_ASSIGNMENT) if a.inputs["principalId"] == principal}


def test_azure_identities_per_purpose_role_scopes(program_runs) -> None:
    run = program_runs["azure", "dev"]
    c = {r.inputs["containerName"]: r.id for r in run.of_type(rules.AZ_CONTAINER)}
    ws, acr, kv = one(run, rules.AZ_ML_WORKSPACE).id, one(run, rules.AZ_ACR).id, one(run, rules.AZ_VAULT).id
    reader, contributor = "Storage Blob Data Reader", "Storage Blob Data Contributor"
    assert _grants_of(run, "trainer") == {("AzureML Data Scientist", ws), (reader, c["datasets"]), (contributor, c["runs"]),
                                          (reader, c["approvals"]), ("AcrPush", acr)}
    assert _grants_of(run, "registrar") == {("AzureML Data Scientist", ws), (reader, c["runs"]), (contributor, c["runs"]),
                                            (contributor, c["models"]), (reader, c["approvals"])}
    assert _grants_of(run, "approver") == {("Reader", ws), (reader, c["models"]), (contributor, c["approvals"])}
    assert _grants_of(run, "deployer") == {("AzureML Data Scientist", ws), (reader, c["runs"]), (reader, c["models"]), (reader, c["approvals"]),
                                           ("AcrPush", acr), ("Key Vault Secrets User", kv)}
    assert _grants_of(run, "serving") == {("AcrPull", acr), (reader, c["models"]), (reader, c["runs"]), (contributor, c["captures"])}
    # only the approver may write the approval records
    writers = {purpose for purpose in ("trainer", "registrar", "approver", "deployer", "serving") if (contributor, c["approvals"]) in _grants_of(run, purpose)}
    assert writers == {"approver"}
    for assignment in run.of_type(rules.AZ_ROLE_ASSIGNMENT):
        assert assignment.inputs["roleDefinitionId"].startswith(f"/subscriptions/{SUBSCRIPTION_ID}/providers/")
        assert assignment.inputs["principalType"] == "ServicePrincipal"


def test_azure_registrar_writes_only_the_manifest_of_runs(program_runs) -> None:
    """`register` writes the artifact's digest manifest into <run>/export/ (deployment.registry.artifact) as
    the registrar; `deploy` reads the run's files as the deployer. The registrar's write on `runs` carries an
    ABAC condition: every blob data action but read only on */export/detops-manifest.json."""
    from fnmatch import fnmatchcase

    from deployment.registry.artifact import MANIFEST_FILE
    from infra.components.azure import blob_path_condition

    run = program_runs["azure", "dev"]
    runs = next(r.id for r in run.of_type(rules.AZ_CONTAINER) if r.inputs["containerName"] == "runs")
    principal = _identity(run, "registrar").outputs["principalId"]
    (writer,) = [a for a in run.of_type(rules.AZ_ROLE_ASSIGNMENT)
                 if a.inputs["principalId"] == principal and a.inputs["scope"] == runs and _role(a) == "Storage Blob Data Contributor"]
    pattern = f"*/export/{MANIFEST_FILE}"
    assert (writer.inputs["condition"], writer.inputs["conditionVersion"]) == (blob_path_condition(pattern), "2.0")
    assert fnmatchcase(f"bccd/runs/20261201T120000-abc123/export/{MANIFEST_FILE}", pattern)
    assert not fnmatchcase("bccd/runs/20261201T120000-abc123/export/model.tflite", pattern)
    trainer = _identity(run, "trainer").outputs["principalId"]
    assert all("condition" not in a.inputs for a in run.of_type(rules.AZ_ROLE_ASSIGNMENT) if a.inputs["principalId"] == trainer)


def test_blob_path_condition_limits_every_write_of_the_role() -> None:
    from infra.components.azure import blob_path_condition

    blobs = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs"
    assert blob_path_condition("*/m.json") == (
        f"((!(ActionMatches{{'{blobs}/delete'}}) AND !(ActionMatches{{'{blobs}/write'}}) AND "
        f"!(ActionMatches{{'{blobs}/move/action'}}) AND !(ActionMatches{{'{blobs}/add/action'}})) OR "
        f"(@Resource[{blobs}:path] StringLike '*/m.json'))"
    )


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_azure_federated_credentials_per_purpose(program_runs, stack: str) -> None:
    settings = stack_settings("azure", stack)
    run = program_runs["azure", stack]
    credentials = run.of_type(rules.AZ_FEDERATED)
    for purpose in ("trainer", "registrar", "approver", "deployer"):
        subjects = settings.github.subjects(purpose)
        if not settings.github.has_identity(purpose):
            assert not any(r.inputs["tags"].get("detops-purpose") == purpose for r in run.of_type("azure-native:managedidentity:UserAssignedIdentity"))
            continue
        # main and the project's own workflow files only; approver: no workflow names model-approval
        assert all(s.split(":job_workflow_ref:")[1].endswith("@refs/heads/main") for s in subjects)
        assert bool(subjects) == (purpose != "approver")
        name = _identity(run, purpose).outputs["name"]
        assert sorted(c.inputs["subject"] for c in credentials if c.inputs["resourceName"] == name) == sorted(subjects)
    assert all(c.inputs["audiences"] == ["api://AzureADTokenExchange"] for c in credentials)
    assert not [c for c in credentials if c.inputs["resourceName"] == _identity(run, "serving").outputs["name"]]


TRAINER_SUBJECT = "/eid1/c/pub/t/mZmZmYiId3dmZlVVVVVVVQ/a/rEu5SSETf0KqFyZ8qWl5mA/sc/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/11111111-2222-3333-4444-555555555555"


def test_azure_devops_federation_uses_the_entra_issuer() -> None:
    """Service connections made since the Entra issuer became the default (and converted ones) present
    tokens issued by https://login.microsoftonline.com/<tenant>/v2.0 with the subject Azure DevOps generated
    for the connection; a connection whose subject is not known yet gets no credential."""
    from infra_mocks import TENANT_ID

    settings = with_settings(
        stack_settings("azure", "dev"),
        azure_devops={
            "organization": "contoso",
            "project": "detops",
            "service_connections": {"trainer": "detops-azureml-trainer", "deployer": "detops-azureml-deployer"},
            "subjects": {"trainer": TRAINER_SUBJECT},
        },
    )
    run = run_cloud("azure", settings)
    ado = {c.inputs["resourceName"]: (c.inputs["issuer"], c.inputs["subject"])
           for c in run.of_type(rules.AZ_FEDERATED) if "github" not in c.inputs["issuer"]}
    assert ado == {_identity(run, "trainer").outputs["name"]: (f"https://login.microsoftonline.com/{TENANT_ID}/v2.0", TRAINER_SUBJECT)}
    assert violations(run) == []


def test_azure_devops_federation_with_the_azure_devops_issuer() -> None:
    """Connections not converted yet (the Azure DevOps issuer, retired on 1 July 2027): vstoken + sc:// subjects."""
    settings = with_settings(
        stack_settings("azure", "dev"),
        azure_devops={
            "organization": "contoso",
            "issuer": "azure-devops",
            "organization_id": "0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0",
            "project": "detops",
            "service_connections": {"trainer": "detops-dev-training", "deployer": "detops-dev-deploy"},
        },
    )
    run = run_cloud("azure", settings)
    ado = {c.inputs["resourceName"]: c.inputs["subject"] for c in run.of_type(rules.AZ_FEDERATED)
           if c.inputs["issuer"] == "https://vstoken.dev.azure.com/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"}
    assert ado == {
        _identity(run, "trainer").outputs["name"]: "sc://contoso/detops/detops-dev-training",
        _identity(run, "deployer").outputs["name"]: "sc://contoso/detops/detops-dev-deploy",
    }
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


def _role_of(run: ProgramRun, purpose: str) -> RegisteredResource:
    return next(r for r in run.of_type(rules.AWS_ROLE) if r.name.endswith(f"-{purpose}"))


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_aws_roles_trust_only_their_own_environments(program_runs, stack: str) -> None:
    settings = stack_settings("aws", stack)
    run = program_runs["aws", stack]
    for purpose in ("trainer", "registrar", "approver", "deployer"):
        subjects = settings.github.subjects(purpose)
        if not settings.github.has_identity(purpose):
            assert f"{purpose}_role_arn" not in run.outputs
            continue
        (statement,) = json.loads(_role_of(run, purpose).inputs["assumeRolePolicy"])["Statement"]
        if not subjects:  # no workflow names its environment (a person approves): no GitHub token at all
            assert purpose == "approver" and statement["Effect"] == "Deny"
            continue
        assert statement["Principal"] == {"Federated": f"arn:aws:iam::{AWS_ACCOUNT_ID}:oidc-provider/token.actions.githubusercontent.com"}
        assert statement["Condition"] == {
            "StringEquals": {"token.actions.githubusercontent.com:aud": "sts.amazonaws.com", "token.actions.githubusercontent.com:sub": subjects}
        }


def test_aws_role_policies_are_scoped_by_the_application_names(program_runs) -> None:
    from training import naming

    run = program_runs["aws", "dev"]
    prefix = stack_settings("aws", "dev").name_prefix
    deployer = _policy_statements(next(r for r in run.of_type(rules.AWS_ROLE_POLICY) if r.name.endswith("-deployer-access")))
    assert f":endpoint/{naming.name_pattern(prefix)}" in " ".join(deployer["ManageEndpoints"]["Resource"])
    assert naming.endpoint_name("staging", prefix).startswith(prefix + "-")
    trainer = _policy_statements(next(r for r in run.of_type(rules.AWS_ROLE_POLICY) if r.name.endswith("-trainer-access")))
    assert trainer["StartTrainingJobs"]["Resource"] == [f"arn:aws:sagemaker:eu-west-1:{AWS_ACCOUNT_ID}:training-job/{prefix}-*"]
    assert naming.training_job_name("bccd", "20261201T120000-abc", prefix=prefix).startswith(prefix + "-")
    registrar = _policy_statements(next(r for r in run.of_type(rules.AWS_ROLE_POLICY) if r.name.endswith("-registrar-access")))
    assert registrar["RegisterPendingVersions"]["Condition"] == {"StringEquals": {"sagemaker:ModelApprovalStatus": "PendingManualApproval"}}
    assert "sagemaker:UpdateModelPackage" in registrar["NeverApprove"]["Action"]
    group = one(run, "aws:sagemaker/modelPackageGroup:ModelPackageGroup").inputs["modelPackageGroupName"]
    assert group == naming.model_package_group_name(prefix)


def test_existing_github_oidc_provider_is_reused() -> None:
    arn = f"arn:aws:iam::{AWS_ACCOUNT_ID}:oidc-provider/token.actions.githubusercontent.com"
    run = run_cloud("aws", with_settings(stack_settings("aws", "dev"), github_oidc_provider_arn=arn))
    assert run.of_type(rules.AWS_OIDC_PROVIDER) == []
    assert json.loads(_role_of(run, "trainer").inputs["assumeRolePolicy"])["Statement"][0]["Principal"] == {"Federated": arn}


def test_aws_provider_is_pinned_to_the_account(program_runs) -> None:
    (provider,) = [r for r in program_runs["aws", "prod"].resources if r.type == "pulumi:providers:aws"]
    assert json.loads(provider.inputs["allowedAccountIds"]) == [stack_settings("aws", "prod").account_id]


def test_azure_provider_is_pinned_to_the_subscription(program_runs) -> None:
    (provider,) = [r for r in program_runs["azure", "prod"].resources if r.type == "pulumi:providers:azure-native"]
    assert provider.inputs["subscriptionId"] == stack_settings("azure", "prod").subscription_id


def test_alarms_and_budgets(program_runs) -> None:
    run = program_runs["aws", "prod"]
    alarms = {r.inputs["metricName"]: r.inputs for r in run.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")}
    assert set(alarms) == {"Invocation5XXErrors", "ModelLatency"}
    assert alarms["ModelLatency"]["dimensions"]["EndpointName"] == run.outputs["sagemaker_endpoints"]["production"]
    topic = one(run, "aws:sns/topic:Topic")
    assert alarms["ModelLatency"]["alarmActions"] == [topic.id] or alarms["ModelLatency"]["alarmActions"]
    budget = one(run, "aws:budgets/budget:Budget").inputs
    assert budget["limitAmount"] == "3000.00" and len(budget["notifications"]) == 4
    azure = program_runs["azure", "prod"]
    diagnostics = {r.inputs["resourceUri"] for r in azure.of_type("azure-native:monitor:DiagnosticSetting")}
    assert diagnostics == {one(azure, rules.AZ_ML_WORKSPACE).id, one(azure, rules.AZ_ACR).id, one(azure, rules.AZ_VAULT).id}
    aks = program_runs["azure-aks", "prod"]
    assert one(aks, rules.AZ_AKS).id in {r.inputs["resourceUri"] for r in aks.of_type("azure-native:monitor:DiagnosticSetting")}
    assert one(azure, "azure-native:consumption:Budget").inputs["amount"] == 3000


# --- options -------------------------------------------------------------------------------------------


def test_prod_is_private(program_runs) -> None:
    run = program_runs["azure", "prod"]
    assert violations(run) == []
    endpoints = {r.inputs["privateLinkServiceConnections"][0]["groupIds"][0]: r for r in run.of_type("azure-native:network:PrivateEndpoint")}
    assert set(endpoints) == {"blob", "file", "vault", "registry", "amlworkspace"}
    assert endpoints["file"].inputs["privateLinkServiceConnections"][0]["privateLinkServiceId"] == one(run, rules.AZ_STORAGE).id
    zones = {r.inputs["privateZoneName"] for r in run.of_type("azure-native:privatedns:PrivateZone")}
    assert zones == {
        "privatelink.blob.core.windows.net",
        "privatelink.file.core.windows.net",
        "privatelink.vaultcore.azure.net",
        "privatelink.azurecr.io",
        "privatelink.api.azureml.ms",
        "privatelink.notebooks.azure.net",
    }
    assert len(run.of_type("azure-native:privatedns:VirtualNetworkLink")) == 6
    assert one(run, rules.AZ_STORAGE).inputs["publicNetworkAccess"] == "Disabled"
    assert one(run, rules.AZ_VAULT).inputs["properties"]["publicNetworkAccess"] == "Disabled"
    assert one(run, rules.AZ_ACR).inputs["publicNetworkAccess"] == "Disabled"
    assert one(run, rules.AZ_ML_WORKSPACE).inputs["publicNetworkAccess"] == "Disabled"
    assert run.outputs["public_network_access"] == "Disabled"
    assert program_runs["azure", "dev"].outputs["public_network_access"] == "Enabled"  # dev, stated in docs/infra.md


def test_runs_container_is_a_workspace_datastore(program_runs) -> None:
    run = program_runs["azure", "dev"]
    datastore = one(run, "azure-native:machinelearningservices:Datastore").inputs
    assert datastore["properties"]["containerName"] == "runs"
    assert datastore["properties"]["credentials"] == {"credentialsType": "None"}  # identity-based; shared keys are off
    assert one(run, rules.AZ_STORAGE).inputs["allowSharedKeyAccess"] is False
    assert one(run, rules.AZ_ML_WORKSPACE).inputs["systemDatastoresAuthMode"] == "identity"


def test_aks_can_be_left_out(program_runs) -> None:
    run = program_runs["azure", "dev"]
    assert run.of_type(rules.AZ_AKS) == [] and run.of_type(rules.AZ_EXTENSION) == []
    assert "aks_compute_name" not in run.outputs
    assert program_runs["azure-aks", "dev"].outputs["aks_compute_name"] == "aks-compute"


# --- outputs -----------------------------------------------------------------------------------------

AZURE_OUTPUTS = {
    "region", "resource_group_name", "storage_account_name", "datasets_container", "runs_container",
    "models_container", "captures_container", "approvals_container", "runs_datastore_name", "key_vault_name",
    "key_vault_uri", "acr_name", "acr_login_server", "workspace_name", "gpu_cluster_name", "cpu_cluster_name",
    "deployer_client_id", "serving_identity_id", "serving_identity_client_id", "serving_target",
    "public_network_access", "tenant_id", "subscription_id", "log_analytics_workspace_id",
}
AZURE_DEV_OUTPUTS = {"trainer_client_id", "registrar_client_id", "approver_client_id"}
AWS_OUTPUTS = {
    "region", "account_id", "s3_data_bucket", "s3_runs_bucket", "training_ecr_repository_url", "serving_ecr_repository_url",
    "sagemaker_role_arn", "sagemaker_name_prefix", "model_package_group_name", "sagemaker_registry_uri",
    "sagemaker_capture_uri", "sagemaker_endpoints", "deployer_role_arn", "kms_key_arn", "alerts_topic_arn",
}
AWS_DEV_OUTPUTS = {"trainer_role_arn", "registrar_role_arn", "approver_role_arn"}


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
    assert (AZURE_DEV_OUTPUTS <= set(out)) == (stack == "dev")
    assert out["workspace_name"] == one(run, rules.AZ_ML_WORKSPACE).outputs["name"]
    assert out["acr_login_server"] == f"{one(run, rules.AZ_ACR).outputs['name']}.azurecr.io"
    assert (out["gpu_cluster_name"], out["cpu_cluster_name"]) == ("gpu-cluster", "cpu-cluster")
    assert out["deployer_client_id"] == _identity(run, "deployer").outputs["clientId"]
    assert out["serving_identity_client_id"] == _identity(run, "serving").outputs["clientId"]
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
    assert out["deployer_role_arn"] == _role_of(run, "deployer").outputs["arn"]
    assert (AWS_DEV_OUTPUTS <= set(out)) == (stack == "dev")
    assert out["sagemaker_registry_uri"] == f"s3://{out['s3_runs_bucket']}/registry"
    assert out["sagemaker_endpoints"] == {stage: f"{settings.name_prefix}-{stage}" for stage in settings.endpoint_stages}
    assert out["model_package_group_name"] == f"{settings.name_prefix}-detector"
    assert (out["training_instance_type"], out["max_training_instances"]) == (
        settings.training_instance_type, settings.max_training_instances,
    )


def test_output_names_are_documented() -> None:
    doc = (REPO / "docs" / "infra.md").read_text(encoding="utf-8")
    missing = sorted(name for name in AZURE_OUTPUTS | AZURE_DEV_OUTPUTS | AWS_OUTPUTS | AWS_DEV_OUTPUTS if f"`{name}`" not in doc)
    assert missing == []


def test_aws_resources_use_the_explicit_regional_provider(program_runs) -> None:
    run = program_runs["aws", "prod"]
    providers = [r for r in run.resources if r.type == "pulumi:providers:aws"]
    assert [p.inputs["region"] for p in providers] == ["eu-west-1"]
    assert json.loads(providers[0].inputs["defaultTags"])["tags"]["environment"] == "prod"


def test_shared_training_log_group_can_be_owned_by_another_stack(program_runs) -> None:
    run = run_cloud("aws", with_settings(stack_settings("aws", "prod"), manage_training_log_group=False))
    assert [r.inputs["name"] for r in run.of_type(rules.AWS_LOG_GROUP)] == ["/aws/sagemaker/Endpoints/detops-prod-production"]
    role_policy = next(r for r in run.of_type(rules.AWS_ROLE_POLICY) if "sagemaker" in r.name)
    assert f"arn:aws:logs:eu-west-1:{AWS_ACCOUNT_ID}:log-group:/aws/sagemaker/TrainingJobs:*" in _policy_statements(role_policy)["WriteLogs"]["Resource"]
    assert run.outputs["training_log_group"] == "/aws/sagemaker/TrainingJobs"
    assert violations(run) == []


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_each_endpoint_logs_to_a_group_the_stack_manages(program_runs, stack: str) -> None:
    """SageMaker writes an endpoint's logs to /aws/sagemaker/Endpoints/<endpoint name>: the stack makes that
    group for each release endpoint (retention, project key) and the execution role may write to it."""
    settings = stack_settings("aws", stack)
    run = program_runs["aws", stack]
    groups = {r.inputs["name"]: r for r in run.of_type(rules.AWS_LOG_GROUP)}
    key = one(run, rules.AWS_KMS_KEY).outputs["arn"]
    role_policy = next(r for r in run.of_type(rules.AWS_ROLE_POLICY) if "sagemaker" in r.name)
    writable = _policy_statements(role_policy)["WriteLogs"]["Resource"]
    for stage, endpoint in run.outputs["sagemaker_endpoints"].items():
        name = f"/aws/sagemaker/Endpoints/{endpoint}"
        assert name in groups, sorted(groups)
        assert (groups[name].inputs["kmsKeyId"], groups[name].inputs["retentionInDays"]) == (key, settings.log_retention_days)
        assert f"arn:aws:logs:eu-west-1:{AWS_ACCOUNT_ID}:log-group:{name}:*" in writable
        assert run.outputs["endpoint_log_groups"][stage] == name
    assert set(groups) == {"/aws/sagemaker/TrainingJobs", *(f"/aws/sagemaker/Endpoints/{e}" for e in run.outputs["sagemaker_endpoints"].values())}


def test_rules_are_documented() -> None:
    doc = (REPO / "docs" / "infra.md").read_text(encoding="utf-8")
    missing = [r.name for r in (*rules.RESOURCE_RULES, *rules.STACK_RULES) if f"`{r.name}`" not in doc]
    assert missing == []


@pytest.mark.parametrize(("cloud", "stack"), CASES)
def test_policy_pack_analyzer_accepts_every_registered_resource(program_runs, cloud: str, stack: str) -> None:
    """The same resources through CrossGuard's analyzer (as `pulumi up --policy-pack` would send them)."""
    assert pack_diagnostics(program_runs[cloud, stack], cloud, stack) == []


def pack_diagnostics(run: ProgramRun, cloud: str, stack: str) -> list[str]:
    """What CrossGuard's analyzer of infra/policies says about every resource of ``run`` and the stack."""
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

    resources = custom(run)
    diagnostics = [d for r in resources for d in analyzer.Analyze(proto.AnalyzeRequest(**message(r)), None).diagnostics]
    stack_request = proto.AnalyzeStackRequest(resources=[proto.AnalyzerResource(**message(r)) for r in resources])
    diagnostics += list(analyzer.AnalyzeStack(stack_request, None).diagnostics)
    return [f"{d.policyName}: {d.message}" for d in diagnostics]


@pytest.mark.parametrize(("cloud", "stack"), [("azure", "dev"), ("azure", "prod"), ("aws", "dev"), ("aws", "prod")])
def test_outputs_become_ci_variables(program_runs, cloud: str, stack: str) -> None:
    """The stack outputs go through the settings contract's own mapping (`detops settings ci-variables`):
    every setting-named output is a known setting, and each GitHub environment gets its own identity."""
    from detops.contract import ci_variables

    settings = stack_settings(cloud, stack)
    out = program_runs[cloud, stack].outputs
    variables = ci_variables(out)
    identity = "AZURE_CLIENT_ID" if cloud == "azure" else "AWS_ROLE_ARN"
    assert set(variables.environments) == {e for p in ("trainer", "registrar", "approver", "deployer") for e in getattr(settings.github.environments, p)}
    per_env = {env: v[identity] for env, v in variables.environments.items()}
    assert len(set(per_env.values())) == len({p for p in ("trainer", "registrar", "approver", "deployer") if settings.github.has_identity(p)})
    upper = {k for k in out if k.isupper() and k != "CI_ENVIRONMENTS"}
    assert upper and upper <= set(variables.repository)
    if cloud == "aws":
        assert variables.repository["DETOPS_SM_NAME_PREFIX"] == settings.name_prefix
        deployer_env = settings.github.environments.deployer[0]
        assert variables.environments[deployer_env]["DETOPS_SM_ENDPOINT"].startswith(settings.name_prefix + "-")


# --- promotion across stacks (docs/contracts.md, "From dev to prod") ----------------------------------

PROD_DEPLOYER_PRINCIPAL = "99999999-8888-7777-6666-555555555555"
DEV_SUBSCRIPTION = "12121212-3434-5656-7878-909090909090"


def test_azure_promotion_is_provisioned_only_when_configured(program_runs) -> None:
    """Dev shares its workspace (Reader) and runs container (Storage Blob Data Reader) with exactly the
    prod deployer's principal; prod lets its deployer write the promoted copy and exports the source URI."""
    for stack in ("dev", "prod"):  # the checked-in stacks: one stack per environment, no promotion
        run = program_runs["azure", stack]
        assert "DETOPS_PROMOTE_SOURCE_URI" not in run.outputs
        assert not [a for a in run.of_type(rules.AZ_ROLE_ASSIGNMENT) if "promotion" in a.name]

    dev = run_cloud("azure", with_settings(stack_settings("azure", "dev"), promotion_reader_principal_id=PROD_DEPLOYER_PRINCIPAL))
    shared = [a for a in dev.of_type(rules.AZ_ROLE_ASSIGNMENT) if a.inputs["principalId"] == PROD_DEPLOYER_PRINCIPAL]
    c = {r.inputs["containerName"]: r.id for r in dev.of_type(rules.AZ_CONTAINER)}
    assert {(_role(a), a.inputs["scope"]) for a in shared} == {
        ("Reader", one(dev, rules.AZ_ML_WORKSPACE).id), ("Storage Blob Data Reader", c["runs"]),
        ("Storage Blob Data Reader", c["approvals"]),
    }
    assert all(a.inputs["principalType"] == "ServicePrincipal" for a in shared)
    assert "DETOPS_PROMOTE_SOURCE_URI" not in dev.outputs
    assert violations(dev) == [] and pack_diagnostics(dev, "azure", "dev") == []

    source = {"subscription_id": DEV_SUBSCRIPTION, "resource_group": "detopsdev-rg", "workspace": "detopsdev-mlw"}
    prod = run_cloud("azure", with_settings(stack_settings("azure", "prod"), promotion_source=source))
    uri = f"azureml://subscriptions/{DEV_SUBSCRIPTION}/resourceGroups/detopsdev-rg/workspaces/detopsdev-mlw"
    assert prod.outputs["DETOPS_PROMOTE_SOURCE_URI"] == uri
    from deployment.registry.azureml import parse_workspace_uri

    assert parse_workspace_uri(uri) == (DEV_SUBSCRIPTION, "detopsdev-rg", "detopsdev-mlw")
    c = {r.inputs["containerName"]: r.id for r in prod.of_type(rules.AZ_CONTAINER)}
    before = _grants_of(program_runs["azure", "prod"], "deployer")
    assert _grants_of(prod, "deployer") - before == {("Storage Blob Data Contributor", c["runs"])}
    assert ("Storage Blob Data Contributor", c["approvals"]) not in _grants_of(prod, "deployer")
    assert violations(prod) == [] and pack_diagnostics(prod, "azure", "prod") == []
    from detops.contract import ci_variables

    assert ci_variables(prod.outputs).repository["DETOPS_PROMOTE_SOURCE_URI"] == uri


def test_azure_promotion_settings_are_checked() -> None:
    with pytest.raises((ConfigError, ValueError), match="principal"):
        with_settings(stack_settings("azure", "dev"), promotion_reader_principal_id="prod-deployer")
    with pytest.raises((ConfigError, ValueError), match="GUID"):
        with_settings(stack_settings("azure", "prod"), promotion_source={"subscription_id": "dev", "resource_group": "rg",
                                                                          "workspace": "mlw"})


PROD_ACCOUNT = "210987654321"
PROD_DEPLOYER_ROLE = f"arn:aws:iam::{PROD_ACCOUNT}:role/detops-prod-deployer"


def _promotion_statements(run: ProgramRun) -> dict[str, list[dict[str, Any]]]:
    """Every statement of the run's bucket, key, group and role policies naming ``PROD_DEPLOYER_ROLE``."""
    found: dict[str, list[dict[str, Any]]] = {}
    for token, key in ((rules.AWS_BUCKET_POLICY, "policy"), (rules.AWS_KMS_KEY, "policy"),
                       ("aws:sagemaker/modelPackageGroupPolicy:ModelPackageGroupPolicy", "resourcePolicy")):
        for r in run.of_type(token):
            for st in json.loads(r.inputs[key])["Statement"]:
                if PROD_DEPLOYER_ROLE in json.dumps(st.get("Principal")):
                    found.setdefault(r.name, []).append(st)
    return found


def test_aws_dev_shares_runs_and_versions_with_exactly_the_prod_deployer(program_runs) -> None:
    assert _promotion_statements(program_runs["aws", "dev"]) == {}
    assert program_runs["aws", "dev"].of_type("aws:sagemaker/modelPackageGroupPolicy:ModelPackageGroupPolicy") == []
    run = run_cloud("aws", with_settings(stack_settings("aws", "dev"), promotion_reader_role_arn=PROD_DEPLOYER_ROLE))
    shared = _promotion_statements(run)
    runs_arn = next(r.outputs["arn"] for r in run.of_type(rules.AWS_BUCKET) if r.name.endswith("-runs"))
    prefix = stack_settings("aws", "dev").name_prefix
    group_arn = f"arn:aws:sagemaker:eu-west-1:{AWS_ACCOUNT_ID}:model-package-group/{prefix}-detector"
    bucket = {s["Sid"]: s for s in shared[f"{prefix}-runs-tls-only"]}
    assert bucket["CrossAccountList"]["Resource"] == [runs_arn]
    # registry documents and export folders only (not the endpoints' captured requests)
    assert bucket["CrossAccountRead"]["Resource"] == [f"{runs_arn}/registry/*", f"{runs_arn}/*/export", f"{runs_arn}/*/export/*"]
    assert bucket["CrossAccountRead"]["Action"] == ["s3:GetObject"]  # read only
    (key,) = shared[f"{prefix}-key"]
    assert key["Action"] == ["kms:Decrypt", "kms:DescribeKey"]
    assert key["Condition"] == {"StringEquals": {"kms:ViaService": "s3.eu-west-1.amazonaws.com"}}
    (group,) = shared[f"{prefix}-models-promotion-reader"]
    assert group["Resource"] == [group_arn, f"arn:aws:sagemaker:eu-west-1:{AWS_ACCOUNT_ID}:model-package/{prefix}-detector/*"]
    assert set(group["Action"]) == {"sagemaker:DescribeModelPackage", "sagemaker:DescribeModelPackageGroup", "sagemaker:ListModelPackages"}
    for statements in shared.values():
        for st in statements:
            assert st["Effect"] == "Allow" and st["Principal"] in ({"AWS": [PROD_DEPLOYER_ROLE]}, {"AWS": PROD_DEPLOYER_ROLE})
    # nothing else of the data bucket is shared
    assert not [n for n in shared if n.endswith("-data-tls-only")]
    assert violations(run) == [] and pack_diagnostics(run, "aws", "dev") == []


def test_aws_prod_deployer_promotes_only_from_the_configured_dev_stack(program_runs) -> None:
    def deployer(run: ProgramRun) -> dict[str, dict[str, Any]]:
        return _policy_statements(next(r for r in run.of_type(rules.AWS_ROLE_POLICY) if r.name.endswith("-deployer-access")))

    plain = deployer(program_runs["aws", "prod"])
    assert "sagemaker:CreateModelPackage" in plain["NeverRegisterOrApprove"]["Action"]
    assert not [sid for sid in plain if "Promot" in sid]
    assert "DETOPS_PROMOTE_SOURCE_URI" not in program_runs["aws", "prod"].outputs

    dev_key = f"arn:aws:kms:eu-west-1:{AWS_ACCOUNT_ID}:key/0000aaaa-1111-2222-3333-444455556666"
    source = {"account_id": AWS_ACCOUNT_ID, "runs_bucket": "detops-dev-runs", "kms_key_arn": dev_key,
              "model_package_group_name": "detops-dev-detector"}
    run = run_cloud("aws", with_settings(stack_settings("aws", "prod"), promotion_source=source))
    st = deployer(run)
    assert st["ReadPromotionSource"]["Resource"] == [
        "arn:aws:s3:::detops-dev-runs/registry/*", "arn:aws:s3:::detops-dev-runs/*/export", "arn:aws:s3:::detops-dev-runs/*/export/*"]
    assert st["ListPromotionSource"]["Resource"] == ["arn:aws:s3:::detops-dev-runs"]
    assert st["DecryptPromotionSource"]["Resource"] == [dev_key]
    assert st["ReadPromotionSourceVersions"]["Resource"] == [
        f"arn:aws:sagemaker:eu-west-1:{AWS_ACCOUNT_ID}:model-package-group/detops-dev-detector",
        f"arn:aws:sagemaker:eu-west-1:{AWS_ACCOUNT_ID}:model-package/detops-dev-detector/*",
    ]
    runs_arn = next(r.outputs["arn"] for r in run.of_type(rules.AWS_BUCKET) if r.name.endswith("-runs"))
    assert st["WritePromotedCopies"]["Resource"] == [f"{runs_arn}/promoted/*", f"{runs_arn}/registry/*"]
    # its own group only, PendingManualApproval on create and Approved on update (no Rejected, no other group)
    assert st["RegisterPromotedVersions"]["Condition"] == {"StringEquals": {"sagemaker:ModelApprovalStatus": "PendingManualApproval"}}
    assert st["ApprovePromotedVersions"]["Condition"] == {"StringEquals": {"sagemaker:ModelApprovalStatus": "Approved"}}
    assert all(":model-package/detops-prod-detector/" in r for r in st["ApprovePromotedVersions"]["Resource"])
    assert "NeverRegisterOrApprove" not in st
    out = run.outputs
    assert (out["DETOPS_PROMOTE_SOURCE_URI"], out["DETOPS_PROMOTE_SOURCE_ACCOUNT"], out["DETOPS_PROMOTE_SOURCE_NAME"]) == (
        "s3://detops-dev-runs/registry", AWS_ACCOUNT_ID, "detops-dev-detector")
    from detops.contract import ci_variables

    assert {"DETOPS_PROMOTE_SOURCE_URI", "DETOPS_PROMOTE_SOURCE_ACCOUNT", "DETOPS_PROMOTE_SOURCE_NAME"} <= set(ci_variables(out).repository)
    assert violations(run) == [] and pack_diagnostics(run, "aws", "prod") == []


def test_aws_promotion_settings_are_checked() -> None:
    with pytest.raises((ConfigError, ValueError), match="promotion_reader_role_arn|pattern"):
        with_settings(stack_settings("aws", "dev"), promotion_reader_role_arn="*")
    with pytest.raises((ConfigError, ValueError), match="not in account"):
        with_settings(stack_settings("aws", "prod"), promotion_source={
            "account_id": "111111111111", "runs_bucket": "b-runs", "model_package_group_name": "g",
            "kms_key_arn": f"arn:aws:kms:eu-west-1:{AWS_ACCOUNT_ID}:key/abcd"})
