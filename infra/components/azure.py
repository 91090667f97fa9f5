"""Reusable Azure ``ComponentResource`` classes (pulumi-azure-native v3), secure by default.

Each component takes an ``...Args`` dataclass and registers its children under itself. Every
security setting the policy rules in :mod:`infra.policies.rules` check is set here explicitly, never
left to a provider default (e.g. AmlCompute's ``enableNodePublicIp`` defaults to *true* in the SDK).

Built-in role definition GUIDs come from "Azure built-in roles" (learn.microsoft.com); they are the
same in every public-cloud tenant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
from pulumi_azure_native import (
    applicationinsights,
    authorization,
    containerregistry,
    containerservice,
    keyvault,
    kubernetesconfiguration,
    machinelearningservices,
    managedidentity,
    monitor,
    network,
    operationalinsights,
    privatedns,
    storage,
)

# Built-in role definition ids (GUIDs), "Azure built-in roles".
ROLE_IDS: Mapping[str, str] = {
    "AcrPull": "7f951dda-4ed3-4680-a7ca-43fe172d538d",
    "AcrPush": "8311e382-0749-4cb8-b61a-304f252e45ec",
    "AzureML Data Scientist": "f6c7c914-8db3-469d-8ca1-694a8f32e121",
    "Storage Blob Data Reader": "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
    "Storage Blob Data Contributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
    "Key Vault Crypto User": "12338af0-0e69-4776-bea7-57ae8d297424",
    "Reader": "acdd72a7-3385-48ef-bd42-f606fba81ae7",
}

#: Roles only the bootstrap grants, to the infra deployer, on the application stacks' resource groups
#: (RBAC Administrator with an ABAC condition limiting it to :data:`ROLE_IDS`).
INFRA_ROLE_IDS: Mapping[str, str] = {
    "Contributor": "b24988ac-6180-42a0-ab88-20f7382dd24c",
    "Role Based Access Control Administrator": "f58310d9-a9f6-439a-9e8d-f62e7b41a168",
}

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
# Audience Entra ID expects in federated tokens ("Workload identity federation" docs).
ENTRA_TOKEN_AUDIENCE = "api://AzureADTokenExchange"


def role_definition_id(subscription_id: pulumi.Input[str], role: str) -> pulumi.Output[str]:
    """Full resource id of a built-in role in a subscription; ``role`` is a key of :data:`ROLE_IDS`
    (or of :data:`INFRA_ROLE_IDS`)."""
    guid = ROLE_IDS.get(role) or INFRA_ROLE_IDS[role]
    return pulumi.Output.concat("/subscriptions/", subscription_id, "/providers/Microsoft.Authorization/roleDefinitions/", guid)


@dataclass
class StorageArgs:
    """Storage account plus private blob containers.

    ``containers``: container names (3-63 lowercase letters, digits, '-'). ``public_network_access``:
    False when private endpoints carry all traffic. ``soft_delete_days``: blob and container soft delete.
    """

    resource_group_name: pulumi.Input[str]
    location: str
    containers: Sequence[str]
    sku: str = "Standard_LRS"
    public_network_access: bool = True
    soft_delete_days: int = 7
    versioning: bool = False
    tags: Mapping[str, str] = field(default_factory=dict)
    #: ``{container: days}``: blobs of the container (and their versions and snapshots) are deleted that
    #: many days after they were written (a lifecycle management policy; the captured requests' retention).
    expire_containers: Mapping[str, int] = field(default_factory=dict)


class Storage(pulumi.ComponentResource):
    """StorageV2 account: no public blob access, HTTPS only, TLS 1.2, soft delete; private containers.

    Attributes: ``account`` (:class:`storage.StorageAccount`), ``containers`` (name -> BlobContainer),
    ``lifecycle`` (the :class:`storage.ManagementPolicy` of ``expire_containers``, or None).
    """

    def __init__(self, name: str, args: StorageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("detops:azure:Storage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.account = storage.StorageAccount(
            name,
            resource_group_name=args.resource_group_name,
            location=args.location,
            kind=storage.Kind.STORAGE_V2,
            sku=storage.SkuArgs(name=args.sku),
            allow_blob_public_access=False,
            enable_https_traffic_only=True,
            minimum_tls_version=storage.MinimumTlsVersion.TLS1_2,
            allow_cross_tenant_replication=False,
            # Entra ID only (no account keys, no SAS): Azure ML uses identity-based datastores.
            allow_shared_key_access=False,
            public_network_access="Enabled" if args.public_network_access else "Disabled",
            network_rule_set=storage.NetworkRuleSetArgs(
                default_action=storage.DefaultAction.ALLOW if args.public_network_access else storage.DefaultAction.DENY,
                bypass="AzureServices",
            ),
            tags=dict(args.tags),
            opts=child,
        )
        self.blob_service = storage.BlobServiceProperties(
            f"{name}-blob",
            account_name=self.account.name,
            resource_group_name=args.resource_group_name,
            blob_services_name="default",
            delete_retention_policy=storage.DeleteRetentionPolicyArgs(enabled=True, days=args.soft_delete_days),
            container_delete_retention_policy=storage.DeleteRetentionPolicyArgs(
                enabled=True, days=args.soft_delete_days
            ),
            is_versioning_enabled=args.versioning,
            opts=child,
        )
        self.containers: dict[str, storage.BlobContainer] = {
            container: storage.BlobContainer(
                f"{name}-{container}",
                account_name=self.account.name,
                resource_group_name=args.resource_group_name,
                container_name=container,
                public_access=storage.PublicAccess.NONE,
                opts=child,
            )
            for container in args.containers
        }
        self.lifecycle = (
            storage.ManagementPolicy(
                f"{name}-lifecycle",
                account_name=self.account.name,
                resource_group_name=args.resource_group_name,
                management_policy_name="default",
                policy=storage.ManagementPolicySchemaArgs(rules=[_expiry_rule(c, d) for c, d in args.expire_containers.items()]),
                opts=child,
            )
            if args.expire_containers
            else None
        )
        self.register_outputs({"account_name": self.account.name})


def _expiry_rule(container: str, days: int) -> storage.ManagementPolicyRuleArgs:
    """Lifecycle rule deleting the block blobs of ``container`` ``days`` days after they were written."""
    return storage.ManagementPolicyRuleArgs(
        name=f"expire-{container}",
        type="Lifecycle",
        enabled=True,
        definition=storage.ManagementPolicyDefinitionArgs(
            filters=storage.ManagementPolicyFilterArgs(blob_types=["blockBlob"], prefix_match=[f"{container}/"]),
            actions=storage.ManagementPolicyActionArgs(
                base_blob=storage.ManagementPolicyBaseBlobArgs(
                    delete=storage.DateAfterModificationArgs(days_after_modification_greater_than=days)
                ),
                version=storage.ManagementPolicyVersionArgs(
                    delete=storage.DateAfterCreationArgs(days_after_creation_greater_than=days)
                ),
                snapshot=storage.ManagementPolicySnapShotArgs(
                    delete=storage.DateAfterCreationArgs(days_after_creation_greater_than=days)
                ),
            ),
        ),
    )


@dataclass
class KeyVaultArgs:
    """Key Vault with RBAC authorization (no access policies), soft delete and purge protection."""

    resource_group_name: pulumi.Input[str]
    location: str
    tenant_id: pulumi.Input[str]
    public_network_access: bool = True
    soft_delete_days: int = 90
    tags: Mapping[str, str] = field(default_factory=dict)


class KeyVault(pulumi.ComponentResource):
    """Key Vault (standard SKU). Attribute ``vault``. Purge protection cannot be turned off once on."""

    def __init__(self, name: str, args: KeyVaultArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("detops:azure:KeyVault", name, None, opts)
        self.vault = keyvault.Vault(
            name,
            resource_group_name=args.resource_group_name,
            location=args.location,
            properties=keyvault.VaultPropertiesArgs(
                tenant_id=args.tenant_id,
                sku=keyvault.SkuArgs(family=keyvault.SkuFamily.A, name=keyvault.SkuName.STANDARD),
                enable_rbac_authorization=True,
                enable_soft_delete=True,
                soft_delete_retention_in_days=args.soft_delete_days,
                enable_purge_protection=True,
                public_network_access="Enabled" if args.public_network_access else "Disabled",
                # Default deny; trusted Azure services (the Azure ML workspace) bypass; private endpoint in prod.
                network_acls=keyvault.NetworkRuleSetArgs(
                    bypass=keyvault.NetworkRuleBypassOptions.AZURE_SERVICES,
                    default_action=keyvault.NetworkRuleAction.DENY,
                ),
            ),
            tags=dict(args.tags),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"vault_name": self.vault.name})


@dataclass
class MonitoringArgs:
    """Log Analytics workspace and a workspace-based Application Insights component."""

    resource_group_name: pulumi.Input[str]
    location: str
    retention_days: int = 30
    tags: Mapping[str, str] = field(default_factory=dict)


class Monitoring(pulumi.ComponentResource):
    """Attributes ``log_analytics`` and ``app_insights`` (``applicationinsights.Component``)."""

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("detops:azure:Monitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.log_analytics = operationalinsights.Workspace(
            f"{name}-logs",
            resource_group_name=args.resource_group_name,
            location=args.location,
            sku=operationalinsights.WorkspaceSkuArgs(name="PerGB2018"),
            retention_in_days=args.retention_days,
            tags=dict(args.tags),
            opts=child,
        )
        self.app_insights = applicationinsights.Component(
            f"{name}-appi",
            resource_group_name=args.resource_group_name,
            location=args.location,
            kind="web",
            application_type="web",
            ingestion_mode="LogAnalytics",
            workspace_resource_id=self.log_analytics.id,
            tags=dict(args.tags),
            opts=child,
        )
        self.register_outputs({"app_insights_id": self.app_insights.id})


@dataclass
class ContainerRegistryArgs:
    """Azure Container Registry; admin user always off (pull/push through Entra ID roles)."""

    resource_group_name: pulumi.Input[str]
    location: str
    sku: str = "Standard"
    public_network_access: bool = True
    tags: Mapping[str, str] = field(default_factory=dict)


class ContainerRegistry(pulumi.ComponentResource):
    """Attribute ``registry``; ``registry.login_server`` is what ``docker push`` targets."""

    def __init__(self, name: str, args: ContainerRegistryArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("detops:azure:ContainerRegistry", name, None, opts)
        self.registry = containerregistry.Registry(
            name,
            resource_group_name=args.resource_group_name,
            location=args.location,
            sku=containerregistry.SkuArgs(name=args.sku),
            admin_user_enabled=False,
            anonymous_pull_enabled=False,
            public_network_access="Enabled" if args.public_network_access else "Disabled",
            tags=dict(args.tags),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"login_server": self.registry.login_server})


@dataclass
class ClusterSpec:
    """One Azure ML compute cluster (AmlCompute).

    ``name``: compute name in the workspace (2-16 chars). ``min_nodes``..``max_nodes``: autoscale range;
    ``idle_seconds``: idle time before a node is released. ``low_priority``: preemptible nodes
    (cheaper, may be evicted; training must resume from checkpoints). ``node_public_ip``: off by default,
    which needs the workspace's managed network (set by :class:`MlWorkspace`) or a VNet.
    """

    name: str
    vm_size: str
    max_nodes: int
    min_nodes: int = 0
    idle_seconds: int = 900
    low_priority: bool = False
    node_public_ip: bool = False


@dataclass
class MlWorkspaceArgs:
    """Azure ML workspace linked to storage, Key Vault, App Insights and ACR, plus compute clusters."""

    resource_group_name: pulumi.Input[str]
    location: str
    storage_account_id: pulumi.Input[str]
    key_vault_id: pulumi.Input[str]
    app_insights_id: pulumi.Input[str]
    container_registry_id: pulumi.Input[str]
    clusters: Sequence[ClusterSpec]
    public_network_access: bool = True
    #: The workspace's managed network (AllowInternetOutbound). It does not cover Kubernetes compute
    #: ("Workspace managed network isolation", limitations): off when AKS is attached.
    managed_network: bool = True
    tags: Mapping[str, str] = field(default_factory=dict)


class MlWorkspace(pulumi.ComponentResource):
    """Attributes ``workspace`` and ``clusters`` (compute name -> ``machinelearningservices.Compute``).

    The workspace has a system-assigned identity and a managed network that allows internet outbound,
    so clusters run without node public IPs and without a customer VNet.
    """

    def __init__(self, name: str, args: MlWorkspaceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("detops:azure:MlWorkspace", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.workspace = machinelearningservices.Workspace(
            name,
            resource_group_name=args.resource_group_name,
            location=args.location,
            kind="Default",
            sku=machinelearningservices.SkuArgs(name="Basic", tier="Basic"),
            identity=machinelearningservices.ManagedServiceIdentityArgs(type="SystemAssigned"),
            storage_account=args.storage_account_id,
            key_vault=args.key_vault_id,
            application_insights=args.app_insights_id,
            container_registry=args.container_registry_id,
            managed_network=machinelearningservices.ManagedNetworkSettingsArgs(
                isolation_mode="AllowInternetOutbound" if args.managed_network else "Disabled"
            ),
            # Storage has shared keys off: the workspace reaches its system datastores with its identity.
            system_datastores_auth_mode="identity",
            public_network_access="Enabled" if args.public_network_access else "Disabled",
            v1_legacy_mode=False,
            tags=dict(args.tags),
            opts=child,
        )
        self.clusters: dict[str, machinelearningservices.Compute] = {}
        for spec in args.clusters:
            self.clusters[spec.name] = machinelearningservices.Compute(
                f"{name}-{spec.name}",
                compute_name=spec.name,
                resource_group_name=args.resource_group_name,
                workspace_name=self.workspace.name,
                location=args.location,
                identity=machinelearningservices.ManagedServiceIdentityArgs(type="SystemAssigned"),
                properties=machinelearningservices.AmlComputeArgs(
                    compute_type="AmlCompute",
                    disable_local_auth=True,
                    properties=machinelearningservices.AmlComputePropertiesArgs(
                        vm_size=spec.vm_size,
                        vm_priority="LowPriority" if spec.low_priority else "Dedicated",
                        os_type="Linux",
                        scale_settings=machinelearningservices.ScaleSettingsArgs(
                            min_node_count=spec.min_nodes,
                            max_node_count=spec.max_nodes,
                            node_idle_time_before_scale_down=f"PT{spec.idle_seconds}S",
                        ),
                        # The SDK defaults this to True: set it deliberately.
                        enable_node_public_ip=spec.node_public_ip,
                        remote_login_port_public_access="Disabled",
                    ),
                ),
                tags=dict(args.tags),
                opts=child,
            )
        self.register_outputs({"workspace_name": self.workspace.name})


@dataclass
class NodePoolSpec:
    """An autoscaling AKS user node pool. ``name``: 1-12 lowercase alphanumerics. ``taints``: e.g. GPU."""

    name: str
    vm_size: str
    max_count: int
    min_count: int = 0
    taints: Sequence[str] = ()
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass
class AksComputeArgs:
    """AKS cluster with the Azure ML extension, attached to a workspace as Kubernetes compute.

    ``acr_id``: the kubelet identity gets AcrPull there. ``compute_name``: name of the attached
    compute in the workspace (2-16 chars). ``sku_tier``: ``Free`` or ``Standard`` (uptime SLA).
    """

    resource_group_name: pulumi.Input[str]
    location: str
    workspace_name: pulumi.Input[str]
    acr_id: pulumi.Input[str]
    subscription_id: pulumi.Input[str]
    system_vm_size: str
    node_pools: Sequence[NodePoolSpec]
    ssl_cname: str
    subnet_id: pulumi.Input[str]
    compute_name: str = "aks-compute"
    kubernetes_version: str | None = None
    sku_tier: str = "Free"
    inference_router_ha: bool = True
    system_min_nodes: int = 3
    ssl_secret: str = "azureml-tls"
    tags: Mapping[str, str] = field(default_factory=dict)


class AksCompute(pulumi.ComponentResource):
    """Attributes ``cluster``, ``node_pools``, ``extension`` (Microsoft.AzureML.Kubernetes), ``compute``.

    Configured the way the Azure ML extension supports ("Deploy Azure Machine Learning extension on AKS
    or Arc Kubernetes cluster", limitations and configuration settings): a managed identity; local
    accounts left enabled ("Azure Machine Learning doesn't support disabling local accounts for AKS"),
    with Entra ID + Azure RBAC for people; a private API server in the stack's VNet; no node public IP;
    HTTPS-only inference (``allowInsecureConnections=False``) with ``sslCname`` and the certificate in the
    Kubernetes secret ``ssl_secret`` (synced from Key Vault, docs/infra.md); ``inferenceRouterHA`` only
    with a system pool of at least 3 nodes (the router runs 3 replicas).
    """

    def __init__(self, name: str, args: AksComputeArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("detops:azure:AksCompute", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.cluster = containerservice.ManagedCluster(
            name,
            resource_group_name=args.resource_group_name,
            location=args.location,
            dns_prefix=name,
            kubernetes_version=args.kubernetes_version,
            identity=containerservice.ManagedClusterIdentityArgs(type="SystemAssigned"),
            aad_profile=containerservice.ManagedClusterAADProfileArgs(managed=True, enable_azure_rbac=True),
            enable_rbac=True,
            # The Azure ML extension does not support AKS with local accounts disabled.
            disable_local_accounts=False,
            api_server_access_profile=containerservice.ManagedClusterAPIServerAccessProfileArgs(enable_private_cluster=True),
            sku=containerservice.ManagedClusterSKUArgs(name="Base", tier=args.sku_tier),
            oidc_issuer_profile=containerservice.ManagedClusterOIDCIssuerProfileArgs(enabled=True),
            security_profile=containerservice.ManagedClusterSecurityProfileArgs(
                workload_identity=containerservice.ManagedClusterSecurityProfileWorkloadIdentityArgs(enabled=True)
            ),
            auto_upgrade_profile=containerservice.ManagedClusterAutoUpgradeProfileArgs(upgrade_channel="stable"),
            network_profile=containerservice.ContainerServiceNetworkProfileArgs(
                network_plugin="azure", network_plugin_mode="overlay"
            ),
            agent_pool_profiles=[
                containerservice.ManagedClusterAgentPoolProfileArgs(
                    name="system",
                    mode="System",
                    vm_size=args.system_vm_size,
                    os_type="Linux",
                    type="VirtualMachineScaleSets",
                    count=args.system_min_nodes,
                    enable_auto_scaling=True,
                    min_count=args.system_min_nodes,
                    max_count=max(args.system_min_nodes, 5),
                    enable_node_public_ip=False,
                    vnet_subnet_id=args.subnet_id,
                    # Untainted: the Azure ML extension's pods run here, so user pools can scale to 0.
                )
            ],
            tags=dict(args.tags),
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["agentPoolProfiles[0].count"]),
        )
        self.node_pools: dict[str, containerservice.AgentPool] = {}
        for pool in args.node_pools:
            self.node_pools[pool.name] = containerservice.AgentPool(
                f"{name}-{pool.name}",
                agent_pool_name=pool.name,
                resource_group_name=args.resource_group_name,
                resource_name_=self.cluster.name,
                mode="User",
                vm_size=pool.vm_size,
                os_type="Linux",
                type="VirtualMachineScaleSets",
                enable_auto_scaling=True,
                count=pool.min_count,
                min_count=pool.min_count,
                max_count=pool.max_count,
                enable_node_public_ip=False,
                vnet_subnet_id=args.subnet_id,
                node_taints=list(pool.taints),
                node_labels=dict(pool.labels),
                opts=pulumi.ResourceOptions(parent=self, ignore_changes=["count"]),
            )
        # Pull images from ACR with the kubelet's managed identity (no registry password).
        self.acr_pull = authorization.RoleAssignment(
            f"{name}-acr-pull",
            scope=args.acr_id,
            role_definition_id=role_definition_id(args.subscription_id, "AcrPull"),
            principal_id=self.cluster.identity_profile.apply(
                lambda profile: profile["kubeletidentity"].object_id
            ),
            principal_type="ServicePrincipal",
            opts=child,
        )
        self.extension = kubernetesconfiguration.Extension(
            f"{name}-azureml",
            extension_name="azureml",
            extension_type="Microsoft.AzureML.Kubernetes",
            cluster_rp="Microsoft.ContainerService",
            cluster_resource_name="managedClusters",
            cluster_name=self.cluster.name,
            resource_group_name=args.resource_group_name,
            auto_upgrade_minor_version=True,
            release_train="stable",
            identity=kubernetesconfiguration.IdentityArgs(type="SystemAssigned"),
            scope=kubernetesconfiguration.ScopeArgs(
                cluster=kubernetesconfiguration.ScopeClusterArgs(release_namespace="azureml")
            ),
            # Settings from "Deploy Azure Machine Learning extension on AKS" (learn.microsoft.com).
            configuration_settings={
                "enableTraining": "True",
                "enableInference": "True",
                # An internal load balancer: the router is reached inside the VNet, like the API server.
                "inferenceRouterServiceType": "LoadBalancer",
                "internalLoadBalancerProvider": "azure",
                "inferenceRouterHA": "True" if args.inference_router_ha else "False",
                "allowInsecureConnections": "False",
                "sslCname": args.ssl_cname,
                "sslSecret": args.ssl_secret,
                "installNvidiaDevicePlugin": "True",
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(self.node_pools.values())),
        )
        self.compute = machinelearningservices.Compute(
            f"{name}-attach",
            compute_name=args.compute_name,
            resource_group_name=args.resource_group_name,
            workspace_name=args.workspace_name,
            location=args.location,
            identity=machinelearningservices.ManagedServiceIdentityArgs(type="SystemAssigned"),
            properties=machinelearningservices.KubernetesArgs(
                compute_type="Kubernetes",
                disable_local_auth=True,
                resource_id=self.cluster.id,
                properties=machinelearningservices.KubernetesPropertiesArgs(namespace="azureml"),
            ),
            tags=dict(args.tags),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.extension]),
        )
        self.register_outputs({"cluster_name": self.cluster.name, "compute_name": args.compute_name})


@dataclass
class RoleGrant:
    """One role assignment: built-in ``role`` (key of :data:`ROLE_IDS`) on ``scope`` (a resource id),
    limited by an ABAC ``condition`` (version 2.0) when one is given."""

    role: str
    scope: pulumi.Input[str]
    label: str
    condition: str | None = None


_BLOBS = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs"


def blob_path_condition(pattern: str) -> str:
    """ABAC condition limiting every blob data action of Storage Blob Data Contributor but read (its
    DataActions: ``blobs/delete``, ``write``, ``move/action``, ``add/action``, ``read``; Azure built-in roles)
    to blobs whose path (inside the container) matches ``pattern`` (``StringLike``: ``*`` any run of
    characters). Azure ABAC conditions apply to data actions only; the role's container-level Actions stay."""
    writes = " AND ".join(f"!(ActionMatches{{'{_BLOBS}/{action}'}})" for action in ("delete", "write", "move/action", "add/action"))
    return f"(({writes}) OR (@Resource[{_BLOBS}:path] StringLike '{pattern}'))"


def blob_read_condition(pattern: str) -> str:
    """ABAC condition limiting Storage Blob Data Reader's blob reads (``blobs/read``) to blobs whose path
    matches ``pattern`` (``StringLike``), e.g. the endpoint identity reading ``*/export/*`` of ``runs`` only."""
    return f"((!(ActionMatches{{'{_BLOBS}/read'}})) OR (@Resource[{_BLOBS}:path] StringLike '{pattern}'))"


@dataclass
class CiIdentityArgs:
    """User-assigned identity that CI signs in as through OIDC federation (no client secret).

    ``github_subjects``: GitHub ``sub`` claims (``repo:owner/name:ref:refs/heads/main``,
    ``repo:owner/name:environment:prod``). ``azure_devops``: ``(issuer, subject)`` of a service
    connection (:class:`infra.settings.AzureDevOpsSettings`), or None. ``grants``: least-privilege role assignments, each on one resource.
    """

    resource_group_name: pulumi.Input[str]
    location: str
    subscription_id: pulumi.Input[str]
    github_subjects: Sequence[str]
    grants: Sequence[RoleGrant]
    azure_devops: tuple[pulumi.Input[str], str] | None = None
    purpose: str = "ci"
    tags: Mapping[str, str] = field(default_factory=dict)


class CiIdentity(pulumi.ComponentResource):
    """Attributes ``identity``, ``credentials`` (FederatedIdentityCredential list), ``assignments``.

    Azure rejects concurrent writes of federated credentials under one identity, so each credential
    depends on the previous one; an identity holds at most 20.
    """

    def __init__(self, name: str, args: CiIdentityArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("detops:azure:CiIdentity", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.identity = managedidentity.UserAssignedIdentity(
            name,
            resource_group_name=args.resource_group_name,
            location=args.location,
            tags={**args.tags, "detops-purpose": args.purpose},
            opts=child,
        )
        federations: list[tuple[str, pulumi.Input[str], str]] = [
            (f"github-{index}", GITHUB_ISSUER, subject) for index, subject in enumerate(args.github_subjects)
        ]
        if args.azure_devops is not None:
            federations.append(("azure-devops", *args.azure_devops))
        if len(federations) > 20:
            raise ValueError(f"{len(federations)} federated credentials requested; Azure allows 20 per identity")
        self.credentials: list[managedidentity.FederatedIdentityCredential] = []
        previous: list[pulumi.Resource] = []
        for label, issuer, subject in federations:
            credential = managedidentity.FederatedIdentityCredential(
                f"{name}-{label}",
                resource_group_name=args.resource_group_name,
                resource_name_=self.identity.name,
                issuer=issuer,
                subject=subject,
                audiences=[ENTRA_TOKEN_AUDIENCE],
                opts=pulumi.ResourceOptions(parent=self, depends_on=previous),
            )
            self.credentials.append(credential)
            previous = [credential]
        self.assignments: list[authorization.RoleAssignment] = [
            authorization.RoleAssignment(
                f"{name}-{grant.label}",
                scope=grant.scope,
                role_definition_id=role_definition_id(args.subscription_id, grant.role),
                principal_id=self.identity.principal_id,
                principal_type="ServicePrincipal",
                description=f"detops {args.purpose}: {grant.role}",
                **({"condition": grant.condition, "condition_version": "2.0"} if grant.condition else {}),
                opts=child,
            )
            for grant in args.grants
        ]
        self.register_outputs({"client_id": self.identity.client_id})


@dataclass
class PrivateLinkTarget:
    """A resource reached through a private endpoint: its id, sub-resource (group id) and DNS zones."""

    label: str
    resource_id: pulumi.Input[str]
    group_id: str
    dns_zones: Sequence[str]


@dataclass
class PrivateEndpointsArgs:
    """A VNet with one subnet for private endpoints, and per target an endpoint + private DNS zones."""

    resource_group_name: pulumi.Input[str]
    location: str
    address_space: str
    targets: Sequence[PrivateLinkTarget]
    #: Also a subnet for AKS nodes (AKS in the VNet, next to the private endpoints it uses).
    aks_subnet: bool = False
    tags: Mapping[str, str] = field(default_factory=dict)


# Private DNS zone names per sub-resource ("Azure Private Endpoint private DNS zone values").
PRIVATE_DNS_ZONES: Mapping[str, tuple[str, ...]] = {
    "blob": ("privatelink.blob.core.windows.net",),
    "file": ("privatelink.file.core.windows.net",),
    "vault": ("privatelink.vaultcore.azure.net",),
    "registry": ("privatelink.azurecr.io",),
    "amlworkspace": ("privatelink.api.azureml.ms", "privatelink.notebooks.azure.net"),
}


class PrivateEndpoints(pulumi.ComponentResource):
    """Attributes ``vnet``, ``subnet`` (endpoints), ``aks_subnet`` (or None), ``endpoints`` (label ->
    PrivateEndpoint), ``zones`` (name -> zone). Subnets: the first /24 of the address space for
    endpoints, the second for AKS nodes."""

    def __init__(self, name: str, args: PrivateEndpointsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("detops:azure:PrivateEndpoints", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.vnet = network.VirtualNetwork(
            f"{name}-vnet",
            resource_group_name=args.resource_group_name,
            location=args.location,
            address_space=network.AddressSpaceArgs(address_prefixes=[args.address_space]),
            tags=dict(args.tags),
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["subnets"]),
        )
        import ipaddress

        subnets = ipaddress.ip_network(args.address_space, strict=False).subnets(new_prefix=24)
        endpoints_prefix, aks_prefix = str(next(subnets)), str(next(subnets))
        self.subnet = network.Subnet(
            f"{name}-endpoints",
            resource_group_name=args.resource_group_name,
            virtual_network_name=self.vnet.name,
            address_prefix=endpoints_prefix,
            private_endpoint_network_policies="Enabled",
            default_outbound_access=False,
            opts=child,
        )
        self.aks_subnet: network.Subnet | None = None
        if args.aks_subnet:
            self.aks_subnet = network.Subnet(
                f"{name}-aks",
                resource_group_name=args.resource_group_name,
                virtual_network_name=self.vnet.name,
                address_prefix=aks_prefix,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.subnet]),
            )
        self.zones: dict[str, privatedns.PrivateZone] = {}
        self.endpoints: dict[str, network.PrivateEndpoint] = {}
        for target in args.targets:
            for zone_name in target.dns_zones:
                if zone_name in self.zones:
                    continue
                label = zone_name.replace("privatelink.", "").replace(".", "-")
                zone = privatedns.PrivateZone(
                    f"{name}-{label}",
                    resource_group_name=args.resource_group_name,
                    private_zone_name=zone_name,
                    location="global",
                    tags=dict(args.tags),
                    opts=child,
                )
                privatedns.VirtualNetworkLink(
                    f"{name}-{label}-link",
                    resource_group_name=args.resource_group_name,
                    private_zone_name=zone.name,
                    location="global",
                    virtual_network=privatedns.SubResourceArgs(id=self.vnet.id),
                    registration_enabled=False,
                    tags=dict(args.tags),
                    opts=child,
                )
                self.zones[zone_name] = zone
            endpoint = network.PrivateEndpoint(
                f"{name}-{target.label}",
                resource_group_name=args.resource_group_name,
                location=args.location,
                subnet=network.SubnetArgs(id=self.subnet.id),
                private_link_service_connections=[
                    network.PrivateLinkServiceConnectionArgs(
                        name=target.label,
                        private_link_service_id=target.resource_id,
                        group_ids=[target.group_id],
                    )
                ],
                tags=dict(args.tags),
                opts=child,
            )
            network.PrivateDnsZoneGroup(
                f"{name}-{target.label}-dns",
                resource_group_name=args.resource_group_name,
                private_endpoint_name=endpoint.name,
                private_dns_zone_group_name="default",
                private_dns_zone_configs=[
                    network.PrivateDnsZoneConfigArgs(name=zone.replace(".", "-"), private_dns_zone_id=self.zones[zone].id)
                    for zone in target.dns_zones
                ],
                opts=child,
            )
            self.endpoints[target.label] = endpoint
        self.register_outputs({"vnet_id": self.vnet.id})


def diagnostic_setting(
    name: str, resource_id: pulumi.Input[str], workspace_id: pulumi.Input[str], opts: pulumi.ResourceOptions | None = None
) -> monitor.DiagnosticSetting:
    """Send every log (category group ``allLogs``) and ``AllMetrics`` of ``resource_id`` to Log Analytics."""
    return monitor.DiagnosticSetting(
        name,
        name="to-log-analytics",
        resource_uri=resource_id,
        workspace_id=workspace_id,
        logs=[monitor.DiagnosticsLogSettingsArgs(category_group="allLogs", enabled=True)],
        metrics=[monitor.DiagnosticsMetricSettingsArgs(category="AllMetrics", enabled=True)],
        opts=opts,
    )
