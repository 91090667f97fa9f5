"""One detops environment on AWS: ``create_stack(settings)`` declares every resource.

Resources: a project KMS key; S3 buckets for data and runs (artifacts); ECR repositories for the
training and serving images; CloudWatch log groups; the SageMaker execution role; a SageMaker model
package group (the model registry); one role per purpose (trainer, registrar, approver, deployer:
:mod:`infra.components.aws_policies`), each trusting only its own GitHub environments through the
account's GitHub OIDC provider, which infra/bootstrap creates and this program looks up; CloudWatch
alarms (5XX errors, p90 latency) per release endpoint to an encrypted SNS topic; a monthly cost budget
with e-mail alerts. The provider may touch ``settings.account_id`` only.

The returned outputs are the stack outputs (``pulumi stack output --json``) that ``detops`` reads to
configure its AWS backends; docs/infra.md lists them.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_aws as aws

from infra.components.aws import (
    GITHUB_OIDC_HOST,
    EcrRepository,
    EcrRepositoryArgs,
    GitHubRole,
    GitHubRoleArgs,
    ProjectKey,
    ProjectKeyArgs,
    SageMakerRole,
    SageMakerRoleArgs,
    SecureBucket,
    SecureBucketArgs,
)
from infra.components.aws_policies import (
    CAPTURE_PREFIX,
    POLICIES,
    PROMOTED_PREFIX,
    PROMOTION_READ_KEYS,
    REGISTRY_PREFIX,
    AwsScope,
    PromotionSource,
    deployer_policy,
    model_group_share_policy,
)
from infra.settings import APP_PURPOSES, AwsSettings
from training import naming

PROJECT = "detops-aws"
TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"


def endpoint_log_group(endpoint: str) -> str:
    """The log group SageMaker writes a real-time endpoint's container logs to:
    ``/aws/sagemaker/Endpoints/<endpoint name>``, streams ``<variant>/<instance id>`` (SageMaker developer
    guide, "Log groups and streams that SageMaker AI sends to Amazon CloudWatch Logs")."""
    return f"/aws/sagemaker/Endpoints/{endpoint}"


def create_stack(settings: AwsSettings) -> dict[str, Any]:
    """Declare the environment described by ``settings``; return the stack outputs by name.

    All resources use one explicit provider for ``settings.region`` (so the stack never depends on
    ambient ``AWS_REGION``) with the project tags as default tags.
    """
    p = settings.name_prefix
    tags = {"project": "detops", "environment": settings.environment, "managed-by": "pulumi", **settings.tags}
    provider = aws.Provider(
        f"{p}-aws",
        region=settings.region,
        allowed_account_ids=[settings.account_id],
        default_tags=aws.ProviderDefaultTagsArgs(tags=tags),
    )
    opts = pulumi.ResourceOptions(provider=provider)
    invoke = pulumi.InvokeOptions(provider=provider)
    account_id = aws.get_caller_identity_output(opts=invoke).account_id
    partition = aws.get_partition_output(opts=invoke).partition

    # promotion across stacks: the prod deployer role this (dev) stack shares its runs and versions with
    readers = [settings.promotion_reader_role_arn] if settings.promotion_reader_role_arn else []
    key = ProjectKey(
        f"{p}-key",
        ProjectKeyArgs(
            account_id=account_id,
            region=settings.region,
            partition=partition,
            deletion_window_days=settings.kms_deletion_window_days,
            alias=f"alias/{p}",
            s3_decrypt_role_arns=readers,
        ),
        opts,
    )
    key_arn = key.key.arn

    def bucket_name(purpose: str) -> pulumi.Output[str]:
        # S3 names are global: prefix-account-region-purpose (at most 63 characters).
        return pulumi.Output.concat(p, "-", account_id, "-", settings.region, "-", purpose)

    data = SecureBucket(f"{p}-data", SecureBucketArgs(bucket_name=bucket_name("data"), kms_key_arn=key_arn), opts)
    runs = SecureBucket(
        f"{p}-runs", SecureBucketArgs(bucket_name=bucket_name("runs"), kms_key_arn=key_arn, reader_role_arns=readers,
                                       reader_keys=PROMOTION_READ_KEYS,
                                       expire_prefixes={f"{CAPTURE_PREFIX}/": settings.capture_retention_days}), opts
    )

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
    # /aws/sagemaker/TrainingJobs is shared by the whole account and region: one stack owns it. An
    # endpoint logs to /aws/sagemaker/Endpoints/<endpoint name>: one group per release stage's endpoint.
    endpoints = {stage: naming.endpoint_name(stage, p) for stage in settings.endpoint_stages}
    log_group_names = {"training": TRAINING_LOG_GROUP,
                       **{f"endpoint-{stage}": endpoint_log_group(name) for stage, name in endpoints.items()}}
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
        model_package_group_name=naming.model_package_group_name(p),
        model_package_group_description="detops object detector versions (approval: PendingManualApproval -> Approved)",
        opts=opts,
    )

    # The account's one GitHub OIDC provider belongs to the bootstrap (infra/bootstrap); this stack only
    # looks it up (by its fixed ARN: iam:GetOpenIDConnectProvider), so `pulumi up` fails clearly before
    # the bootstrap ran instead of creating a second one (IAM holds one provider per URL and account).
    provider_arn = aws.iam.get_open_id_connect_provider_output(
        arn=settings.github_oidc_provider_arn
        or pulumi.Output.concat("arn:", partition, ":iam::", account_id, ":oidc-provider/", GITHUB_OIDC_HOST),
        opts=invoke,
    ).arn
    scope = AwsScope(
        partition=partition,
        region=settings.region,
        account_id=account_id,
        name_prefix=p,
        data_bucket_arn=data.bucket.arn,
        runs_bucket_arn=runs.bucket.arn,
        training_repository_arn=training_repo.repository.arn,
        serving_repository_arn=serving_repo.repository.arn,
        sagemaker_role_arn=sagemaker_role.role.arn,
        kms_key_arn=key_arn,
        model_package_group_name=model_group.model_package_group_name,
        log_group_arns=log_group_arns,
        training_instance_types=[settings.training_instance_type],
        serving_instance_types=[settings.serving_instance_type],
    )
    if settings.promotion_reader_role_arn:
        aws.sagemaker.ModelPackageGroupPolicy(
            f"{p}-models-promotion-reader",
            model_package_group_name=model_group.model_package_group_name,
            resource_policy=pulumi.Output.json_dumps(
                model_group_share_policy(scope.group_arn, scope.packages_arn, settings.promotion_reader_role_arn)
            ),
            opts=opts,
        )
    source = settings.promotion_source
    promotion = (
        PromotionSource(partition=partition, region=source.region or settings.region, account_id=source.account_id,
                        runs_bucket=source.runs_bucket, kms_key_arn=source.kms_key_arn,
                        model_package_group_name=source.model_package_group_name)
        if source else None
    )
    policies = {**POLICIES, "deployer": lambda s: deployer_policy(s, promotion)}
    roles = {
        purpose: GitHubRole(
            f"{p}-{purpose}",
            GitHubRoleArgs(
                purpose=purpose, subjects=settings.github.subjects(purpose), provider_arn=provider_arn,
                policy=policies[purpose](scope),
            ),
            opts,
        )
        for purpose in APP_PURPOSES
        if settings.github.has_identity(purpose)
    }

    # Operations: one encrypted SNS topic for alarms, 5XX and latency alarms per endpoint, a monthly budget.
    alerts = aws.sns.Topic(f"{p}-alerts", kms_master_key_id=key_arn, opts=opts)
    for index, address in enumerate(settings.budget_alert_emails):
        aws.sns.TopicSubscription(f"{p}-alerts-email-{index}", topic=alerts.arn, protocol="email", endpoint=address, opts=opts)
    for stage, endpoint in endpoints.items():
        dimensions = {"EndpointName": endpoint, "VariantName": "primary"}
        aws.cloudwatch.MetricAlarm(
            f"{p}-{stage}-5xx",
            alarm_description=f"{endpoint}: invocation 5XX errors",
            namespace="AWS/SageMaker",
            metric_name="Invocation5XXErrors",
            dimensions=dimensions,
            statistic="Sum",
            period=300,
            evaluation_periods=1,
            threshold=settings.alarm_5xx_errors,
            comparison_operator="GreaterThanOrEqualToThreshold",
            treat_missing_data="notBreaching",
            alarm_actions=[alerts.arn],
            ok_actions=[alerts.arn],
            opts=opts,
        )
        aws.cloudwatch.MetricAlarm(
            f"{p}-{stage}-latency",
            alarm_description=f"{endpoint}: p90 model latency above {settings.alarm_latency_p90_ms} ms",
            namespace="AWS/SageMaker",
            metric_name="ModelLatency",  # microseconds
            dimensions=dimensions,
            extended_statistic="p90",
            period=300,
            evaluation_periods=3,
            threshold=settings.alarm_latency_p90_ms * 1000,
            comparison_operator="GreaterThanThreshold",
            treat_missing_data="notBreaching",
            alarm_actions=[alerts.arn],
            ok_actions=[alerts.arn],
            opts=opts,
        )
    aws.budgets.Budget(
        f"{p}-budget",
        budget_type="COST",
        limit_amount=f"{settings.budget_monthly_amount:.2f}",
        limit_unit="USD",
        time_unit="MONTHLY",
        account_id=account_id,
        notifications=[
            aws.budgets.BudgetNotificationArgs(
                comparison_operator="GREATER_THAN",
                notification_type=kind,
                threshold=threshold,
                threshold_type="PERCENTAGE",
                subscriber_email_addresses=list(settings.budget_alert_emails),
            )
            for kind, threshold in (("ACTUAL", 50), ("ACTUAL", 80), ("ACTUAL", 100), ("FORECASTED", 100))
        ],
        opts=opts,
    )

    runs_url = pulumi.Output.concat("s3://", runs.bucket.bucket)
    outputs: dict[str, Any] = {
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
        "sagemaker_name_prefix": p,
        "model_package_group_name": model_group.model_package_group_name,
        "sagemaker_registry_uri": pulumi.Output.concat(runs_url, "/", REGISTRY_PREFIX),
        "sagemaker_capture_uri": pulumi.Output.concat(runs_url, "/", CAPTURE_PREFIX, "/"),
        "sagemaker_endpoints": endpoints,
        "training_log_group": TRAINING_LOG_GROUP,
        "endpoint_log_groups": {stage: log_groups[f"endpoint-{stage}"].name for stage in endpoints},
        "alerts_topic_arn": alerts.arn,
        "training_instance_type": settings.training_instance_type,
        "serving_instance_type": settings.serving_instance_type,
        "max_training_instances": settings.max_training_instances,
    }
    for purpose, role in roles.items():
        outputs[f"{purpose}_role_arn"] = role.role.arn
    # The same values under the settings' names (docs/settings.md): `detops settings ci-variables` turns
    # them into CI variables; CI_ENVIRONMENTS gives each GitHub environment its own role (AWS_ROLE_ARN).
    data_url = pulumi.Output.concat("s3://", data.bucket.bucket)
    outputs.update({
        "AWS_REGION": settings.region,
        "DETOPS_DATASETS": data_url,
        "DETOPS_DATASTORE": runs_url,
        "DETOPS_SM_ROLE_ARN": sagemaker_role.role.arn,
        "DETOPS_SM_NAME_PREFIX": p,
        "DETOPS_SM_INSTANCE_TYPE": settings.training_instance_type,
        "DETOPS_SM_INSTANCE_TYPE_SERVING": settings.serving_instance_type,
        "DETOPS_SM_KMS_KEY_ID": key_arn,
        "DETOPS_SM_REGISTRY_URI": outputs["sagemaker_registry_uri"],
        "DETOPS_SM_CAPTURE_URI": outputs["sagemaker_capture_uri"],
        "DETOPS_TRAINING_REPOSITORY": training_repo.repository.repository_url,
        "DETOPS_SERVING_REPOSITORY": serving_repo.repository.repository_url,
        # where `detops promote` copies a promoted version's files when this stack is the promotion target
        "DETOPS_PROMOTE_ARTIFACT_ROOT": pulumi.Output.concat(runs_url, "/", PROMOTED_PREFIX),
    })
    if source:
        # the dev registry the release's production job promotes from (docs/contracts.md)
        outputs["DETOPS_PROMOTE_SOURCE_URI"] = f"s3://{source.runs_bucket}/{REGISTRY_PREFIX}"
        outputs["DETOPS_PROMOTE_SOURCE_ACCOUNT"] = source.account_id
        outputs["DETOPS_PROMOTE_SOURCE_NAME"] = source.model_package_group_name
    ci_environments: dict[str, Any] = {}
    for purpose, role in roles.items():
        for env in getattr(settings.github.environments, purpose):
            variables: dict[str, Any] = {"AWS_ROLE_ARN": role.role.arn}
            if purpose == "deployer":  # the release job's endpoint: detops' setting and the workflows' ENDPOINT_NAME
                variables["DETOPS_SM_ENDPOINT"] = variables["ENDPOINT_NAME"] = endpoints.get(env, next(iter(endpoints.values())))
            ci_environments[env] = variables
    outputs["CI_ENVIRONMENTS"] = ci_environments
    return outputs
