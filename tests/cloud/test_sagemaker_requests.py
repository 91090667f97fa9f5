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
