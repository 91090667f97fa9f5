"""One detops environment on AWS: ``create_stack(settings)`` declares every resource.

Resources: a project KMS key; S3 buckets for data and runs (artifacts); ECR repositories for the
training and serving images; CloudWatch log groups; the SageMaker execution role; a SageMaker model
package group (the model registry); the GitHub OIDC provider and the CI role.

The returned outputs are the stack outputs (``pulumi stack output --json``) that ``detops`` reads to
configure its AWS backends; docs/infra.md lists them.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_aws as aws

from infra.components.aws import (
    EcrRepository,
    EcrRepositoryArgs,
    GitHubCiRole,
    GitHubCiRoleArgs,
    ProjectKey,
    ProjectKeyArgs,
    SageMakerRole,
    SageMakerRoleArgs,
    SecureBucket,
    SecureBucketArgs,
)
from infra.settings import AwsSettings

PROJECT = "detops-aws"
TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"


def create_stack(settings: AwsSettings) -> dict[str, Any]:
    """Declare the environment described by ``settings``; return the stack outputs by name.

    All resources use one explicit provider for ``settings.region`` (so the stack never depends on
    ambient ``AWS_REGION``) with the project tags as default tags.
    """
    p = settings.name_prefix
    tags = {"project": "detops", "environment": settings.environment, "managed-by": "pulumi", **settings.tags}
    provider = aws.Provider(
        f"{p}-aws", region=settings.region, default_tags=aws.ProviderDefaultTagsArgs(tags=tags)
    )
    opts = pulumi.ResourceOptions(provider=provider)
    invoke = pulumi.InvokeOptions(provider=provider)
    account_id = aws.get_caller_identity_output(opts=invoke).account_id
    partition = aws.get_partition_output(opts=invoke).partition

    key = ProjectKey(
        f"{p}-key",
        ProjectKeyArgs(
            account_id=account_id,
            region=settings.region,
            partition=partition,
            deletion_window_days=settings.kms_deletion_window_days,
            alias=f"alias/{p}",
        ),
        opts,
    )
    key_arn = key.key.arn

    def bucket_name(purpose: str) -> pulumi.Output[str]:
        # S3 names are global: prefix-account-region-purpose (at most 63 characters).
        return pulumi.Output.concat(p, "-", account_id, "-", settings.region, "-", purpose)

    data = SecureBucket(f"{p}-data", SecureBucketArgs(bucket_name=bucket_name("data"), kms_key_arn=key_arn), opts)
    runs = SecureBucket(f"{p}-runs", SecureBucketArgs(bucket_name=bucket_name("runs"), kms_key_arn=key_arn), opts)

    training_repo = EcrRepository(
        f"{p}-training",
        EcrRepositoryArgs(repository_name=f"{p}/training", kms_key_arn=key_arn, keep_images=settings.ecr_keep_images),
        opts,
    )
    serving_repo = EcrRepository(
        f"{p}-serving",
        EcrRepositoryArgs(repository_name=f"{p}/serving", kms_key_arn=key_arn, keep_images=settings.ecr_keep_images),
        opts,
    )

    # SageMaker writes to fixed log group names; creating them sets retention and encryption.
    # /aws/sagemaker/TrainingJobs is shared by the whole account and region: one stack owns it.
    log_group_names = {"training": TRAINING_LOG_GROUP, "endpoint": f"/aws/sagemaker/Endpoints/{p}-serving"}
    log_groups = {
        purpose: aws.cloudwatch.LogGroup(
            f"{p}-{purpose}-logs",
            name=name,
            retention_in_days=settings.log_retention_days,
            kms_key_id=key_arn,
            opts=opts,
        )
        for purpose, name in log_group_names.items()
        if purpose != "training" or settings.manage_training_log_group
    }
    log_group_arns = [
        log_groups[purpose].arn
        if purpose in log_groups
        else pulumi.Output.concat("arn:", partition, ":logs:", settings.region, ":", account_id, ":log-group:", name)
        for purpose, name in log_group_names.items()
    ]

    sagemaker_role = SageMakerRole(
        f"{p}-sagemaker",
        SageMakerRoleArgs(
            account_id=account_id,
            read_bucket_arns=[data.bucket.arn],
            write_bucket_arns=[runs.bucket.arn],
            repository_arns=[training_repo.repository.arn, serving_repo.repository.arn],
            log_group_arns=log_group_arns,
            kms_key_arn=key_arn,
        ),
        opts,
    )
    model_group = aws.sagemaker.ModelPackageGroup(
        f"{p}-models",
        model_package_group_name=f"{p}-detector",
        model_package_group_description="detops object detector versions (approval: PendingManualApproval -> Approved)",
        opts=opts,
    )
    ci = GitHubCiRole(
        f"{p}-ci",
        GitHubCiRoleArgs(
            account_id=account_id,
            region=settings.region,
            partition=partition,
            subjects=settings.github.oidc_subjects(),
            bucket_arns=[data.bucket.arn, runs.bucket.arn],
            repository_arns=[training_repo.repository.arn, serving_repo.repository.arn],
            sagemaker_role_arn=sagemaker_role.role.arn,
            model_package_group_name=model_group.model_package_group_name,
            log_group_arns=log_group_arns,
            kms_key_arn=key_arn,
            name_prefix=p,
            oidc_provider_arn=settings.github_oidc_provider_arn,
        ),
        opts,
    )
    return {
        "cloud": "aws",
        "environment": settings.environment,
        "region": settings.region,
        "account_id": account_id,
        "kms_key_arn": key_arn,
        "s3_data_bucket": data.bucket.bucket,
        "s3_runs_bucket": runs.bucket.bucket,
        "training_ecr_repository_url": training_repo.repository.repository_url,
        "serving_ecr_repository_url": serving_repo.repository.repository_url,
        "sagemaker_role_arn": sagemaker_role.role.arn,
        "model_package_group_name": model_group.model_package_group_name,
        "training_log_group": TRAINING_LOG_GROUP,
        "endpoint_log_group": log_groups["endpoint"].name,
        "training_instance_type": settings.training_instance_type,
        "serving_instance_type": settings.serving_instance_type,
        "max_training_instances": settings.max_training_instances,
        "ci_role_arn": ci.role.arn,
    }
