"""The settings contract: every ``DETOPS_*``, ``AZURE_*``, ``AWS_*`` (and ``MLFLOW_TRACKING_URI``)
variable the CLI, the backends, the registries and the targets read, declared once.

One pydantic-settings class per concern -- :class:`CommonSettings`, :class:`AzureSettings`,
:class:`AwsSettings` here, ``deployment.serving.settings.ServingSettings`` for the scoring service.
Each field names its environment variable (its ``validation_alias``), its type, a description, the
commands that need it (``required_by``: must be set, no default) or read it (``used_by``), and where
its value comes from (``source``: a Pulumi stack output, a CI variable, the user, the platform).
No other module reads these variables from ``os.environ`` (``tests/ci/test_settings_contract.py``
greps the code); docs/settings.md is generated from these classes (``detops settings docs``).

An empty variable counts as unset (CI systems expand an undefined ``${{ vars.X }}`` to ``""``).

The cloud client factories that read these settings live one floor up, in :mod:`training.cloud`
(``training.cloud.azure.ml_client``, ``training.cloud.aws.client``): a missing setting is still
reported one way, by :meth:`Settings.require`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from training.errors import ConfigError

CHECKOUT_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
"""Default datasets root of a source checkout: ``../shared/datasets`` beside the repository."""

#: Where values come from, quoted in the "missing setting" error and in docs/settings.md.
STACK_AZURE = "stack output of infra/azure, same name (`detops settings ci-variables`)"
STACK_AWS = "stack output of infra/aws, same name (`detops settings ci-variables`)"
STACK = "stack output of infra/azure or infra/aws, same name (`detops settings ci-variables`)"
CI = "CI variable set by hand (repository / variable group)"
USER = "you (environment or CI variable)"
PLATFORM = "set by the platform (job container / OIDC login)"

_CONFIG = SettingsConfigDict(extra="ignore", env_ignore_empty=True, populate_by_name=True, case_sensitive=True)


def setting(
    env: str | tuple[str, ...],
    default: Any = None,
    description: str = "",
    *,
    required_by: tuple[str, ...] = (),
    used_by: tuple[str, ...] = (),
    source: str = USER,
    **kw: Any,
) -> Any:
    """A settings field read from ``env`` (or the first set of several names).

    ``required_by`` / ``used_by`` are command patterns: the command path then ``--option value``
    pairs that select it, e.g. ``"submit --backend azureml"``, ``"deploy --target sagemaker"``,
    ``"register --registry azureml"``; ``"*"`` means every command. A setting is required for a
    call matching a ``required_by`` pattern unless the call is a ``--dry-run``.
    """
    names = (env,) if isinstance(env, str) else env
    alias: Any = names[0] if len(names) == 1 else AliasChoices(*names)
    extra = {"env": list(names), "required_by": list(required_by), "used_by": list(used_by), "source": source}
    return Field(default, validation_alias=alias, description=description, json_schema_extra=extra, **kw)


S = TypeVar("S", bound="Settings")


class Settings(BaseSettings):
    """Base of the contract's classes: ``load()``, ``require()`` and per-field metadata."""

    model_config = _CONFIG

    @classmethod
    def load(cls: type[S], env: Mapping[str, str] | None = None) -> S:
        """The settings from the process environment, or from ``env`` (a job's environment).

        Raises:
            ConfigError: a value does not parse (names the variable, the value and what is expected).
        """
        try:
            if env is None:
                return cls()
            values = {}
            for name, field in cls.model_fields.items():
                for var in field_env(field):
                    if env.get(var):
                        values[name] = env[var]
                        break
            return cls.model_validate(values)
        except ValidationError as e:
            problems = []
            for err in e.errors():
                loc = str(err["loc"][0]) if err["loc"] else ""
                field = cls.model_fields.get(loc)
                var = field_env(field)[0] if field else loc
                problems.append(f"{var}={err.get('input')!r}: {err['msg']}")
            raise ConfigError("invalid setting(s): " + "; ".join(problems) + " (see docs/settings.md)") from None

    def require(self, *fields: str, what: str = "") -> None:
        """Raise one :class:`ConfigError` naming every unset field of ``fields`` and where each comes from."""
        missing = [(type(self), f) for f in fields if getattr(self, f) in (None, "")]
        if missing:
            raise missing_settings(missing, what)


def field_env(field: Any) -> list[str]:
    """The environment names of a settings field (first one is the canonical name)."""
    return list((field.json_schema_extra or {}).get("env") or [])


def missing_settings(fields: list[tuple[type[BaseSettings], str]], what: str = "") -> ConfigError:
    """The one "missing setting" error: each variable, what it is and where its value comes from.

    ``fields`` are ``(settings class, field name)`` pairs, e.g. ``[(AzureSettings, "workspace")]``.
    """
    parts = []
    for cls, f in fields:
        field = cls.model_fields[f]
        extra = field.json_schema_extra or {}
        parts.append(f"{field_env(field)[0]} ({field.description.rstrip('.')}; from: {extra.get('source')})")  # type: ignore[union-attr]
    need = f" to {what}" if what else ""
    return ConfigError(f"set {', '.join(parts)}{need}; see docs/settings.md")


# -- common ---------------------------------------------------------------------------------------


class CommonSettings(Settings):
    """Settings of every backend: local state, datasets, registry choice, gate, images."""

    home: Path | None = setting("DETOPS_HOME", None, "Local state folder (MLflow SQLite store, caches); default ~/.detops.",
                                used_by=("*",))
    datasets: str | None = setting("DETOPS_DATASETS", None, "Root of the labelled datasets; run configs say ${DETOPS_DATASETS}/...",
                                   used_by=("prepare", "run", "submit"), source=STACK)
    datastore: str | None = setting("DETOPS_DATASTORE", None, "Run root (local folder, az://container/..., s3://bucket/...); configs say ${DETOPS_DATASTORE:-runs}.",
                                    used_by=("prepare", "run", "submit"), source=STACK)
    code_version: str | None = setting("DETOPS_CODE_VERSION", None, "Code version recorded in run.json (default: git HEAD).",
                                       used_by=("prepare", "run", "submit"), source=PLATFORM)
    debug: bool = setting("DETOPS_DEBUG", False, "Show tracebacks on errors (same as --debug).", used_by=("*",))
    registry: str = setting(
        "DETOPS_REGISTRY", "mlflow", "Model registry kind when --registry is not given: mlflow (local SQLite or "
        "MLFLOW_TRACKING_URI), azureml (the workspace's model assets), sagemaker (Model Registry).",
        used_by=("gate", "register", "approve", "reject", "models", "serve", "deploy", "rollback"), source=CI)
    gate_margin: float = setting("DETOPS_GATE_MARGIN", 0.01, "Quality gate: allowed test AP drop vs. the Approved version.",
                                 used_by=("gate", "register"), ge=0)
    reviewer: str | None = setting(
        "DETOPS_REVIEWER", None, "CI: the person who approved the job's environment gate (GitHub: the run's "
        "approvals API via `detops reviewer`); recorded in the audit beside the CI principal.",
        used_by=("register",), source=CI)
    allow_self_approval: bool = setting("DETOPS_ALLOW_SELF_APPROVAL", False,
                                        "Let the registrant approve their own version (four-eyes off; never in CI).",
                                        used_by=("approve",))
    training_image: str | None = setting(
        "DETOPS_TRAINING_IMAGE", None, "Training image by digest (<registry>/detops-training@sha256:...).",
        required_by=("submit --backend azureml", "submit --backend sagemaker"), source="images workflow (digest) / " + CI)
    serving_image: str | None = setting(
        "DETOPS_SERVING_IMAGE", None, "Serving image by digest (<registry>/detops-serving@sha256:...).",
        required_by=("register --registry sagemaker", "deploy --target azureml"), source="images workflow (digest) / " + CI)
    training_repository: str | None = setting(
        "DETOPS_TRAINING_REPOSITORY", None, "Repository the images workflow pushes the training images to (ACR or ECR).",
        used_by=("images workflow",), source=STACK)
    serving_repository: str | None = setting(
        "DETOPS_SERVING_REPOSITORY", None, "Repository the images workflow pushes the serving image to (ACR or ECR).",
        used_by=("images workflow",), source=STACK)
    promote_source_uri: str | None = setting(
        "DETOPS_PROMOTE_SOURCE_URI", None, "Release: the dev registry production promotes from (separate dev/prod stacks): "
        "mlflow: its tracking URI; sagemaker: the dev stack's DETOPS_SM_REGISTRY_URI (s3://...); azureml: the dev "
        "workspace, azureml://subscriptions/<sub>/resourceGroups/<rg>/workspaces/<ws>. The prod stack exports it when "
        "its promotion_source is set. Unset: one stack, no promotion.", used_by=("promote",), source=CI)
    promote_source_name: str | None = setting(
        "DETOPS_PROMOTE_SOURCE_NAME", None, "Release: the model's name in the dev registry when it differs from "
        "DETOPS_MODEL_NAME (a SageMaker model package group is <dev prefix>-detector); the prod stack exports it "
        "when its promotion_source is set.", used_by=("promote",), source=CI)
    promote_source_account: str | None = setting(
        "DETOPS_PROMOTE_SOURCE_ACCOUNT", None, "Release, sagemaker: the dev AWS account owning the model package "
        "group (read by ARN under its resource policy); unset: this account. The prod stack exports it when its "
        "promotion_source is set.", used_by=("promote",), source=CI)
    promote_artifact_root: str | None = setting(
        "DETOPS_PROMOTE_ARTIFACT_ROOT", None, "Release: prod storage root for the promoted copy of the artifact.",
        used_by=("promote",), source=STACK)
    local_port: int = setting("DETOPS_LOCAL_PORT", 8080, "Port of the local deploy target.", used_by=("deploy --target local",))
    mlflow_tracking_uri: str | None = setting(
        "MLFLOW_TRACKING_URI", None, "MLflow tracking/registry server (default sqlite under DETOPS_HOME; set by Azure ML inside jobs).",
        used_by=("register", "approve", "models", "deploy", "evaluate", "run"), source=USER)
    backend: Literal["local", "azureml", "sagemaker"] | None = setting(
        "DETOPS_BACKEND", None, "CI only: the backend the workflows submit to (azureml or sagemaker).",
        used_by=("workflows",), source=CI)
    dataset_sha256: str | None = setting(
        "DETOPS_DATASET_SHA256", None, "Pinned sha256 of the dataset (overrides the run config's data.sha256).",
        used_by=("prepare", "run", "submit"), source=USER)

    run_id: str | None = setting(
        "DETOPS_RUN_ID", None, "Inside a cloud job: the run id the submitter minted (the run folder keeps it).",
        used_by=("run", "prepare"), source=PLATFORM)
    run_url: str | None = setting(
        "DETOPS_RUN_URL", None, "Inside a cloud job: the datastore URL of the run folder (azureml://, s3://, az://).",
        used_by=("run", "prepare"), source=PLATFORM)

    identity: str = setting(
        "DETOPS_IDENTITY", "auto", "Who acts in register/approve/reject: auto (from the registry kind), aws (STS caller), azure (token oid), os, "
        "or declared (--by; local only). The sagemaker and azureml registries accept only their cloud's principal "
        "(declared and os are refused there).", used_by=("register", "approve", "reject", "promote"))
    model_sha256: str | None = setting(
        "DETOPS_MODEL_SHA256", None, "Digest of the approved export (set by deploy on the serving container); the "
        "model loader refuses a model folder that does not match it.", used_by=("serve",), source=PLATFORM)
    approvals_uri: str | None = setting(
        "DETOPS_APPROVALS_URI", None, "Where approval records live, one immutable document per decision "
        "(deployment/registry/records.py): az://<approvals container>@<account>.blob.core.windows.net on Azure "
        "(only the approver identity may write it), or a folder/bucket only approvers may write beside a shared "
        "MLflow server. Unset: a local MLflow registry keeps them beside its database; azureml and remote MLflow "
        "registries then refuse approve/reject.",
        used_by=("approve", "reject", "deploy", "promote", "models", "gate", "register"), source=STACK_AZURE)

    def detops_home(self) -> Path:
        """``DETOPS_HOME`` (expanded) or ``~/.detops``; not created here."""
        return (self.home or Path.home() / ".detops").expanduser()

    def datasets_root(self) -> Path:
        """``DETOPS_DATASETS`` (expanded), else ``shared/datasets`` beside a source checkout: the layout
        scripts/demo.sh and .ci/run assume, used by the tests and benchmarks. Not checked to exist here."""
        return Path(self.datasets).expanduser() if self.datasets else CHECKOUT_DATASETS


# -- Azure ----------------------------------------------------------------------------------------

_AML = ("submit --backend azureml", "wait --backend azureml", "cancel --backend azureml", "register --registry azureml", "gate --registry azureml", "approve --registry azureml",
        "reject --registry azureml", "models --registry azureml", "deploy --target azureml", "rollback --target azureml")


def azure_storage_sign_in_given(env: Mapping[str, str] | None = None) -> bool:
    """Whether the environment already says how to reach Azure Storage (``AZURE_STORAGE_CONNECTION_STRING``,
    read by adlfs / azure-storage-blob themselves, or ``AZURE_STORAGE_ACCOUNT_NAME``)."""
    import os

    env = os.environ if env is None else env
    return bool(env.get("AZURE_STORAGE_CONNECTION_STRING") or env.get("AZURE_STORAGE_ACCOUNT_NAME"))


class AzureSettings(Settings):
    """The Azure ML workspace, its datastore and compute, the online endpoint."""

    subscription_id: str | None = setting("AZURE_SUBSCRIPTION_ID", None, "Subscription of the Azure ML workspace.",
                                          required_by=_AML, source=STACK_AZURE)
    resource_group: str | None = setting("AZURE_RESOURCE_GROUP", None, "Resource group of the Azure ML workspace.",
                                         required_by=_AML, source=STACK_AZURE)
    workspace: str | None = setting("AZUREML_WORKSPACE", None, "Azure ML workspace name.", required_by=_AML, source=STACK_AZURE)
    tenant_id: str | None = setting("AZURE_TENANT_ID", None, "Entra tenant (read by azure-identity for OIDC / workload identity).",
                                    used_by=("submit --backend azureml",), source=STACK_AZURE)
    client_id: str | None = setting("AZURE_CLIENT_ID", None, "Client id of the job's identity (per CI environment; read by azure-identity).",
                                    used_by=("submit --backend azureml",), source=STACK_AZURE)
    compute: str = setting("DETOPS_AML_COMPUTE", "gpu-cluster", "Compute cluster of the training steps.",
                           used_by=("submit --backend azureml",), source=STACK_AZURE)
    datastore: str = setting("DETOPS_AML_DATASTORE", "workspaceblobstore", "Datastore holding datasets and runs.",
                             used_by=("submit --backend azureml",), source=STACK_AZURE)
    datasets_path: str = setting("DETOPS_AML_DATASETS_PATH", "datasets", "Datasets folder inside that datastore.",
                                 used_by=("submit --backend azureml",))
    storage_account_name: str | None = setting(
        "AZURE_STORAGE_ACCOUNT_NAME", None, "Storage account behind the datastore (resolves azureml://datastores/... run URLs "
        "without asking the workspace; also read by adlfs).", used_by=("evaluate", "gate", "register", "deploy"), source=STACK_AZURE)
    datastore_container: str | None = setting(
        "DETOPS_AML_DATASTORE_CONTAINER", None, "Blob container of the datastore (with AZURE_STORAGE_ACCOUNT_NAME: resolves "
        "azureml:// run URLs offline).", used_by=("evaluate", "gate", "register", "deploy"), source=STACK_AZURE)
    deploy_compute: str = setting("DETOPS_AML_DEPLOY_COMPUTE", "managed",
                                  "'managed' (managed online endpoint) or the name of attached AKS compute.",
                                  used_by=("deploy --target azureml",), source=STACK_AZURE)
    endpoint: str | None = setting("DETOPS_AML_ENDPOINT", None, "Online endpoint name (default 'detops').",
                                   used_by=("deploy --target azureml", "rollback --target azureml"), source=STACK_AZURE)
    endpoint_identity: str | None = setting(
        "DETOPS_AML_ENDPOINT_IDENTITY", None, "Resource id of the user-assigned managed identity the online endpoint runs as "
        "(pulls the model and the image: the stack gives it read on the model's files and AcrPull).",
        used_by=("deploy --target azureml",), source=STACK_AZURE)
    instance_type: str | None = setting("DETOPS_AML_INSTANCE_TYPE", None,
                                        "Serving instance type (default Standard_DS3_v2 managed, defaultinstancetype on AKS).",
                                        used_by=("deploy --target azureml",))
    instance_count: int = setting("DETOPS_AML_INSTANCE_COUNT", 1, "Serving instances.", used_by=("deploy --target azureml",), ge=1)

    def workspace_ids(self, what: str = "reach the Azure ML workspace") -> tuple[str, str, str]:
        """``(subscription, resource group, workspace)``; one error naming every unset one."""
        self.require("subscription_id", "resource_group", "workspace", what=what)
        return str(self.subscription_id), str(self.resource_group), str(self.workspace)


# -- AWS ------------------------------------------------------------------------------------------

_SM = ("submit --backend sagemaker", "register --registry sagemaker", "gate --registry sagemaker",
       "approve --registry sagemaker", "reject --registry sagemaker", "models --registry sagemaker",
       "deploy --target sagemaker", "rollback --target sagemaker", "wait --backend sagemaker", "cancel --backend sagemaker")


class AwsSettings(Settings):
    """Region, SageMaker roles and resources, the SageMaker container's paths."""

    region: str | None = setting(("AWS_REGION", "AWS_DEFAULT_REGION"), None, "AWS region of the stack.",
                                 required_by=_SM, source=STACK_AWS)
    endpoint_url: str | None = setting("AWS_ENDPOINT_URL", None, "Endpoint override of every AWS client (a moto server in tests).",
                                       used_by=_SM)
    role_arn: str | None = setting("AWS_ROLE_ARN", None, "CI role assumed by OIDC login (per CI environment).",
                                   used_by=("workflows",), source=STACK_AWS)
    sm_role_arn: str | None = setting("DETOPS_SM_ROLE_ARN", None, "SageMaker execution role of training jobs and endpoints.",
                                      required_by=("submit --backend sagemaker", "deploy --target sagemaker"), source=STACK_AWS)
    sm_instance_type: str = setting("DETOPS_SM_INSTANCE_TYPE", "ml.g5.xlarge", "Training instance type.",
                                    used_by=("submit --backend sagemaker",), source=STACK_AWS)
    sm_spot: bool = setting("DETOPS_SM_SPOT", True, "Managed spot training (true/false).", used_by=("submit --backend sagemaker",))
    sm_max_run: int = setting("DETOPS_SM_MAX_RUN", 86400, "Max training seconds.", used_by=("submit --backend sagemaker",), gt=0)
    sm_kms_key_id: str | None = setting("DETOPS_SM_KMS_KEY_ID", None, "KMS key for job output, volumes and endpoints.",
                                        used_by=("submit --backend sagemaker", "deploy --target sagemaker"), source=STACK_AWS)
    sm_registry_uri: str | None = setting("DETOPS_SM_REGISTRY_URI", None, "s3://bucket/prefix for model version metadata documents.",
                                          required_by=_SM[1:6] + ("deploy --registry sagemaker", "rollback --registry sagemaker"), source=STACK_AWS)
    sm_instance_type_serving: str = setting("DETOPS_SM_INSTANCE_TYPE_SERVING", "ml.m5.large", "Endpoint instance type.",
                                            used_by=("deploy --target sagemaker",), source=STACK_AWS)
    sm_capture_uri: str | None = setting("DETOPS_SM_CAPTURE_URI", None, "s3:// prefix of endpoint data capture.",
                                         required_by=("deploy --target sagemaker",), source=STACK_AWS)
    sm_name_prefix: str = setting("DETOPS_SM_NAME_PREFIX", "detops", "Prefix of every SageMaker name detops creates (the CI roles allow <prefix>-* only; training/naming.py).",
                                  used_by=("submit --backend sagemaker", "deploy --target sagemaker"), source=STACK_AWS)
    sm_endpoint: str | None = setting("DETOPS_SM_ENDPOINT", None, "Endpoint name (default 'detops').",
                                      used_by=("deploy --target sagemaker", "rollback --target sagemaker"), source=STACK_AWS)
    sm_root: str = setting("DETOPS_SM_ROOT", "/opt/ml", "SageMaker container root (moved in tests).",
                           used_by=("sagemaker-container",), source=PLATFORM)
    sm_checkpoint_dir: str | None = setting("DETOPS_SM_CHECKPOINT_DIR", None, "Local checkpoint folder SageMaker syncs (default <root>/checkpoints).",
                                            used_by=("sagemaker-container",), source=PLATFORM)
    worker_port: int = setting("DETOPS_WORKER_PORT", 2222, "tf.distribute worker port on SageMaker hosts.",
                               used_by=("sagemaker-container",), source=PLATFORM, ge=1, le=65535)


# -- CI setup -------------------------------------------------------------------------------------


class AzureDevOpsSettings(Settings):
    """The Azure DevOps organization, project and token of ``detops ci setup azure-devops``.

    Inside a pipeline Azure Pipelines sets ``SYSTEM_COLLECTIONURI`` (``https://dev.azure.com/<org>/``),
    ``SYSTEM_TEAMPROJECT`` and, when mapped into a step, ``SYSTEM_ACCESSTOKEN``; on a laptop set
    ``AZURE_DEVOPS_ORG`` / ``AZURE_DEVOPS_PROJECT`` and ``AZURE_DEVOPS_EXT_PAT`` (the names the Azure DevOps CLI
    extension reads). Tokens come from the environment only, never from a file.
    """

    organization: str | None = setting(("AZURE_DEVOPS_ORG", "SYSTEM_COLLECTIONURI"), None,
                                       "Azure DevOps organization: its name or its URL (https://dev.azure.com/<org>/).",
                                       used_by=("ci",))
    project: str | None = setting(("AZURE_DEVOPS_PROJECT", "SYSTEM_TEAMPROJECT"), None, "Azure DevOps project name.",
                                  used_by=("ci",))
    pat: SecretStr | None = setting("AZURE_DEVOPS_EXT_PAT", None, "Personal access token (scopes: service connections, "
                                    "environment, variable groups, build: read & manage).", used_by=("ci",))
    access_token: SecretStr | None = setting("SYSTEM_ACCESSTOKEN", None, "A pipeline's job access token (instead of a PAT).",
                                             used_by=("ci",), source=PLATFORM)


#: The contract's classes in docs order (the serving class is added by :mod:`detops.settings_contract`).
CLASSES: tuple[type[Settings], ...] = (CommonSettings, AzureSettings, AwsSettings)
