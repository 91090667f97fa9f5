"""Stack settings for the Pulumi programs, validated with pydantic when they are read.

Each program reads its settings from the stack's configuration (``Pulumi.<stack>.yaml``, keys in the
program's namespace, e.g. ``detops-azure:gpu_max_nodes``). A wrong value fails before any resource is
declared, with a :class:`training.errors.ConfigError` naming the file (or ``pulumi config``), the
setting and what is allowed, e.g.::

    Pulumi.prod.yaml: setting 'detops-azure:gpu_max_nodes': Input should be less than or equal to 100 (got 500)

Unknown keys are rejected with a near-match suggestion (a typo would otherwise be silently ignored).
No secret belongs in these settings: identities come from OIDC federation, never from keys.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from training.errors import ConfigError, Problem, near_match, validation_problems

__all__ = [
    "AwsPromotionSource",
    "AwsSettings",
    "AzureDevOpsSettings",
    "AzurePromotionSource",
    "AzureSettings",
    "BootstrapSettings",
    "GitHubSettings",
    "load_settings",
    "read_stack_file",
    "settings_from_pulumi_config",
]

T = TypeVar("T", bound=BaseModel)

# Azure public-cloud regions (``az account list-locations --query "[].name"``), for a near-match hint.
AZURE_REGIONS: frozenset[str] = frozenset(
    """australiacentral australiaeast australiasoutheast austriaeast belgiumcentral brazilsouth
    canadacentral canadaeast centralindia centralus chilecentral eastasia eastus eastus2 francecentral
    germanywestcentral indonesiacentral israelcentral italynorth japaneast japanwest koreacentral
    koreasouth malaysiawest mexicocentral newzealandnorth northcentralus northeurope norwayeast
    polandcentral qatarcentral southafricanorth southcentralus southeastasia southindia spaincentral
    swedencentral switzerlandnorth uaenorth uksouth ukwest westcentralus westeurope westus westus2
    westus3""".split()
)

_AWS_REGION = re.compile(r"^(us|eu|ap|sa|ca|me|af|il|mx)(-gov)?-(north|south|east|west|central|northeast|southeast|northwest|southwest)-\d$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def _lower_guid(value: str | None, hint: str) -> str | None:
    """``value`` lower-cased when it is a GUID (None passes through); raises ``ValueError("must be <hint>")``."""
    if value is None:
        return None
    if not _GUID.fullmatch(value):
        raise ValueError(f"must be {hint}")
    return value.lower()


class _Strict(BaseModel):
    """Base: unknown keys are errors, values are checked on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True)


_ENV_NAME = re.compile(r"[A-Za-z0-9_.-]+")

#: The purposes that get an identity of their own, in the order docs/infra.md lists them.
PURPOSES = ("infra_reader", "infra_deployer", "trainer", "registrar", "approver", "deployer")
#: Purposes whose identities the application stacks create; the infra identities come from infra/bootstrap.
APP_PURPOSES = ("trainer", "registrar", "approver", "deployer")


class PurposeEnvironments(_Strict):
    """GitHub deployment environments per identity: a workflow job running in one of them (``environment:``)
    may sign in as that identity and as no other. An empty list creates no identity for the purpose
    (a prod stack that never trains has no trainer).

    ``infra_reader``: ``pulumi preview`` (read only; pull requests). ``infra_deployer``: ``pulumi up``.
    ``trainer``: prepare and train. ``registrar``: register versions (PendingManualApproval only).
    ``approver``: approve/reject (an environment with required reviewers). ``deployer``: deploy and smoke test.
    """

    infra_reader: tuple[str, ...] = ()
    infra_deployer: tuple[str, ...] = ()
    trainer: tuple[str, ...] = ()
    registrar: tuple[str, ...] = ()
    approver: tuple[str, ...] = ()
    deployer: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _one_purpose_per_environment(self) -> PurposeEnvironments:
        seen: dict[str, str] = {}
        for purpose in PURPOSES:
            for name in getattr(self, purpose):
                if not _ENV_NAME.fullmatch(name):
                    raise ValueError(f"{purpose}: environment name {name!r} may hold letters, digits, '_', '.', '-' only")
                if name in seen:
                    raise ValueError(
                        f"environment {name!r} is listed for {seen[name]} and {purpose}: "
                        "each environment signs in as one identity only"
                    )
                seen[name] = purpose
        return self


#: Purposes whose identities may only be reached from ``main`` and the project's own workflow files.
#: infra_reader (``pulumi preview`` on pull requests, read only) is the one exception.
WRITE_PURPOSES = ("infra_deployer", "trainer", "registrar", "approver", "deployer")


class GitHubSettings(_Strict):
    """Which GitHub Actions jobs may sign in (OIDC).

    ``repository`` is ``owner/name``; ``environments`` maps each purpose to its deployment environments.
    The repository's subject claim template is ``repo, context, job_workflow_ref``
    (:mod:`training.github_oidc`; ``detops ci setup github`` sets it), so a token names the environment,
    the workflow file and the ref. A write purpose (:data:`WRITE_PURPOSES`) trusts exactly
    ``repo:R:environment:E:job_workflow_ref:R/.github/workflows/W@refs/heads/main`` for each of its
    environments E and each project workflow file W whose jobs name E (read from ``.github/workflows``):
    a branch, a pull request, another or a new workflow file, a fork, all present another subject.
    An environment no workflow names (``model-approval``: a person approves) gives its identity no
    GitHub subject at all. No identity trusts a bare branch or pull-request subject.
    """

    repository: str = Field(pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
    environments: PurposeEnvironments = Field(default_factory=PurposeEnvironments)

    def _check(self, purpose: str) -> None:
        if purpose not in PURPOSES:
            raise ValueError(f"unknown purpose {purpose!r}; known: {', '.join(PURPOSES)}")

    def has_identity(self, purpose: str) -> bool:
        """Whether the stack names environments for ``purpose`` (then it gets an identity, trusted or not)."""
        self._check(purpose)
        return bool(getattr(self.environments, purpose))

    def subjects(self, purpose: str, workflows_dir: Path | None = None) -> list[str]:
        """The exact ``sub`` claims ``purpose``'s identity trusts.

        Write purposes: :func:`training.github_oidc.main_subjects` of its environments (``main``, the project's
        workflow files naming each). ``infra_reader``: the preview runs on pull requests, whose ref
        (``refs/pull/<n>/merge``) has no fixed value: its exact subjects are the environments' default
        subjects ``repo:R:environment:E`` (what Azure's exact-match federated credentials can hold; with the
        subject template set they no longer match, see docs/cicd.md), and AWS trusts
        :meth:`reader_patterns` instead."""
        self._check(purpose)
        names = getattr(self.environments, purpose)
        if purpose not in WRITE_PURPOSES:
            return [f"repo:{self.repository}:environment:{name}" for name in names]
        from training.github_oidc import main_subjects

        return main_subjects(self.repository, names, workflows_dir)

    def reader_patterns(self, purpose: str = "infra_reader", workflows_dir: Path | None = None) -> list[str]:
        """IAM ``StringLike`` patterns for a read-only purpose: its environments, the project's workflow files
        naming them, any ref (pull requests included): ``...job_workflow_ref:R/.github/workflows/W@*``."""
        self._check(purpose)
        if purpose in WRITE_PURPOSES:
            raise ValueError(f"{purpose} is a write purpose: it trusts exact main subjects only")
        from training.github_oidc import subject, workflows_naming

        return [subject(self.repository, name, wf, "*") for name in getattr(self.environments, purpose)
                for wf in workflows_naming(name, workflows_dir)]

    def oidc_subjects(self) -> list[str]:
        """Every subject of every purpose (what this stack trusts at all)."""
        return [subject for purpose in PURPOSES for subject in self.subjects(purpose)]


#: The OIDC issuers of Azure DevOps service connections (:class:`AzureDevOpsSettings`).
ENTRA_ISSUER = "https://login.microsoftonline.com/{tenant_id}/v2.0"
AZURE_DEVOPS_ISSUER = "https://vstoken.dev.azure.com/{organization_id}"


class AzureDevOpsSettings(_Strict):
    """Azure DevOps service connections using workload identity federation (OIDC), one per purpose.

    ``service_connections`` maps a purpose (``trainer``, ``registrar`` ...) to its connection's name.
    Each identity gets one federated credential for its connection, with

    - ``issuer: entra`` (default; every connection made since the Entra issuer became the default, and
      every converted one): the issuer ``https://login.microsoftonline.com/<tenant id>/v2.0`` (the stack's
      tenant) and the subject Azure DevOps generates for the connection (``/eid1/c/pub/t/.../sc/<organization
      id>/<connection id>``, shown on the connection as "Subject identifier"; it cannot be derived from its
      name): ``subjects`` maps the purpose to it. A purpose without a subject yet gets no credential:
      the first ``pulumi up`` makes the identities, the connections are then made (workload identity
      federation, manual) with their client ids, and the next ``pulumi up`` federates them;
    - ``issuer: azure-devops`` (connections not yet converted; retired by Microsoft on 1 July 2027): the
      issuer ``https://vstoken.dev.azure.com/<organization_id>`` and the subject
      ``sc://<organization>/<project>/<service connection>``.

    Sources: Azure DevOps documentation, "Convert service connections to use the Microsoft Entra issuer"
    (learn.microsoft.com/azure/devops/pipelines/release/convert-service-connections) and "Workload
    identity federation for Azure Resource Manager service connections".
    """

    organization: str = Field(pattern=r"^[A-Za-z0-9-]+$")
    project: str = Field(min_length=1)
    service_connections: dict[str, str] = Field(min_length=1)
    issuer: Literal["entra", "azure-devops"] = "entra"
    subjects: dict[str, str] = Field(default_factory=dict)
    organization_id: str | None = None

    @field_validator("organization_id")
    @classmethod
    def _guid(cls, value: str | None) -> str | None:
        return _lower_guid(value, "the organization's GUID (Organization settings > Overview)")

    @field_validator("service_connections")
    @classmethod
    def _purposes(cls, value: dict[str, str]) -> dict[str, str]:
        for purpose, connection in value.items():
            if purpose not in PURPOSES:
                close = near_match(purpose, PURPOSES)
                hint = f"; did you mean {close!r}?" if close else f"; known: {', '.join(PURPOSES)}"
                raise ValueError(f"unknown purpose {purpose!r}{hint}")
            if not connection.strip():
                raise ValueError(f"{purpose}: empty service connection name")
        if len(set(value.values())) != len(value):
            raise ValueError("each purpose needs its own service connection")
        return value

    @model_validator(mode="after")
    def _issuer_needs(self) -> AzureDevOpsSettings:
        if self.issuer == "azure-devops" and not self.organization_id:
            raise ValueError("issuer 'azure-devops' needs organization_id (the Azure DevOps issuer names the organization)")
        for purpose, subject in self.subjects.items():
            if purpose not in self.service_connections:
                raise ValueError(f"subjects: {purpose!r} has no service connection in service_connections")
            if self.issuer == "entra" and (subject.startswith("sc://") or not subject.strip()):
                raise ValueError(
                    f"subjects.{purpose}: {subject!r} is not a subject the Entra issuer presents "
                    "(copy the connection's 'Subject identifier', /eid1/c/pub/t/...; sc:// is the Azure DevOps issuer's)")
        if self.issuer == "azure-devops" and self.subjects:
            raise ValueError("subjects: the Azure DevOps issuer's subjects are sc://<organization>/<project>/<connection>, made "
                             "from the names; leave subjects out")
        return self

    def issuer_url(self, tenant_id: str) -> str:
        """OIDC issuer URL of this organization's connections (``tenant_id``: the stack's Entra tenant)."""
        if self.issuer == "entra":
            return ENTRA_ISSUER.format(tenant_id=tenant_id)
        return AZURE_DEVOPS_ISSUER.format(organization_id=self.organization_id)

    def subject(self, purpose: str) -> str | None:
        """OIDC subject of ``purpose``'s service connection, or None when it has none (yet)."""
        connection = self.service_connections.get(purpose)
        if not connection:
            return None
        if self.issuer == "entra":
            return self.subjects.get(purpose)
        return f"sc://{self.organization}/{self.project}/{connection}"


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")


class _Common(_Strict):
    environment: Literal["dev", "prod"]
    log_retention_days: int = Field(default=30, ge=7, le=730)
    #: Days the endpoints' captured requests (callers' images) are kept; then the storage deletes them
    #: (S3 lifecycle rule on ``captures/`` of the runs bucket; Azure management policy on ``captures``).
    capture_retention_days: int = Field(default=30, ge=1, le=3650)
    github: GitHubSettings
    tags: dict[str, str] = Field(default_factory=dict)
    #: Monthly cost budget of the stack (account/billing currency); alerts at 50/80/100 % actual, 100 % forecast.
    budget_monthly_amount: float = Field(default=500.0, gt=0, le=1_000_000)
    budget_alert_emails: tuple[str, ...] = Field(min_length=1)

    @field_validator("budget_alert_emails")
    @classmethod
    def _emails(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for address in value:
            if not _EMAIL.fullmatch(address):
                raise ValueError(f"{address!r} is not an e-mail address")
        return value


class AzurePromotionSource(_Strict):
    """The dev workspace a prod stack promotes from (``detops promote --source-uri``, same Entra tenant):
    exported as ``DETOPS_PROMOTE_SOURCE_URI`` = :meth:`uri`. The dev stack grants this stack's deployer
    read access (its setting ``promotion_reader_principal_id``)."""

    subscription_id: str
    resource_group: str = Field(pattern=r"^[-\w._()]{1,90}$")
    workspace: str = Field(pattern=r"^[A-Za-z0-9][\w-]{2,32}$")

    @field_validator("subscription_id")
    @classmethod
    def _subscription(cls, value: str) -> str:
        return _lower_guid(value, "the dev subscription's GUID")

    def uri(self) -> str:
        """``azureml://subscriptions/<sub>/resourceGroups/<rg>/workspaces/<ws>`` (deployment.registry.azureml)."""
        return f"azureml://subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}/workspaces/{self.workspace}"


class AzureSettings(_Common):
    """Settings of the Azure program (``infra/azure``), namespace ``detops-azure``.

    ``name_prefix`` (2-10 lowercase letters/digits, starting with a letter) begins every resource name;
    it is short because storage accounts allow 24 lowercase alphanumerics and Pulumi appends a random
    suffix. VM sizes are Azure SKU names (``Standard_NC4as_T4_v3``); GPU sizes must be N-series.
    Node counts are per cluster/pool; ``gpu_idle_seconds`` is the idle time before a node is released
    (ISO 8601 ``PT<n>S`` in the API).
    """

    name_prefix: str = Field(pattern=r"^[a-z][a-z0-9]{1,9}$")
    region: str
    #: The only subscription this stack may touch: a wrong ``az login`` fails instead of deploying elsewhere.
    subscription_id: str
    #: An existing resource group (made by infra/bootstrap, where the infra deployer is scoped); None: create one.
    resource_group_name: str | None = Field(default=None, pattern=r"^[-\w._()]{1,90}$")
    gpu_vm_size: str = "Standard_NC4as_T4_v3"
    gpu_min_nodes: int = Field(default=0, ge=0, le=100)
    gpu_max_nodes: int = Field(default=2, ge=1, le=100)
    gpu_low_priority: bool = True
    gpu_idle_seconds: int = Field(default=900, ge=60, le=86_400)
    gpu_node_public_ip: bool = False
    cpu_vm_size: str = "Standard_D4s_v5"
    cpu_max_nodes: int = Field(default=2, ge=1, le=100)
    #: Serving: Azure ML managed online endpoints (default, no cluster to run). AKS is an option:
    #: attached Kubernetes compute with the Azure ML extension, configured as the extension supports.
    aks_enabled: bool = False
    #: TLS of the extension's inference router: the DNS name clients call and the Kubernetes secret
    #: (cert.pem, key.pem in namespace azureml) synced from Key Vault; required when aks_enabled.
    aks_ssl_cname: str | None = Field(default=None, pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$")
    aks_ssl_secret: str = Field(default="azureml-tls", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    aks_inference_router_ha: bool = True
    aks_system_min_nodes: int = Field(default=3, ge=1, le=100)
    aks_kubernetes_version: str | None = Field(default=None, pattern=r"^\d+\.\d+(\.\d+)?$")
    aks_system_vm_size: str = "Standard_D4s_v5"
    aks_cpu_vm_size: str = "Standard_D4s_v5"
    aks_cpu_max_nodes: int = Field(default=3, ge=1, le=100)
    aks_gpu_vm_size: str = "Standard_NC4as_T4_v3"
    aks_gpu_max_nodes: int = Field(default=1, ge=1, le=100)
    acr_sku: Literal["Basic", "Standard", "Premium"] = "Standard"
    #: Private endpoints for storage (blob, file), Key Vault, ACR and the workspace; public network access
    #: off. Required in prod; dev may keep public access for laptops (stated in docs/infra.md).
    private_endpoints: bool = False
    vnet_address_space: str = Field(default="10.42.0.0/16", pattern=r"^\d{1,3}(\.\d{1,3}){3}/\d{1,2}$")
    azure_devops: AzureDevOpsSettings | None = None
    #: Promotion across stacks (docs/contracts.md, "From dev to prod"). Dev stack: the principal (object)
    #: id of the prod stack's deployer identity (its output ``deployer_principal_id``), granted Reader on
    #: this workspace and Storage Blob Data Reader on the runs container. Prod stack: the dev workspace.
    promotion_reader_principal_id: str | None = None
    promotion_source: AzurePromotionSource | None = None

    @field_validator("region")
    @classmethod
    def _azure_region(cls, value: str) -> str:
        if value not in AZURE_REGIONS:
            close = near_match(value, sorted(AZURE_REGIONS))
            hint = f"; did you mean {close!r}?" if close else ""
            raise ValueError(f"unknown Azure region {value!r}{hint}")
        return value

    @field_validator("gpu_vm_size", "aks_gpu_vm_size")
    @classmethod
    def _gpu_size(cls, value: str) -> str:
        if not re.fullmatch(r"Standard_N[CDV]\w+", value):
            raise ValueError(f"{value!r} is not a GPU (N-series) VM size, e.g. 'Standard_NC4as_T4_v3'")
        return value

    @field_validator("cpu_vm_size", "aks_system_vm_size", "aks_cpu_vm_size")
    @classmethod
    def _vm_size(cls, value: str) -> str:
        if not re.fullmatch(r"Standard_[A-Z]\w+", value):
            raise ValueError(f"{value!r} is not an Azure VM size such as 'Standard_D4s_v5'")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> AzureSettings:
        if self.gpu_min_nodes > self.gpu_max_nodes:
            raise ValueError(
                f"gpu_min_nodes ({self.gpu_min_nodes}) is above gpu_max_nodes ({self.gpu_max_nodes})"
            )
        if self.private_endpoints and self.acr_sku != "Premium":
            raise ValueError("acr_sku must be 'Premium' when private_endpoints is true (ACR private link)")
        if self.environment == "prod" and not self.private_endpoints:
            raise ValueError("prod needs private_endpoints: true (public network access off)")
        if self.aks_enabled and not self.aks_ssl_cname:
            raise ValueError(
                "aks_enabled needs aks_ssl_cname: the Azure ML extension serves HTTPS only "
                "(allowInsecureConnections=False) and then requires sslCname and a certificate"
            )
        if self.aks_enabled and self.aks_inference_router_ha and self.aks_system_min_nodes < 3:
            raise ValueError(
                f"aks_inference_router_ha needs at least 3 system nodes (aks_system_min_nodes is {self.aks_system_min_nodes})"
            )
        return self

    @field_validator("subscription_id")
    @classmethod
    def _subscription(cls, value: str) -> str:
        return _lower_guid(value, "the subscription's GUID (az account show --query id)")

    @field_validator("promotion_reader_principal_id")
    @classmethod
    def _principal(cls, value: str | None) -> str | None:
        return _lower_guid(value, "the principal (object) id GUID of the prod deployer identity")


class AwsPromotionSource(_Strict):
    """The dev stack a prod stack promotes from (``detops promote``): its account, runs bucket, project KMS
    key and model package group (dev stack outputs ``account_id``, ``s3_runs_bucket``, ``kms_key_arn``,
    ``model_package_group_name``); ``region`` defaults to this stack's. The dev stack shares them with this
    stack's deployer role (its setting ``promotion_reader_role_arn``)."""

    account_id: str = Field(pattern=r"^\d{12}$")
    runs_bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    kms_key_arn: str = Field(pattern=r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]+$")
    model_package_group_name: str = Field(pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
    region: str | None = None

    @model_validator(mode="after")
    def _same_account(self) -> AwsPromotionSource:
        if f":{self.account_id}:" not in self.kms_key_arn:
            raise ValueError(f"kms_key_arn {self.kms_key_arn!r} is not in account {self.account_id}")
        return self


class AwsSettings(_Common):
    """Settings of the AWS program (``infra/aws``), namespace ``detops-aws``.

    ``name_prefix`` (2-20 lowercase letters, digits, '-') begins every resource name. Instance types are
    SageMaker ML instance types; the training type must be a GPU family (``ml.g4dn``, ``ml.g5``,
    ``ml.g6``, ``ml.p3``, ``ml.p4d``, ``ml.p5``...). ``max_training_instances`` caps a training job's
    instance count (exported for ``detops``). ``manage_training_log_group``: SageMaker logs every training
    job of an account and region to the one log group ``/aws/sagemaker/TrainingJobs``; only one stack per
    account and region may own it (the others set this to false). ``github_oidc_provider_arn``: the account's GitHub
    OIDC provider (an account holds one per issuer URL), which infra/bootstrap creates; when empty the
    program looks it up at its usual ARN (``arn:<partition>:iam::<account_id>:oidc-provider/token.actions.githubusercontent.com``).
    """

    name_prefix: str = Field(pattern=r"^[a-z][a-z0-9-]{1,19}[a-z0-9]$")
    region: str
    #: The only account this stack may touch (the provider's ``allowedAccountIds``).
    account_id: str = Field(pattern=r"^\d{12}$")
    training_instance_type: str = "ml.g4dn.xlarge"
    serving_instance_type: str = "ml.m5.large"
    max_training_instances: int = Field(default=1, ge=1, le=20)
    ecr_keep_images: int = Field(default=30, ge=1, le=1000)
    kms_deletion_window_days: int = Field(default=30, ge=7, le=30)
    manage_training_log_group: bool = True
    #: CloudWatch alarms per endpoint: invocation 5XX errors per 5 minutes, and p90 ModelLatency (ms).
    alarm_5xx_errors: int = Field(default=1, ge=1)
    alarm_latency_p90_ms: int = Field(default=1000, ge=1)
    #: Release stages; each gets an endpoint name ``<name_prefix>-<stage>`` (training.naming.endpoint_name).
    endpoint_stages: tuple[str, ...] = Field(default=("staging",), min_length=1)
    github_oidc_provider_arn: str | None = Field(
        default=None, pattern=r"^arn:aws[a-z-]*:iam::\d{12}:oidc-provider/token\.actions\.githubusercontent\.com$"
    )
    #: Promotion across stacks (docs/contracts.md, "From dev to prod"). Dev stack: the IAM role ARN of the
    #: prod stack's deployer (its output ``deployer_role_arn``), which may then read the runs bucket (bucket
    #: and key policy) and the model package group (its resource policy). Prod stack: the dev stack.
    promotion_reader_role_arn: str | None = Field(default=None, pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
    promotion_source: AwsPromotionSource | None = None

    @field_validator("region")
    @classmethod
    def _aws_region(cls, value: str) -> str:
        if not _AWS_REGION.fullmatch(value):
            raise ValueError(f"{value!r} is not an AWS region name such as 'eu-west-1'")
        return value

    @field_validator("training_instance_type")
    @classmethod
    def _gpu_instance(cls, value: str) -> str:
        if not re.fullmatch(r"ml\.(g4dn|g5|g6|g6e|p3|p3dn|p4d|p4de|p5|p5e)\.\w+", value):
            raise ValueError(f"{value!r} is not a SageMaker GPU instance type such as 'ml.g4dn.xlarge'")
        return value

    @field_validator("serving_instance_type")
    @classmethod
    def _ml_instance(cls, value: str) -> str:
        if not re.fullmatch(r"ml\.[a-z0-9]+\.\w+", value):
            raise ValueError(f"{value!r} is not a SageMaker instance type such as 'ml.m5.large'")
        return value


class BootstrapSettings(_Strict):
    """Settings of ``infra/bootstrap`` (namespace ``detops-bootstrap``), one stack per environment.

    ``cloud``: which backend to make. ``stack_name_prefixes``: the ``name_prefix`` of the application
    stacks this bootstrap serves (the infra deployer may manage their resource group / IAM roles only).
    ``github.environments``: only ``infra_reader`` and ``infra_deployer`` are used here.
    ``azure_devops`` (Azure): the service connections of ``infra_reader`` / ``infra_deployer``
    (:class:`AzureDevOpsSettings`), federated to the infra identities as well.
    """

    cloud: Literal["aws", "azure"]
    environment: Literal["dev", "prod"]
    name_prefix: str = Field(pattern=r"^[a-z][a-z0-9]{1,9}$")
    region: str
    account_id: str | None = Field(default=None, pattern=r"^\d{12}$")
    subscription_id: str | None = None
    stack_name_prefixes: tuple[str, ...] = Field(min_length=1)
    github: GitHubSettings
    github_oidc_provider_arn: str | None = None
    azure_devops: AzureDevOpsSettings | None = None
    tags: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _target(self) -> BootstrapSettings:
        if self.cloud == "aws" and not self.account_id:
            raise ValueError("cloud aws needs account_id (the only account this bootstrap may touch)")
        if self.cloud == "azure" and not (self.subscription_id and _GUID.fullmatch(self.subscription_id)):
            raise ValueError("cloud azure needs subscription_id (a GUID)")
        for purpose in ("infra_reader", "infra_deployer"):
            if not self.github.subjects(purpose):
                raise ValueError(f"github.environments.{purpose} must name at least one environment")
        if self.azure_devops is not None and self.cloud != "azure":
            raise ValueError("azure_devops: the bootstrap federates Azure DevOps with the Azure identities only (cloud azure)")
        if self.azure_devops is not None:
            other = sorted(set(self.azure_devops.service_connections) - {"infra_reader", "infra_deployer"})
            if other:
                raise ValueError(f"azure_devops.service_connections: the bootstrap makes infra_reader and infra_deployer only, not {', '.join(other)}")
        return self


def _format_error(problem: Problem, namespace: str) -> str:
    """One line for one problem of a settings ``ValidationError`` (:func:`training.errors.validation_problems`)."""
    key = problem.key or "(settings)"
    msg = problem.msg
    if problem.type == "extra_forbidden":
        hint = f"; did you mean {problem.suggestion!r}?" if problem.suggestion else f"; known: {', '.join(problem.known)}"
        msg = "unknown setting" + hint
    elif problem.type == "missing":
        msg = "required setting is missing"
    elif not isinstance(problem.input, (dict, list)):
        msg = f"{msg} (got {problem.input!r})"
    if not problem.loc:
        return msg
    return f"setting '{namespace}:{key}': {msg}"


def load_settings(model: type[T], values: Mapping[str, Any], *, namespace: str, source: str) -> T:
    """Validate ``values`` (keys without the namespace) as ``model``.

    ``source`` names where they came from (``Pulumi.prod.yaml``) for the error message.
    Raises :class:`training.errors.ConfigError` naming every bad setting, one per line.
    """
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        lines = [f"{source}: {_format_error(p, namespace)}" for p in validation_problems(exc, model)]
        raise ConfigError("\n".join(lines)) from None


def _split_namespace(config: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    prefix = f"{namespace}:"
    return {key[len(prefix):]: value for key, value in config.items() if key.startswith(prefix)}


def read_stack_file(path: str | Path, model: type[T], *, namespace: str) -> T:
    """Read and validate ``Pulumi.<stack>.yaml`` without the Pulumi CLI (tests, docs, ``detops``).

    Only keys in ``namespace`` are settings; provider keys (``aws:region``) are left to Pulumi.
    Raises :class:`ConfigError` when the file is missing, is not YAML, or a setting is invalid.
    """
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: stack settings file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    config = document.get("config") if isinstance(document, dict) else None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: no 'config:' mapping")
    return load_settings(model, _split_namespace(config, namespace), namespace=namespace, source=path.name)


def _decode(value: Any) -> Any:
    """Pulumi hands every config value over as a string; objects and lists arrive as JSON."""
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def settings_from_pulumi_config(model: type[T], *, namespace: str, stack: str) -> T:
    """Read the running stack's settings in ``namespace`` from the Pulumi runtime and validate them.

    Used by each program's ``__main__.py``. Every key of the namespace is read (not only known ones),
    so a misspelt key is reported instead of ignored.
    """
    from pulumi.runtime import config as runtime_config

    raw: dict[str, Any] = {}
    raw.update(runtime_config.get_config_env())
    raw.update(runtime_config.CONFIG.get())
    values = {key: _decode(value) for key, value in _split_namespace(raw, namespace).items()}
    return load_settings(model, values, namespace=namespace, source=f"Pulumi.{stack}.yaml (pulumi config)")


def declare_program(model: type[T], create: Any) -> None:
    """The body of every program's ``__main__.py``: read and validate the stack's settings
    (:func:`settings_from_pulumi_config`, a :class:`ConfigError` becomes ``pulumi.RunError``: one
    clear line instead of a traceback), call ``create(settings)`` to declare the resources, and export
    each ``{name: value}`` it returns as a stack output."""
    import pulumi

    try:
        settings = settings_from_pulumi_config(model, namespace=pulumi.get_project(), stack=pulumi.get_stack())
    except ConfigError as exc:
        raise pulumi.RunError(str(exc)) from None
    for name, value in create(settings).items():
        pulumi.export(name, value)
