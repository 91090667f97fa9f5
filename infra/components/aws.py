"""Reusable AWS ``ComponentResource`` classes (pulumi-aws v7), secure by default.

Policies are built as Python dicts and serialized with ``pulumi.Output.json_dumps`` so the unit tests
and the policy rules read the same JSON that IAM and S3 receive. Every statement names its resources;
``"Resource": "*"`` appears only for actions without resource-level permissions
(``ecr:GetAuthorizationToken``, ``cloudwatch:PutMetricData``, per the AWS Service Authorization Reference).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

GITHUB_OIDC_URL = "https://token.actions.githubusercontent.com"
GITHUB_OIDC_HOST = "token.actions.githubusercontent.com"
STS_AUDIENCE = "sts.amazonaws.com"


def _json(document: Mapping[str, Any]) -> pulumi.Output[str]:
    return pulumi.Output.json_dumps(document)


@dataclass
class ProjectKeyArgs:
    """Customer-managed KMS key (yearly rotation) that S3, ECR and CloudWatch Logs encrypt with.

    ``account_id``/``region``/``partition``: where the key lives; the key policy lets the account's IAM
    policies grant use, and lets CloudWatch Logs use it for log groups of this account and region only.
    """

    account_id: pulumi.Input[str]
    region: str
    partition: pulumi.Input[str]
    deletion_window_days: int = 30
    alias: str = "alias/detops"
    tags: Mapping[str, str] = field(default_factory=dict)
    #: Roles of another account allowed to decrypt through S3 only (the prod role ``detops promote`` runs as).
    s3_decrypt_role_arns: Sequence[str] = ()


class ProjectKey(pulumi.ComponentResource):
    """Attributes ``key`` (:class:`aws.kms.Key`) and ``alias``."""

    def __init__(self, name: str, args: ProjectKeyArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("detops:aws:ProjectKey", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        account, partition = args.account_id, args.partition
        policy = _json(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "AccountIamPolicies",
                        "Effect": "Allow",
                        "Principal": {"AWS": pulumi.Output.concat("arn:", partition, ":iam::", account, ":root")},
                        "Action": "kms:*",
                        "Resource": "*",
                    },
                    {
                        "Sid": "CloudWatchLogs",
                        "Effect": "Allow",
                        "Principal": {"Service": f"logs.{args.region}.amazonaws.com"},
                        "Action": ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
                        "Resource": "*",
                        "Condition": {
                            "ArnLike": {
                                "kms:EncryptionContext:aws:logs:arn": pulumi.Output.concat(
                                    "arn:", partition, ":logs:", args.region, ":", account, ":log-group:*"
                                )
                            }
                        },
                    },
                    {
                        # CloudWatch alarms publish to the project's encrypted SNS topic.
                        "Sid": "CloudWatchAlarmsToSns",
                        "Effect": "Allow",
                        "Principal": {"Service": "cloudwatch.amazonaws.com"},
                        "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                        "Resource": "*",
                        "Condition": {"StringEquals": {"aws:SourceAccount": account}},
                    },
                    *(
                        [{
                            # promotion across stacks: the prod role reads the runs bucket's objects
                            "Sid": "CrossAccountS3Decrypt",
                            "Effect": "Allow",
                            "Principal": {"AWS": list(args.s3_decrypt_role_arns)},
                            "Action": ["kms:Decrypt", "kms:DescribeKey"],
                            "Resource": "*",
                            "Condition": {"StringEquals": {"kms:ViaService": f"s3.{args.region}.amazonaws.com"}},
                        }]
                        if args.s3_decrypt_role_arns
                        else []
                    ),
                ],
            }
        )
        self.key = aws.kms.Key(
            name,
            description="detops: S3, ECR and CloudWatch Logs encryption",
            enable_key_rotation=True,
            deletion_window_in_days=args.deletion_window_days,
            policy=policy,
            tags=dict(args.tags),
            opts=child,
        )
        self.alias = aws.kms.Alias(f"{name}-alias", name=args.alias, target_key_id=self.key.key_id, opts=child)
        self.register_outputs({"key_arn": self.key.arn})


@dataclass
class SecureBucketArgs:
    """S3 bucket: versioning, SSE-KMS with ``kms_key_arn`` (bucket key on), all public access blocked,
    ACLs disabled (bucket owner enforced), a bucket policy denying any request without TLS, expiry of
    non-current versions after ``noncurrent_days``, and of every object under ``expire_prefixes``."""

    bucket_name: pulumi.Input[str]
    kms_key_arn: pulumi.Input[str]
    noncurrent_days: int = 90
    force_destroy: bool = False
    tags: Mapping[str, str] = field(default_factory=dict)
    #: Roles of another account that may list the bucket and read the objects matching ``reader_keys``
    #: (key patterns; promotion across stacks: registry documents and the runs' export folders, not captures).
    reader_role_arns: Sequence[str] = ()
    reader_keys: Sequence[str] = ("*",)
    #: ``{key prefix: days}``: objects under the prefix expire that many days after they were written, and
    #: their old versions one day later (retention of the endpoints' captured requests, ``captures/``).
    expire_prefixes: Mapping[str, int] = field(default_factory=dict)


class SecureBucket(pulumi.ComponentResource):
    """Attributes ``bucket`` and its companions ``versioning``, ``encryption``, ``public_access_block``,
    ``ownership``, ``policy``, ``lifecycle``; each companion names the bucket by ``bucket.bucket``."""

    def __init__(self, name: str, args: SecureBucketArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("detops:aws:SecureBucket", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.bucket = aws.s3.Bucket(
            name, bucket=args.bucket_name, force_destroy=args.force_destroy, tags=dict(args.tags), opts=child
        )
        bucket_id = self.bucket.bucket
        self.ownership = aws.s3.BucketOwnershipControls(
            f"{name}-ownership",
            bucket=bucket_id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            opts=child,
        )
        self.public_access_block = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access-block",
            bucket=bucket_id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        self.versioning = aws.s3.BucketVersioning(
            f"{name}-versioning",
            bucket=bucket_id,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
            opts=child,
        )
        self.encryption = aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            bucket=bucket_id,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                        sse_algorithm="aws:kms", kms_master_key_id=args.kms_key_arn
                    ),
                    bucket_key_enabled=True,
                )
            ],
            opts=child,
        )
        self.policy = aws.s3.BucketPolicy(
            f"{name}-tls-only",
            bucket=bucket_id,
            policy=_json(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "DenyInsecureTransport",
                            "Effect": "Deny",
                            "Principal": "*",
                            "Action": "s3:*",
                            "Resource": [self.bucket.arn, pulumi.Output.concat(self.bucket.arn, "/*")],
                            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                        },
                        *(
                            [
                                {
                                    "Sid": "CrossAccountList",
                                    "Effect": "Allow",
                                    "Principal": {"AWS": list(args.reader_role_arns)},
                                    "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
                                    "Resource": [self.bucket.arn],
                                },
                                {
                                    "Sid": "CrossAccountRead",
                                    "Effect": "Allow",
                                    "Principal": {"AWS": list(args.reader_role_arns)},
                                    "Action": ["s3:GetObject"],
                                    "Resource": [pulumi.Output.concat(self.bucket.arn, "/", key) for key in args.reader_keys],
                                },
                            ]
                            if args.reader_role_arns
                            else []
                        ),
                    ],
                }
            ),
            # S3 refuses a policy while the public access block is being changed.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.public_access_block]),
        )
        self.lifecycle = aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle",
            bucket=bucket_id,
            rules=[
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="expire-noncurrent-versions",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                    noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                        noncurrent_days=args.noncurrent_days
                    ),
                    abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                        days_after_initiation=7
                    ),
                ),
                *(
                    aws.s3.BucketLifecycleConfigurationRuleArgs(
                        id=f"expire-{prefix.strip('/')}",
                        status="Enabled",
                        filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=prefix),
                        expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(days=days),
                        noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                            noncurrent_days=1
                        ),
                    )
                    for prefix, days in args.expire_prefixes.items()
                ),
            ],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.versioning]),
        )
        self.register_outputs({"bucket": self.bucket.bucket})


@dataclass
class EcrRepositoryArgs:
    """ECR repository: scan on push, immutable tags, KMS encryption, and a lifecycle policy keeping the
    newest ``keep_images`` images and expiring untagged ones after ``untagged_days``."""

    repository_name: str
    kms_key_arn: pulumi.Input[str]
    keep_images: int = 30
    untagged_days: int = 7
    tags: Mapping[str, str] = field(default_factory=dict)


class EcrRepository(pulumi.ComponentResource):
    """Attributes ``repository`` and ``lifecycle_policy``."""

    def __init__(self, name: str, args: EcrRepositoryArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("detops:aws:EcrRepository", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.repository = aws.ecr.Repository(
            name,
            name=args.repository_name,
            image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(scan_on_push=True),
            image_tag_mutability="IMMUTABLE",
            encryption_configurations=[
                aws.ecr.RepositoryEncryptionConfigurationArgs(encryption_type="KMS", kms_key=args.kms_key_arn)
            ],
            tags=dict(args.tags),
            opts=child,
        )
        self.lifecycle_policy = aws.ecr.LifecyclePolicy(
            f"{name}-lifecycle",
            repository=self.repository.name,
            policy=_json(
                {
                    "rules": [
                        {
                            "rulePriority": 1,
                            "description": f"expire untagged images after {args.untagged_days} days",
                            "selection": {
                                "tagStatus": "untagged",
                                "countType": "sinceImagePushed",
                                "countUnit": "days",
                                "countNumber": args.untagged_days,
                            },
                            "action": {"type": "expire"},
                        },
                        {
                            "rulePriority": 2,
                            "description": f"keep the newest {args.keep_images} images",
                            "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": args.keep_images},
                            "action": {"type": "expire"},
                        },
                    ]
                }
            ),
            opts=child,
        )
        self.register_outputs({"repository_url": self.repository.repository_url})


@dataclass
class SageMakerRoleArgs:
    """Execution role that SageMaker training jobs and endpoints assume.

    Read: ``read_bucket_arns`` (datasets). Read/write: ``write_bucket_arns`` (runs, models). Pull:
    ``repository_arns``. Write logs: ``log_group_arns``. Use ``kms_key_arn``. The trust policy pins the
    calling account (``aws:SourceAccount``) against the confused-deputy problem.
    """

    account_id: pulumi.Input[str]
    read_bucket_arns: Sequence[pulumi.Input[str]]
    write_bucket_arns: Sequence[pulumi.Input[str]]
    repository_arns: Sequence[pulumi.Input[str]]
    log_group_arns: Sequence[pulumi.Input[str]]
    kms_key_arn: pulumi.Input[str]
    tags: Mapping[str, str] = field(default_factory=dict)


def _objects(arns: Sequence[pulumi.Input[str]]) -> list[pulumi.Output[str]]:
    return [pulumi.Output.concat(arn, "/*") for arn in arns]


class SageMakerRole(pulumi.ComponentResource):
    """Attributes ``role`` and ``policy`` (inline :class:`aws.iam.RolePolicy`)."""

    def __init__(self, name: str, args: SageMakerRoleArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("detops:aws:SageMakerRole", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        trust = _json(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "sagemaker.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                        "Condition": {"StringEquals": {"aws:SourceAccount": args.account_id}},
                    }
                ],
            }
        )
        self.role = aws.iam.Role(
            name, assume_role_policy=trust, description="detops SageMaker execution role", tags=dict(args.tags), opts=child
        )
        all_buckets = [*args.read_bucket_arns, *args.write_bucket_arns]
        document = {
            "Version": "2012-10-17",
            "Statement": [
                {"Sid": "ListBuckets", "Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"], "Resource": all_buckets},
                {"Sid": "ReadObjects", "Effect": "Allow", "Action": ["s3:GetObject"], "Resource": _objects(all_buckets)},
                {
                    "Sid": "WriteObjects",
                    "Effect": "Allow",
                    "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
                    "Resource": _objects(args.write_bucket_arns),
                },
                {
                    "Sid": "UseProjectKey",
                    "Effect": "Allow",
                    "Action": ["kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"],
                    "Resource": [args.kms_key_arn],
                },
                {
                    "Sid": "PullImages",
                    "Effect": "Allow",
                    "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
                    "Resource": list(args.repository_arns),
                },
                {"Sid": "RegistryToken", "Effect": "Allow", "Action": ["ecr:GetAuthorizationToken"], "Resource": "*"},
                {
                    "Sid": "WriteLogs",
                    "Effect": "Allow",
                    "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                    "Resource": [pulumi.Output.concat(arn, ":*") for arn in args.log_group_arns],
                },
                {
                    "Sid": "SageMakerMetrics",
                    "Effect": "Allow",
                    "Action": ["cloudwatch:PutMetricData"],
                    "Resource": "*",
                    "Condition": {"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}},
                },
            ],
        }
        self.policy = aws.iam.RolePolicy(f"{name}-access", role=self.role.id, policy=_json(document), opts=child)
        self.register_outputs({"role_arn": self.role.arn})


@dataclass
class GitHubRoleArgs:
    """A role that GitHub Actions assumes with its OIDC token (no access keys), for ONE purpose.

    ``purpose``: trainer, registrar, approver, deployer, infra-reader, infra-deployer (the role's
    description and tag). ``subjects``: the exact ``sub`` claims allowed (``StringEquals``); a write
    identity's are ``repo:R:environment:E:job_workflow_ref:R/.github/workflows/W@refs/heads/main``
    (:meth:`infra.settings.GitHubSettings.subjects`). ``subject_patterns``: ``StringLike`` patterns, for a
    read-only identity only (the pull-request preview, whose ref has no fixed value). Neither: the role
    trusts no GitHub token (an identity a person uses, which no workflow names). ``provider_arn``: the
    account's GitHub OIDC provider. ``policy``: the role's inline policy document (see
    :mod:`infra.components.aws_policies`). ``managed_policy_arns``: AWS managed policies to attach (the
    infra deployer only).
    """

    purpose: str
    subjects: Sequence[str]
    provider_arn: pulumi.Input[str]
    policy: Mapping[str, Any]
    managed_policy_arns: Sequence[str] = ()
    max_session_seconds: int = 3600
    tags: Mapping[str, str] = field(default_factory=dict)
    subject_patterns: Sequence[str] = ()


def github_trust_policy(
    provider_arn: pulumi.Input[str], subjects: Sequence[str], subject_patterns: Sequence[str] = ()
) -> pulumi.Output[str]:
    """Trust policy: ``sts:AssumeRoleWithWebIdentity`` for the GitHub OIDC audience and exactly ``subjects``
    (``StringEquals``), or the read-only ``subject_patterns`` (``StringLike``; one statement each kind).
    With neither, one statement denying every GitHub token (IAM needs a trust policy; nothing allows)."""
    statements: list[dict[str, Any]] = []
    for operator, values in (("StringEquals", subjects), ("StringLike", subject_patterns)):
        if not values:
            continue
        condition: dict[str, Any] = {"StringEquals": {f"{GITHUB_OIDC_HOST}:aud": STS_AUDIENCE}}
        condition.setdefault(operator, {})[f"{GITHUB_OIDC_HOST}:sub"] = list(values)
        statements.append({
            "Effect": "Allow",
            "Principal": {"Federated": provider_arn},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": condition,
        })
    if not statements:
        statements.append({"Sid": "NoGitHubWorkflow", "Effect": "Deny", "Principal": {"Federated": provider_arn},
                           "Action": "sts:AssumeRoleWithWebIdentity"})
    return _json({"Version": "2012-10-17", "Statement": statements})


def github_oidc_provider(name: str, opts: pulumi.ResourceOptions | None = None) -> aws.iam.OpenIdConnectProvider:
    """The account's GitHub Actions OIDC provider (an account holds one per issuer URL), audience STS only."""
    return aws.iam.OpenIdConnectProvider(name, url=GITHUB_OIDC_URL, client_id_lists=[STS_AUDIENCE], opts=opts)


class GitHubRole(pulumi.ComponentResource):
    """Attributes ``role``, ``policy`` (inline :class:`aws.iam.RolePolicy`) and ``attachments``."""

    def __init__(self, name: str, args: GitHubRoleArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("detops:aws:GitHubRole", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.role = aws.iam.Role(
            name,
            assume_role_policy=github_trust_policy(args.provider_arn, args.subjects, args.subject_patterns),
            description=f"detops {args.purpose} (GitHub Actions OIDC)",
            max_session_duration=args.max_session_seconds,
            tags={**args.tags, "detops:purpose": args.purpose},
            opts=child,
        )
        self.policy = aws.iam.RolePolicy(f"{name}-access", role=self.role.id, policy=_json(args.policy), opts=child)
        self.attachments = [
            aws.iam.RolePolicyAttachment(f"{name}-{arn.rsplit('/', 1)[-1].lower()}", role=self.role.name, policy_arn=arn, opts=child)
            for arn in args.managed_policy_arns
        ]
        self.register_outputs({"role_arn": self.role.arn})
