"""One detops environment on Azure: ``create_stack(settings)`` declares every resource.

Resources: resource group (or an existing one, made by infra/bootstrap); storage account (Entra ID
only) with the ``datasets``, ``runs``, ``models``, ``captures`` and ``approvals`` containers; Key Vault
(default deny); Log Analytics + Application Insights; ACR; Azure ML workspace with a GPU and a CPU
cluster and the ``runs`` container registered as a datastore; one identity per purpose (trainer,
registrar, approver, deployer; OIDC federation for GitHub Actions and Azure DevOps) and the serving
identity of the online endpoints; diagnostic settings to Log Analytics; a monthly budget; optionally
(always in prod) private endpoints and DNS zones; optionally AKS with the Azure ML extension.

Serving: Azure ML managed online endpoints by default. AKS is an option (``aks_enabled``), configured
the way the Azure ML extension supports; see docs/infra.md ("Serving on Azure").

The returned outputs are the stack outputs (``pulumi stack output --json``) that ``detops`` reads to
configure its Azure backends; docs/infra.md lists them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pulumi
import pulumi_azure_native as azure_native
from pulumi_azure_native import authorization, consumption, machinelearningservices, resources

from infra.components.aws_policies import ARTIFACT_MANIFEST
from infra.components.azure import (
    PRIVATE_DNS_ZONES,
    AksCompute,
    AksComputeArgs,
    CiIdentity,
    CiIdentityArgs,
    ClusterSpec,
    ContainerRegistry,
    ContainerRegistryArgs,
    KeyVault,
    KeyVaultArgs,
    MlWorkspace,
    MlWorkspaceArgs,
    Monitoring,
    MonitoringArgs,
    NodePoolSpec,
    PrivateEndpoints,
    PrivateEndpointsArgs,
    PrivateLinkTarget,
    RoleGrant,
    Storage,
    StorageArgs,
    blob_path_condition,
    blob_read_condition,
    diagnostic_setting,
    role_definition_id,
)
from infra.settings import APP_PURPOSES, AzureSettings

PROJECT = "detops-azure"
CONTAINERS = ("datasets", "runs", "models", "captures", "approvals")
RUNS_DATASTORE = "detops_runs"
GPU_CLUSTER = "gpu-cluster"
CPU_CLUSTER = "cpu-cluster"
AKS_COMPUTE = "aks-compute"


def _grants(purpose: str, *, workspace_id, containers, acr_id, vault_id) -> list[RoleGrant]:
    """Least-privilege role assignments of one purpose's identity (docs/infra.md, "Identities").

    The approval record lives in the ``approvals`` container, which only the approver may write: the
    registrar (who can write model assets and their tags) cannot approve its own registration. In
    ``runs`` the registrar may write the artifact's digest manifest only (an ABAC path condition), and the
    deployer reads the files it verifies against that digest.
    """
    reader, contributor = "Storage Blob Data Reader", "Storage Blob Data Contributor"
    table: dict[str, list[RoleGrant]] = {
        "trainer": [
            RoleGrant("AzureML Data Scientist", workspace_id, "ml-data-scientist"),
            RoleGrant(reader, containers["datasets"].id, "datasets-reader"),
            RoleGrant(contributor, containers["runs"].id, "runs-contributor"),
            # the evaluate job's quality gate asks which version is Approved: the approval records
            RoleGrant(reader, containers["approvals"].id, "approvals-reader"),
            RoleGrant("AcrPush", acr_id, "acr-push"),
        ],
        "registrar": [
            RoleGrant("AzureML Data Scientist", workspace_id, "ml-data-scientist"),
            RoleGrant(reader, containers["runs"].id, "runs-reader"),
            # the digest manifest `register` writes into the run's export/ folder, and no other blob of runs
            RoleGrant(contributor, containers["runs"].id, "runs-manifest-writer",
                      condition=blob_path_condition(f"*/export/{ARTIFACT_MANIFEST}")),
            RoleGrant(contributor, containers["models"].id, "models-contributor"),
            RoleGrant(reader, containers["approvals"].id, "approvals-reader"),
        ],
        "approver": [
            RoleGrant("Reader", workspace_id, "ml-reader"),
            RoleGrant(reader, containers["models"].id, "models-reader"),
            RoleGrant(contributor, containers["approvals"].id, "approvals-contributor"),
        ],
        "deployer": [
            RoleGrant("AzureML Data Scientist", workspace_id, "ml-data-scientist"),
            # deploy verifies the version's files (in runs) against the registered digest
            RoleGrant(reader, containers["runs"].id, "runs-reader"),
            RoleGrant(reader, containers["models"].id, "models-reader"),
            RoleGrant(reader, containers["approvals"].id, "approvals-reader"),
            RoleGrant("AcrPush", acr_id, "acr-push"),
            RoleGrant("Key Vault Secrets User", vault_id, "kv-secrets-user"),
        ],
    }
    return table[purpose]


def _promotion_target_grants(containers) -> list[RoleGrant]:
    """Prod (promotion target): the deployer runs ``detops promote``, which writes the promoted copy under
    ``az://runs/promoted/`` (the runs datastore) before registering it."""
    return [RoleGrant("Storage Blob Data Contributor", containers["runs"].id, "runs-contributor-promotion")]


def _share_with_promotion_reader(p: str, principal_id: str, *, subscription_id: str, workspace_id, runs_container_id,
                                 approvals_container_id, opts: pulumi.ResourceOptions) -> list[authorization.RoleAssignment]:
    """Dev (promotion source): the prod deployer may read this workspace's model assets and datastores
    (Reader), the runs container's blobs and the approval records (Storage Blob Data Reader): a promoted
    copy in prod is Approved by the dev record of the same artifact digest. Nothing else."""
    grants = [RoleGrant("Reader", workspace_id, "ml-reader"),
              RoleGrant("Storage Blob Data Reader", runs_container_id, "runs-reader"),
              RoleGrant("Storage Blob Data Reader", approvals_container_id, "approvals-reader")]
    return [
        authorization.RoleAssignment(
            f"{p}-promotion-{grant.label}",
            scope=grant.scope,
            role_definition_id=role_definition_id(subscription_id, grant.role),
            principal_id=principal_id,
            principal_type="ServicePrincipal",
            description=f"detops promotion reader (prod deployer): {grant.role}",
            opts=opts,
        )
        for grant in grants
    ]


def _compute_data_access(p: str, clusters, containers, *, subscription_id: str,
                         opts: pulumi.ResourceOptions) -> list[authorization.RoleAssignment]:
    """Each compute cluster's system-assigned identity: Storage Blob Data Reader on ``datasets`` and Storage
    Blob Data Contributor on ``runs``, nothing else.

    A job that sets no identity reaches identity-based datastores as the compute's managed identity ("Data
    administration" / "Access data in a job", Azure ML docs: credential-less datastores fall back to the
    compute identity); the steps mount the datasets read-only and the run folder read-write
    (training/backends/azureml.py: ``ro_mount`` / ``rw_mount`` outputs under the runs datastore).
    """
    grants = [("Storage Blob Data Reader", containers["datasets"].id, "datasets-reader"),
              ("Storage Blob Data Contributor", containers["runs"].id, "runs-contributor")]
    return [
        authorization.RoleAssignment(
            f"{p}-{name}-{label}",
            scope=scope,
            role_definition_id=role_definition_id(subscription_id, role),
            principal_id=compute.identity.apply(lambda identity: identity.principal_id),
            principal_type="ServicePrincipal",
            description=f"detops compute {name}: {role}",
            opts=opts,
        )
        for name, compute in clusters.items()
        for role, scope, label in grants
    ]


def create_stack(settings: AzureSettings) -> dict[str, Any]:
    """Declare the environment described by ``settings``; return the stack outputs by name.

    Every resource uses one explicit provider pinned to ``settings.subscription_id``, so a wrong
    ``az login`` cannot deploy into another subscription. Values are ``pulumi.Output`` or plain strings.
    """
    p = settings.name_prefix
    private = settings.private_endpoints
    public = not private
    tags = {"project": "detops", "environment": settings.environment, "managed-by": "pulumi", **settings.tags}
    provider = azure_native.Provider(f"{p}-azure", subscription_id=settings.subscription_id)
    opts = pulumi.ResourceOptions(provider=provider)
    client = authorization.get_client_config_output(opts=pulumi.InvokeOptions(provider=provider))
    subscription_id = settings.subscription_id

    if settings.resource_group_name:
        rg: Any = settings.resource_group_name
        rg_id: Any = f"/subscriptions/{subscription_id}/resourceGroups/{rg}"
    else:
        group = resources.ResourceGroup(f"{p}-rg", location=settings.region, tags=tags, opts=opts)
        rg, rg_id = group.name, group.id

    store = Storage(
        f"{p}st",
        StorageArgs(
            resource_group_name=rg,
            location=settings.region,
            containers=CONTAINERS,
            sku="Standard_ZRS" if settings.environment == "prod" else "Standard_LRS",
            public_network_access=public,
            versioning=True,
            tags=tags,
            expire_containers={"captures": settings.capture_retention_days},
        ),
        opts,
    )
    vault = KeyVault(
        f"{p}-kv",
        KeyVaultArgs(
            resource_group_name=rg, location=settings.region, tenant_id=client.tenant_id,
            public_network_access=public, tags=tags,
        ),
        opts,
    )
    monitoring = Monitoring(
        f"{p}-mon",
        MonitoringArgs(resource_group_name=rg, location=settings.region, retention_days=settings.log_retention_days, tags=tags),
        opts,
    )
    registry = ContainerRegistry(
        f"{p}acr",
        ContainerRegistryArgs(
            resource_group_name=rg, location=settings.region, sku=settings.acr_sku, public_network_access=public, tags=tags
        ),
        opts,
    )
    ml = MlWorkspace(
        f"{p}-mlw",
        MlWorkspaceArgs(
            resource_group_name=rg,
            location=settings.region,
            storage_account_id=store.account.id,
            key_vault_id=vault.vault.id,
            app_insights_id=monitoring.app_insights.id,
            container_registry_id=registry.registry.id,
            public_network_access=public,
            managed_network=not settings.aks_enabled,
            clusters=[
                ClusterSpec(
                    name=GPU_CLUSTER,
                    vm_size=settings.gpu_vm_size,
                    min_nodes=settings.gpu_min_nodes,
                    max_nodes=settings.gpu_max_nodes,
                    idle_seconds=settings.gpu_idle_seconds,
                    low_priority=settings.gpu_low_priority,
                    node_public_ip=settings.gpu_node_public_ip,
                ),
                ClusterSpec(
                    name=CPU_CLUSTER,
                    vm_size=settings.cpu_vm_size,
                    max_nodes=settings.cpu_max_nodes,
                    idle_seconds=settings.gpu_idle_seconds,
                ),
            ],
            tags=tags,
        ),
        opts,
    )
    containers = store.containers
    _compute_data_access(p, ml.clusters, containers, subscription_id=subscription_id, opts=opts)
    # The runs container as an identity-based datastore (no key, no SAS: shared keys are off).
    datastore = machinelearningservices.Datastore(
        f"{p}-runs-datastore",
        name=RUNS_DATASTORE,
        resource_group_name=rg,
        workspace_name=ml.workspace.name,
        properties=machinelearningservices.AzureBlobDatastoreArgs(
            datastore_type="AzureBlob",
            account_name=store.account.name,
            container_name=containers["runs"].name,
            credentials=machinelearningservices.NoneDatastoreCredentialsArgs(credentials_type="None"),
            service_data_access_auth_identity="WorkspaceSystemAssignedIdentity",
            description="detops runs (one folder per run)",
        ),
        opts=opts,
    )

    net = None
    if private or settings.aks_enabled:
        targets = []
        if private:
            targets = [
                PrivateLinkTarget("blob", store.account.id, "blob", PRIVATE_DNS_ZONES["blob"]),
                PrivateLinkTarget("file", store.account.id, "file", PRIVATE_DNS_ZONES["file"]),
                PrivateLinkTarget("vault", vault.vault.id, "vault", PRIVATE_DNS_ZONES["vault"]),
                PrivateLinkTarget("registry", registry.registry.id, "registry", PRIVATE_DNS_ZONES["registry"]),
                PrivateLinkTarget("workspace", ml.workspace.id, "amlworkspace", PRIVATE_DNS_ZONES["amlworkspace"]),
            ]
        net = PrivateEndpoints(
            f"{p}-pe",
            PrivateEndpointsArgs(
                resource_group_name=rg,
                location=settings.region,
                address_space=settings.vnet_address_space,
                targets=targets,
                aks_subnet=settings.aks_enabled,
                tags=tags,
            ),
            opts,
        )

    aks = None
    if settings.aks_enabled:
        assert net is not None and net.aks_subnet is not None and settings.aks_ssl_cname
        aks = AksCompute(
            f"{p}-aks",
            AksComputeArgs(
                resource_group_name=rg,
                location=settings.region,
                workspace_name=ml.workspace.name,
                acr_id=registry.registry.id,
                subscription_id=subscription_id,
                system_vm_size=settings.aks_system_vm_size,
                kubernetes_version=settings.aks_kubernetes_version,
                compute_name=AKS_COMPUTE,
                sku_tier="Standard" if settings.environment == "prod" else "Free",
                inference_router_ha=settings.aks_inference_router_ha,
                system_min_nodes=settings.aks_system_min_nodes,
                ssl_cname=settings.aks_ssl_cname,
                ssl_secret=settings.aks_ssl_secret,
                subnet_id=net.aks_subnet.id,
                node_pools=[
                    NodePoolSpec(name="cpu", vm_size=settings.aks_cpu_vm_size, max_count=settings.aks_cpu_max_nodes),
                    NodePoolSpec(
                        name="gpu",
                        vm_size=settings.aks_gpu_vm_size,
                        max_count=settings.aks_gpu_max_nodes,
                        taints=["sku=gpu:NoSchedule"],
                        labels={"accelerator": "nvidia"},
                    ),
                ],
                tags=tags,
            ),
            opts,
        )

    identities = {}
    ado = settings.azure_devops
    for purpose in APP_PURPOSES:
        subjects = settings.github.subjects(purpose)
        ado_subject = ado.subject(purpose) if ado else None
        if not settings.github.has_identity(purpose) and not ado_subject:
            continue
        identities[purpose] = CiIdentity(
            f"{p}-{purpose}",
            CiIdentityArgs(
                resource_group_name=rg,
                location=settings.region,
                subscription_id=subscription_id,
                github_subjects=subjects,
                azure_devops=(client.tenant_id.apply(ado.issuer_url), ado_subject) if ado and ado_subject else None,
                grants=_grants(purpose, workspace_id=ml.workspace.id, containers=containers,
                               acr_id=registry.registry.id, vault_id=vault.vault.id)
                + (_promotion_target_grants(containers) if purpose == "deployer" and settings.promotion_source else []),
                purpose=purpose,
                tags=tags,
            ),
            opts,
        )
    # The identity managed online endpoints run as: pull the image, read models, write captured requests.
    serving = CiIdentity(
        f"{p}-serving",
        CiIdentityArgs(
            resource_group_name=rg,
            location=settings.region,
            subscription_id=subscription_id,
            github_subjects=[],
            grants=[
                RoleGrant("AcrPull", registry.registry.id, "acr-pull"),
                RoleGrant("Storage Blob Data Reader", containers["models"].id, "models-reader"),
                # a registered version's files stay in its run's export/ folder (the model asset's path):
                # the endpoint pulls them from there, and reads nothing else of runs
                RoleGrant("Storage Blob Data Reader", containers["runs"].id, "runs-export-reader",
                          condition=blob_read_condition("*/export/*")),
                RoleGrant("Storage Blob Data Contributor", containers["captures"].id, "captures-contributor"),
            ],
            purpose="serving",
            tags=tags,
        ),
        opts,
    )

    # Operations: every log and metric of the workspace, registry, vault (and AKS) to Log Analytics; a budget.
    logs_id = monitoring.log_analytics.id
    watched = {"workspace": ml.workspace.id, "acr": registry.registry.id, "kv": vault.vault.id}
    if aks is not None:
        watched["aks"] = aks.cluster.id
    for label, resource_id in watched.items():
        diagnostic_setting(f"{p}-{label}-diagnostics", resource_id, logs_id, opts)
    start = datetime.now(UTC).strftime("%Y-%m-01T00:00:00Z")
    consumption.Budget(
        f"{p}-budget",
        budget_name=f"{p}-monthly",
        scope=rg_id,
        amount=settings.budget_monthly_amount,
        category="Cost",
        time_grain="Monthly",
        time_period=consumption.BudgetTimePeriodArgs(start_date=start),
        notifications={
            f"{kind.lower()}-{threshold}": consumption.NotificationArgs(
                enabled=True,
                operator="GreaterThanOrEqualTo",
                threshold=threshold,
                threshold_type=kind,
                contact_emails=list(settings.budget_alert_emails),
            )
            for kind, threshold in (("Actual", 50), ("Actual", 80), ("Actual", 100), ("Forecasted", 100))
        },
        # The start date must be the current month's first day at creation; later ups keep it.
        opts=pulumi.ResourceOptions(provider=provider, ignore_changes=["timePeriod"]),
    )

    if settings.promotion_reader_principal_id:
        _share_with_promotion_reader(p, settings.promotion_reader_principal_id, subscription_id=subscription_id,
                                     workspace_id=ml.workspace.id, runs_container_id=containers["runs"].id,
                                     approvals_container_id=containers["approvals"].id, opts=opts)

    outputs: dict[str, Any] = {
        "cloud": "azure",
        "environment": settings.environment,
        "region": settings.region,
        "subscription_id": subscription_id,
        "tenant_id": client.tenant_id,
        "resource_group_name": rg,
        "storage_account_name": store.account.name,
        "datasets_container": containers["datasets"].name,
        "runs_container": containers["runs"].name,
        "models_container": containers["models"].name,
        "captures_container": containers["captures"].name,
        "approvals_container": containers["approvals"].name,
        "runs_datastore_name": datastore.name,
        "key_vault_name": vault.vault.name,
        "key_vault_uri": vault.vault.properties.apply(lambda props: props.vault_uri),
        "log_analytics_workspace_id": monitoring.log_analytics.id,
        "app_insights_name": monitoring.app_insights.name,
        "acr_name": registry.registry.name,
        "acr_login_server": registry.registry.login_server,
        "workspace_name": ml.workspace.name,
        "gpu_cluster_name": ml.clusters[GPU_CLUSTER].name,
        "cpu_cluster_name": ml.clusters[CPU_CLUSTER].name,
        "serving_target": "kubernetes" if aks is not None else "managed",
        "serving_identity_id": serving.identity.id,
        "serving_identity_client_id": serving.identity.client_id,
        "public_network_access": "Enabled" if public else "Disabled",
    }
    for purpose, identity in identities.items():
        outputs[f"{purpose}_client_id"] = identity.identity.client_id
        outputs[f"{purpose}_principal_id"] = identity.identity.principal_id
    if aks is not None:
        outputs["aks_cluster_name"] = aks.cluster.name
        outputs["aks_compute_name"] = aks.compute.name
    # The same values under the settings' names (docs/settings.md): `detops settings ci-variables` turns
    # them into CI variables; CI_ENVIRONMENTS gives each GitHub environment its own identity (AZURE_CLIENT_ID).
    outputs.update({
        "AZURE_SUBSCRIPTION_ID": subscription_id,
        "AZURE_TENANT_ID": client.tenant_id,
        "AZURE_RESOURCE_GROUP": rg,
        "AZUREML_WORKSPACE": ml.workspace.name,
        "AZURE_STORAGE_ACCOUNT_NAME": store.account.name,
        "DETOPS_AML_COMPUTE": ml.clusters[GPU_CLUSTER].name,
        "DETOPS_AML_DATASTORE": datastore.name,
        "DETOPS_AML_DATASTORE_CONTAINER": containers["runs"].name,
        "DETOPS_DATASETS": "az://datasets",
        "DETOPS_DATASTORE": "az://runs",
        # approval records (deployment/registry/records.py): only the approver identity may write this container
        "DETOPS_APPROVALS_URI": "az://approvals",
        # the online endpoint runs as the stack's serving identity (model files, image pull)
        "DETOPS_AML_ENDPOINT_IDENTITY": serving.identity.id,
        "DETOPS_TRAINING_REPOSITORY": pulumi.Output.concat(registry.registry.login_server, "/detops-training"),
        "DETOPS_SERVING_REPOSITORY": pulumi.Output.concat(registry.registry.login_server, "/detops-serving"),
        # where `detops promote` copies a promoted version's files when this stack is the promotion target
        "DETOPS_PROMOTE_ARTIFACT_ROOT": "az://runs/promoted",
    })
    if settings.promotion_source:
        # the dev workspace the release's production job promotes from (docs/contracts.md)
        outputs["DETOPS_PROMOTE_SOURCE_URI"] = settings.promotion_source.uri()
    if aks is not None:
        outputs["DETOPS_AML_DEPLOY_COMPUTE"] = aks.compute.name
    ci_environments: dict[str, Any] = {}
    for purpose, identity in identities.items():
        for env in getattr(settings.github.environments, purpose):
            variables: dict[str, Any] = {"AZURE_CLIENT_ID": identity.identity.client_id}
            if purpose == "deployer":  # the release job's endpoint: detops' setting and the workflows' ENDPOINT_NAME
                variables["DETOPS_AML_ENDPOINT"] = variables["ENDPOINT_NAME"] = f"{p}-{env}"
            ci_environments[env] = variables
    outputs["CI_ENVIRONMENTS"] = ci_environments
    return outputs
