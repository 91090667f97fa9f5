"""Pulumi mocks that record every registered resource, and a runner for one program run.

``run_program(create_stack, settings, project=..., stack=...)`` runs a program in-process under fresh
mocks (no Pulumi CLI, no provider plugins, no cloud credentials) and returns every custom resource
registered (type token, logical name, inputs as the engine receives them: camelCase wire names, the
same shape CrossGuard policies see as ``props``) and the resolved stack outputs.

The mocks answer like the clouds do where the programs depend on it: Azure resource ids with the real
ARM path shape (role-assignment scopes are checked against them), AWS ARNs, ECR repository URLs,
identity client/principal ids, the principal id of a system-assigned identity (``identity.principalId``, as
ARM returns it for Azure ML workspaces and computes), AKS kubelet identity, and the provider invokes
(``azure-native:authorization:getClientConfig``, ``aws:index/getCallerIdentity``, ``getPartition``, and
``aws:iam/getOpenIdConnectProvider`` answering for the provider the bootstrap made).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime import settings as runtime_settings

SUBSCRIPTION_ID = "00000000-1111-2222-3333-444444444444"
TENANT_ID = "99999999-8888-7777-6666-555555555555"
AWS_ACCOUNT_ID = "123456789012"

# type token -> (ARM provider path of the resource, input key holding its own name, parent path or None)
_AZURE_ARM: dict[str, tuple[str, str]] = {
    "azure-native:storage:StorageAccount": ("Microsoft.Storage/storageAccounts/{}", "accountName"),
    "azure-native:keyvault:Vault": ("Microsoft.KeyVault/vaults/{}", "vaultName"),
    "azure-native:containerregistry:Registry": ("Microsoft.ContainerRegistry/registries/{}", "registryName"),
    "azure-native:operationalinsights:Workspace": ("Microsoft.OperationalInsights/workspaces/{}", "workspaceName"),
    "azure-native:applicationinsights:Component": ("Microsoft.Insights/components/{}", "resourceName"),
    "azure-native:machinelearningservices:Workspace": ("Microsoft.MachineLearningServices/workspaces/{}", "workspaceName"),
    "azure-native:containerservice:ManagedCluster": ("Microsoft.ContainerService/managedClusters/{}", "resourceName"),
    "azure-native:managedidentity:UserAssignedIdentity": ("Microsoft.ManagedIdentity/userAssignedIdentities/{}", "resourceName"),
    "azure-native:network:VirtualNetwork": ("Microsoft.Network/virtualNetworks/{}", "virtualNetworkName"),
    "azure-native:network:PrivateEndpoint": ("Microsoft.Network/privateEndpoints/{}", "privateEndpointName"),
    "azure-native:privatedns:PrivateZone": ("Microsoft.Network/privateDnsZones/{}", "privateZoneName"),
}


def _suffix(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:8]


@dataclass
class RegisteredResource:
    """One resource the program registered: ``type`` token, logical ``name``, ``inputs`` (camelCase)."""

    type: str
    name: str
    inputs: dict[str, Any]
    id: str
    outputs: dict[str, Any] = field(default_factory=dict)


class RecordingMocks(pulumi.runtime.Mocks):
    """Mocks that record each ``new_resource`` call and synthesize cloud-shaped outputs."""

    def __init__(self) -> None:
        self.resources: list[RegisteredResource] = []
        self.calls: list[str] = []

    # -- resources -------------------------------------------------------------------------------
    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        inputs = dict(args.inputs)
        outputs = dict(inputs)
        token = args.typ
        if token.startswith("azure-native:"):
            resource_id = self._azure(token, args.name, inputs, outputs)
        elif token.startswith("aws:"):
            resource_id = self._aws(token, args.name, inputs, outputs)
        else:  # providers and anything else
            resource_id = f"{args.name}-id"
        identity = inputs.get("identity")
        if isinstance(identity, dict) and "SystemAssigned" in str(identity.get("type", "")):
            outputs["identity"] = {**identity, "principalId": f"system-{_suffix(args.name)}", "tenantId": TENANT_ID}
        self.resources.append(RegisteredResource(token, args.name, inputs, resource_id, outputs))
        return resource_id, outputs

    def _azure(self, token: str, name: str, inputs: dict[str, Any], outputs: dict[str, Any]) -> str:
        rg = inputs.get("resourceGroupName", "rg")
        base = f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{rg}/providers"
        if token == "azure-native:resources:ResourceGroup":
            own = inputs.get("resourceGroupName") or f"{name}{_suffix(name)}"
            outputs["name"] = own
            return f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{own}"
        if token in _AZURE_ARM:
            path, key = _AZURE_ARM[token]
            own = inputs.get(key) or f"{name}{_suffix(name)}"
            outputs["name"] = own
            resource_id = f"{base}/{path.format(own)}"
            if token == "azure-native:containerregistry:Registry":
                outputs["loginServer"] = f"{own}.azurecr.io"
            elif token == "azure-native:keyvault:Vault":
                outputs["properties"] = {**inputs.get("properties", {}), "vaultUri": f"https://{own}.vault.azure.net/"}
            elif token == "azure-native:managedidentity:UserAssignedIdentity":
                outputs["clientId"] = f"client-{_suffix(name)}"
                outputs["principalId"] = f"principal-{_suffix(name)}"
                outputs["tenantId"] = TENANT_ID
            elif token == "azure-native:containerservice:ManagedCluster":
                outputs["identityProfile"] = {
                    "kubeletidentity": {"objectId": f"kubelet-{_suffix(name)}", "clientId": "kubelet-client"}
                }
            return resource_id
        if token == "azure-native:storage:BlobContainer":
            own = inputs["containerName"]
            outputs["name"] = own
            return f"{base}/Microsoft.Storage/storageAccounts/{inputs['accountName']}/blobServices/default/containers/{own}"
        if token == "azure-native:machinelearningservices:Compute":
            own = inputs["computeName"]
            outputs["name"] = own
            return f"{base}/Microsoft.MachineLearningServices/workspaces/{inputs['workspaceName']}/computes/{own}"
        if token == "azure-native:containerservice:AgentPool":
            outputs["name"] = inputs["agentPoolName"]
            return f"{base}/Microsoft.ContainerService/managedClusters/{inputs['resourceName']}/agentPools/{inputs['agentPoolName']}"
        if token == "azure-native:authorization:RoleAssignment":
            own = inputs.get("roleAssignmentName") or _suffix(name)
            outputs["name"] = own
            return f"{inputs['scope']}/providers/Microsoft.Authorization/roleAssignments/{own}"
        own = next((value for key, value in inputs.items() if key.endswith("Name") and key != "resourceGroupName"), None)
        outputs["name"] = own or f"{name}{_suffix(name)}"
        return f"{base}/{token}/{outputs['name']}"

    def _aws(self, token: str, name: str, inputs: dict[str, Any], outputs: dict[str, Any]) -> str:
        region = "eu-west-1"
        account = AWS_ACCOUNT_ID
        if token == "aws:s3/bucket:Bucket":
            own = inputs.get("bucket") or f"{name}-{_suffix(name)}"
            outputs.update(bucket=own, arn=f"arn:aws:s3:::{own}")
            return own
        if token == "aws:kms/key:Key":
            key_id = f"key-{_suffix(name)}"
            outputs.update(keyId=key_id, arn=f"arn:aws:kms:{region}:{account}:key/{key_id}")
            return key_id
        if token == "aws:ecr/repository:Repository":
            own = inputs["name"]
            outputs.update(
                arn=f"arn:aws:ecr:{region}:{account}:repository/{own}",
                repositoryUrl=f"{account}.dkr.ecr.{region}.amazonaws.com/{own}",
                registryId=account,
            )
            return own
        if token == "aws:iam/role:Role":
            own = inputs.get("name") or f"{name}-{_suffix(name)}"
            outputs.update(name=own, arn=f"arn:aws:iam::{account}:role/{own}")
            return own
        if token == "aws:iam/openIdConnectProvider:OpenIdConnectProvider":
            host = inputs["url"].removeprefix("https://")
            outputs["arn"] = f"arn:aws:iam::{account}:oidc-provider/{host}"
            return outputs["arn"]
        if token == "aws:cloudwatch/logGroup:LogGroup":
            outputs["arn"] = f"arn:aws:logs:{region}:{account}:log-group:{inputs['name']}"
            return inputs["name"]
        if token == "aws:sagemaker/modelPackageGroup:ModelPackageGroup":
            own = inputs["modelPackageGroupName"]
            outputs["arn"] = f"arn:aws:sagemaker:{region}:{account}:model-package-group/{own}"
            return own
        service = token.split(":")[1].split("/")[0]
        outputs.setdefault("arn", f"arn:aws:{service}:{region}:{account}:{name}")
        return f"{name}-{_suffix(name)}"

    # -- invokes ---------------------------------------------------------------------------------
    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        self.calls.append(args.token)
        if args.token == "azure-native:authorization:getClientConfig":
            return {"subscriptionId": SUBSCRIPTION_ID, "tenantId": TENANT_ID, "clientId": "deployer", "objectId": "deployer-oid"}, []
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": AWS_ACCOUNT_ID, "arn": f"arn:aws:iam::{AWS_ACCOUNT_ID}:user/deployer", "userId": "AIDA", "id": AWS_ACCOUNT_ID}, []
        if args.token == "aws:iam/getOpenIdConnectProvider:getOpenIdConnectProvider":
            # the account's provider, made by infra/bootstrap: looked up by its ARN
            arn = args.args["arn"]
            return {"arn": arn, "id": arn, "url": arn.split(":oidc-provider/", 1)[1], "clientIdLists": ["sts.amazonaws.com"],
                    "thumbprintLists": [], "tags": {}}, []
        if args.token == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws", "reverseDnsPrefix": "com.amazonaws"}, []
        raise NotImplementedError(f"invoke {args.token} is not mocked")


@dataclass
class ProgramRun:
    """What one mocked program run registered and returned."""

    resources: list[RegisteredResource]
    outputs: dict[str, Any]
    calls: list[str]

    def of_type(self, token: str) -> list[RegisteredResource]:
        """Registered resources of one type token (e.g. ``aws:s3/bucket:Bucket``)."""
        return [resource for resource in self.resources if resource.type == token]


def ensure_event_loop() -> None:
    """Give the main thread a current asyncio event loop if it has none.

    Pulumi's runtime calls ``asyncio.get_event_loop()``; any ``asyncio.run()`` earlier in the same
    process (FastAPI/anyio test clients, for one) ends with ``set_event_loop(None)``, after which that
    call raises "There is no current event loop".
    """
    try:
        if not asyncio.get_event_loop().is_closed():
            return
    except RuntimeError:
        pass
    asyncio.set_event_loop(asyncio.new_event_loop())


def run_program(create_stack: Callable[[Any], dict[str, Any]], settings: Any, *, project: str, stack: str) -> ProgramRun:
    """Run ``create_stack(settings)`` under fresh mocks; wait for every registration; resolve outputs."""
    ensure_event_loop()
    mocks = RecordingMocks()
    # A fresh root stack resource per run: set_mocks only creates one when none exists.
    runtime_settings.ROOT.set(None)
    pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=False)
    resolved: dict[str, Any] = {}

    @pulumi.runtime.test
    def body() -> pulumi.Output[Any]:
        outputs = create_stack(settings)
        keys = list(outputs)
        return pulumi.Output.all(*[outputs[key] for key in keys]).apply(lambda values: resolved.update(zip(keys, values)))

    body()
    return ProgramRun(list(mocks.resources), resolved, list(mocks.calls))

