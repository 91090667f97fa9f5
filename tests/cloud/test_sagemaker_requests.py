"""The SageMaker requests detops builds keep the vendor's rules (botocore's service model in the venv,
AWS documentation): checked on the request itself, since moto accepts what SageMaker refuses."""

from __future__ import annotations

import pytest

from training.backends.sagemaker import SageMakerSettings, build_training_job, has_local_storage

KEY = "arn:aws:kms:eu-west-1:123456789012:key/0000aaaa-1111-2222-3333-444455556666"


@pytest.mark.parametrize(
    ("instance_type", "local"),
    [
        ("ml.g4dn.xlarge", True),  # 1 x 125 GB NVMe SSD
        ("ml.g5.2xlarge", True),
        ("ml.g6.xlarge", True),
        ("ml.p3dn.24xlarge", True),
        ("ml.p4d.24xlarge", True),
        ("ml.p5.48xlarge", True),
        ("ml.trn1.32xlarge", True),
        ("ml.m5d.large", True),
        ("g5.xlarge", True),  # EC2 spelling
        ("ml.p3.2xlarge", False),  # EBS only
        ("ml.m5.large", False),
        ("ml.c5.2xlarge", False),
        ("ml.g5g.xlarge", False),
        ("ml.inf2.xlarge", False),
    ],
)
def test_instance_types_with_local_storage(instance_type: str, local: bool) -> None:
    assert has_local_storage(instance_type) is local


def _request(instance_type: str, kms_key_id: str | None = KEY) -> dict:
    settings = SageMakerSettings(instance_type=instance_type, kms_key_id=kms_key_id)
    return build_training_job(job_name="detops-dev-bccd-1", run_url="s3://runs/bccd/runs/1", settings=settings,
                              nodes=1, num_steps=10, quantize=False)


@pytest.mark.parametrize("instance_type", ["ml.g4dn.xlarge", "ml.g5.xlarge", "ml.g5.2xlarge"])
def test_no_volume_key_on_instance_types_with_local_storage(instance_type: str) -> None:
    """botocore, ResourceConfig.VolumeKmsKeyId: "You can't request a VolumeKmsKeyId when using an instance
    type with local storage" (the stacks' training types, ml.g4dn / ml.g5, have local NVMe)."""
    request = _request(instance_type)
    assert "VolumeKmsKeyId" not in request["ResourceConfig"]
    assert request["OutputDataConfig"]["KmsKeyId"] == KEY  # the artifacts are still encrypted with the key


def test_the_volume_key_is_sent_for_ebs_instance_types() -> None:
    assert _request("ml.p3.2xlarge")["ResourceConfig"]["VolumeKmsKeyId"] == KEY
    assert "VolumeKmsKeyId" not in _request("ml.p3.2xlarge", kms_key_id=None)["ResourceConfig"]


# -- deploy waits for InService on the new config (boto3's endpoint_in_service waiter) -----------------

ROLE = "arn:aws:iam::123456789012:role/detops-dev-sagemaker"
PACKAGE = "arn:aws:sagemaker:eu-west-1:123456789012:model-package/detops-dev-detector/2"
ENDPOINT = "detops-dev-staging"


def _endpoint(status: str, config: str, reason: str | None = None) -> dict:
    """A ``DescribeEndpoint`` answer (the members botocore's output shape requires)."""
    from datetime import UTC, datetime

    now = datetime(2026, 12, 1, tzinfo=UTC)
    return {"EndpointName": ENDPOINT, "EndpointArn": f"arn:aws:sagemaker:eu-west-1:123456789012:endpoint/{ENDPOINT}",
            "EndpointConfigName": config, "EndpointStatus": status, "CreationTime": now, "LastModifiedTime": now,
            **({"FailureReason": reason} if reason else {})}


def _stubbed_deploy(statuses: list[tuple[str, str | None]], *, exists: bool = False, attempts: int = 5,
                    serving_config: str | None = None):
    """Deploy version 2 with a botocore Stubber answering each call in order; ``statuses`` are the
    DescribeEndpoint answers after the create/update: ``(status, FailureReason)``. Returns
    ``(deployment or the raised error, the new config name, the stubber)``."""
    from datetime import UTC, datetime

    import boto3
    from botocore.stub import Stubber

    from deployment.registry.base import ApprovalStatus, ModelVersion
    from deployment.targets.sagemaker import SageMakerTarget

    sm = boto3.client("sagemaker", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="y")
    stub = Stubber(sm)
    target = SageMakerTarget(sagemaker_client=sm, role_arn=ROLE, capture_uri="s3://runs/captures/", preflight=False,
                             wait_delay=0, wait_max_attempts=attempts)
    version = ModelVersion(name="detops-dev-detector", version="2", status=ApprovalStatus.APPROVED, artifact_uri="s3://runs/x/export",
                           registered_by="ci", created_at="", tags={"sagemaker:model_package_arn": PACKAGE})
    now = datetime(2026, 12, 1, tzinfo=UTC)
    stub.add_response("describe_model_package", {"ModelPackageName": "detops-dev-detector", "ModelPackageArn": PACKAGE,
                                                 "CreationTime": now, "ModelPackageStatus": "Completed",
                                                 "ModelPackageStatusDetails": {"ValidationStatuses": []},
                                                 "ModelApprovalStatus": "Approved"})
    stub.add_response("create_model", {"ModelArn": "arn:aws:sagemaker:eu-west-1:123456789012:model/m"})
    stub.add_response("create_endpoint_config", {"EndpointConfigArn": "arn:aws:sagemaker:eu-west-1:123456789012:endpoint-config/c"})
    old = "detops-dev-staging-v1-110000"
    if exists:
        stub.add_response("describe_endpoint", _endpoint("InService", old))
        stub.add_response("update_endpoint", {"EndpointArn": _endpoint("InService", old)["EndpointArn"]})
    else:
        stub.add_client_error("describe_endpoint", "ValidationException", f"Could not find endpoint {ENDPOINT}")
        stub.add_response("create_endpoint", {"EndpointArn": _endpoint("Creating", "x")["EndpointArn"]})
    new = f"{ENDPOINT}-v2-120000"
    for status, reason in statuses:
        stub.add_response("describe_endpoint", _endpoint(status, serving_config or new, reason))
    import time as time_mod

    from training.errors import BackendError

    with stub, pytest.MonkeyPatch.context() as mp:
        mp.setattr(time_mod, "strftime", lambda fmt, *a: "120000")
        try:
            result = target.deploy(version, ENDPOINT)
        except BackendError as e:
            result = e
    return result, new, stub


def test_deploy_returns_once_the_endpoint_is_in_service(no_cloud_credentials) -> None:
    """SageMaker answers Creating for minutes (moto says InService at once): deploy waits, polling
    DescribeEndpoint until InService, and only then returns (the smoke test runs next)."""
    deployment, new, stub = _stubbed_deploy([("Creating", None), ("Creating", None), ("InService", None),
                                             ("InService", None)])
    assert not isinstance(deployment, Exception), deployment
    assert deployment.status == "InService" and deployment.details["endpoint_config"] == new
    stub.assert_no_pending_responses()  # every Creating was waited through


def test_a_failed_endpoint_is_an_error_naming_it_and_its_reason(no_cloud_credentials) -> None:
    reason = "The primary container for production variant primary did not pass the ping health check."
    error, _, _ = _stubbed_deploy([("Creating", None), ("Failed", reason)])
    assert isinstance(error, Exception)
    assert str(error) == f"SageMaker endpoint {ENDPOINT!r} is Failed, not InService: {reason}"


def test_the_wait_is_bounded(no_cloud_credentials) -> None:
    error, _, _ = _stubbed_deploy([("Creating", None)] * 3, attempts=3)
    assert isinstance(error, Exception)
    assert f"SageMaker endpoint {ENDPOINT!r} is still Creating after 3 checks" in str(error)


def test_an_update_sagemaker_rolled_back_is_an_error(no_cloud_credentials) -> None:
    """A failed UpdateEndpoint ends InService again, on the previous config: the old version still answers."""
    reason = "Failed to download model data for container container_1."
    old = "detops-dev-staging-v1-110000"
    error, new, _ = _stubbed_deploy([("Updating", None), ("InService", reason), ("InService", reason)], exists=True,
                                    serving_config=old)
    assert isinstance(error, Exception)
    assert str(error) == (f"SageMaker endpoint {ENDPOINT!r} is InService on endpoint config {old!r}, not {new!r}: "
                          f"the update failed and SageMaker kept the previous one ({reason})")
