"""One detops environment on Azure: ``create_stack(settings)`` declares every resource.

Resources: resource group; storage account with the ``datasets``, ``runs``, ``models`` and ``captures``
containers; Key Vault; Log Analytics + Application Insights; ACR; Azure ML workspace with a GPU and a
CPU cluster; optionally AKS with the Azure ML extension attached as Kubernetes compute; the CI identity
(OIDC federation for GitHub Actions and Azure DevOps); optionally private endpoints.

The returned outputs are the stack outputs (``pulumi stack output --json``) that ``detops`` reads to
configure its Azure backends; docs/infra.md lists them.
"""

from __future__ import annotations

from typing import Any

from pulumi_azure_native import authorization, resources

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
)
from infra.settings import AzureSettings

PROJECT = "detops-azure"
CONTAINERS = ("datasets", "runs", "models", "captures")
GPU_CLUSTER = "gpu-cluster"
CPU_CLUSTER = "cpu-cluster"
AKS_COMPUTE = "aks-compute"


def create_stack(settings: AzureSettings) -> dict[str, Any]:
    """Declare the environment described by ``settings``; return the stack outputs by name.

    Values are ``pulumi.Output`` or plain strings. Raises nothing beyond what the Pulumi SDK raises for
    bad inputs (settings are validated before, by :mod:`infra.settings`).
    """
    p = settings.name_prefix
    public = not settings.private_endpoints
    tags = {"project": "detops", "environment": settings.environment, "managed-by": "pulumi", **settings.tags}
    client = authorization.get_client_config_output()

    group = resources.ResourceGroup(f"{p}-rg", location=settings.region, tags=tags)
    rg = group.name

    store = Storage(
        f"{p}st",
        StorageArgs(
            resource_group_name=rg,
            location=settings.region,
            containers=CONTAINERS,
            sku="Standard_ZRS" if settings.environment == "prod" else "Standard_LRS",
            public_network_access=public,
            tags=tags,
        ),
    )
    vault = KeyVault(
        f"{p}-kv",
        KeyVaultArgs(
            resource_group_name=rg,
            location=settings.region,
            tenant_id=client.tenant_id,
            public_network_access=public,
            tags=tags,
        ),
    )
    monitoring = Monitoring(
        f"{p}-mon",
        MonitoringArgs(resource_group_name=rg, location=settings.region, retention_days=settings.log_retention_days, tags=tags),
    )
    registry = ContainerRegistry(
        f"{p}acr",
        ContainerRegistryArgs(
            resource_group_name=rg, location=settings.region, sku=settings.acr_sku, public_network_access=public, tags=tags
        ),
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
    )
    aks = None
    if settings.aks_enabled:
        aks = AksCompute(
            f"{p}-aks",
            AksComputeArgs(
                resource_group_name=rg,
                location=settings.region,
                workspace_name=ml.workspace.name,
                acr_id=registry.registry.id,
                subscription_id=client.subscription_id,
                system_vm_size=settings.aks_system_vm_size,
                kubernetes_version=settings.aks_kubernetes_version,
                compute_name=AKS_COMPUTE,
                sku_tier="Standard" if settings.environment == "prod" else "Free",
                inference_router_ha=settings.environment == "prod",
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
        )

    containers = store.containers
    ci = CiIdentity(
        f"{p}-ci",
        CiIdentityArgs(
            resource_group_name=rg,
            location=settings.region,
            subscription_id=client.subscription_id,
            github_subjects=settings.github.oidc_subjects(),
            azure_devops=(settings.azure_devops.issuer, settings.azure_devops.subject) if settings.azure_devops else None,
            grants=[
                RoleGrant("AzureML Data Scientist", ml.workspace.id, "ml-data-scientist"),
                RoleGrant("Storage Blob Data Reader", containers["datasets"].id, "datasets-reader"),
                RoleGrant("Storage Blob Data Contributor", containers["runs"].id, "runs-contributor"),
                RoleGrant("Storage Blob Data Contributor", containers["models"].id, "models-contributor"),
                RoleGrant("AcrPush", registry.registry.id, "acr-push"),
                RoleGrant("Key Vault Secrets User", vault.vault.id, "kv-secrets-user"),
            ],
            tags=tags,
        ),
    )

    if settings.private_endpoints:
        PrivateEndpoints(
            f"{p}-pe",
            PrivateEndpointsArgs(
                resource_group_name=rg,
                location=settings.region,
                address_space=settings.vnet_address_space,
                targets=[
                    PrivateLinkTarget("blob", store.account.id, "blob", PRIVATE_DNS_ZONES["blob"]),
                    PrivateLinkTarget("vault", vault.vault.id, "vault", PRIVATE_DNS_ZONES["vault"]),
                    PrivateLinkTarget("registry", registry.registry.id, "registry", PRIVATE_DNS_ZONES["registry"]),
                    PrivateLinkTarget("workspace", ml.workspace.id, "amlworkspace", PRIVATE_DNS_ZONES["amlworkspace"]),
                ],
                tags=tags,
            ),
        )

    outputs: dict[str, Any] = {
        "cloud": "azure",
        "environment": settings.environment,
        "region": settings.region,
        "subscription_id": client.subscription_id,
        "tenant_id": client.tenant_id,
        "resource_group_name": rg,
        "storage_account_name": store.account.name,
        "datasets_container": containers["datasets"].name,
        "runs_container": containers["runs"].name,
        "models_container": containers["models"].name,
        "captures_container": containers["captures"].name,
        "key_vault_name": vault.vault.name,
        "key_vault_uri": vault.vault.properties.apply(lambda props: props.vault_uri),
        "log_analytics_workspace_id": monitoring.log_analytics.id,
        "app_insights_name": monitoring.app_insights.name,
        "acr_name": registry.registry.name,
        "acr_login_server": registry.registry.login_server,
        "workspace_name": ml.workspace.name,
        "gpu_cluster_name": ml.clusters[GPU_CLUSTER].name,
        "cpu_cluster_name": ml.clusters[CPU_CLUSTER].name,
        "ci_client_id": ci.identity.client_id,
        "ci_principal_id": ci.identity.principal_id,
    }
    if aks is not None:
        outputs["aks_cluster_name"] = aks.cluster.name
        outputs["aks_compute_name"] = aks.compute.name
    return outputs
