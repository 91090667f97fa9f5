"""The SageMaker path end to end against a moto server on 127.0.0.1 (boto3, real HTTP).

Training job over a prepared run folder on S3 -> register two packages (Pending) -> approve one ->
list approved -> deploy it (model, endpoint config with data capture, endpoint); the pending one
is refused, both by the approval service above the targets and by the target itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deployment.registry.approval import ApprovalService
from deployment.registry.base import ApprovalStatus

pytestmark = pytest.mark.integration

BUCKET = "detops-ml"
SERVING_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/detops-serving:0.1.0"
ROLE = "arn:aws:iam::123456789012:role/detops-sagemaker-execution"


def _prepared_run(tmp_path: Path, run_url: str) -> None:
    """A prepared-and-exported run folder (contract layout) published to ``run_url``."""
    from training import storage

    run = tmp_path / "run"
    files = {
        "tf_records/train-00000-of-00002.tfrecord": b"t0", "tf_records/train-00001-of-00002.tfrecord": b"t1",
        "tf_records/val-00000-of-00001.tfrecord": b"v0", "tf_records/test-00000-of-00001.tfrecord": b"x0",
        "tf_records/label_map.pbtxt": b"item {\n  id: 1\n  name: 'RBC'\n}\n",
        "model_config/experiment.yaml": b"task: {}\n",
        "evaluation/test/metrics.json": json.dumps({"AP": 0.3, "AP50": 0.55}).encode(),
        "export/saved_model/saved_model.pb": b"pb", "export/model.tflite": b"TFL3",
    }
    for rel, data in files.items():
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_bytes(data)
    (run / "run.json").write_text(json.dumps({"id": "r1", "project": "bccd", "status": "complete"}))
    storage.publish_run(str(run), run_url)


def test_sagemaker_train_register_approve_deploy(aws_env, tmp_path, monkeypatch):
    import boto3

    from deployment import deploy as deploy_mod
    from deployment.registry.sagemaker import SageMakerRegistry
    from deployment.targets.sagemaker import SageMakerTarget
    from training.backends.sagemaker import SageMakerBackend, SageMakerSettings, build_training_job
    from training.errors import GateError

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    run_url = f"s3://{BUCKET}/bccd/runs/20261122T120000-abc123"
    _prepared_run(tmp_path, run_url)

    # -- training job: the seed-003 channels and hyperparameters, checkpoints to S3, 2 instances
    settings = SageMakerSettings(role_arn=ROLE, image="123456789012.dkr.ecr.us-east-1.amazonaws.com/detops-training:0.1.0-gpu")
    request = build_training_job(job_name="detops-bccd-20261122T120000-abc123", run_url=run_url, settings=settings,
                                 nodes=2, num_steps=600, quantize=True, project="bccd")
    desc = SageMakerBackend(poll_seconds=0.01).start(request, wait=True)
    assert desc["TrainingJobName"] == "detops-bccd-20261122T120000-abc123"
    assert desc["TrainingJobStatus"] in ("Completed", "InProgress")
    assert desc["HyperParameters"]["num_steps"] == "600" and desc["HyperParameters"]["quantize"] == "True"
    got_channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in desc["InputDataConfig"]}
    assert got_channels == {
        "train": f"{run_url}/tf_records/train-",
        "validation": f"{run_url}/tf_records/val-",
        "config": f"{run_url}/model_config/",
        "label": f"{run_url}/tf_records/label_map.pbtxt",
    }
    assert desc["ResourceConfig"]["InstanceCount"] == 2
    assert desc["CheckpointConfig"]["S3Uri"] == f"{run_url}/model_training/checkpoints/"
    assert desc["EnableManagedSpotTraining"] is True
    # each channel's S3 prefix really selects the intended objects of the run folder
    for name, uri in got_channels.items():
        prefix = uri.removeprefix(f"s3://{BUCKET}/")
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]
        expected = {"train": 2, "validation": 1, "config": 1, "label": 1}[name]
        assert len(keys) == expected, (name, keys)

    # -- registry: model package group, two Pending packages, approve one (by another person)
    registry = SageMakerRegistry(metadata_uri=f"s3://{BUCKET}/registry", serving_image=SERVING_IMAGE)
    v1 = registry.create_version("bccd-detector", f"{run_url}/export", "alice", {"test/AP50": 0.55},
                                 {"run_url": run_url})
    v2 = registry.create_version("bccd-detector", f"{run_url}/export", "alice", {"test/AP50": 0.57},
                                 {"run_url": run_url})
    assert (v1.version, v2.version) == ("1", "2")
    assert v1.status == v2.status == ApprovalStatus.PENDING
    sm = boto3.client("sagemaker")
    pkg = sm.describe_model_package(ModelPackageName=v2.tags["sagemaker:model_package_arn"])
    assert pkg["ModelApprovalStatus"] == "PendingManualApproval"
    assert pkg["InferenceSpecification"]["Containers"][0]["Image"] == SERVING_IMAGE

    service = ApprovalService(registry)
    approved = service.approve("bccd-detector", "2", by="bob", comment="val AP50 ok, reviewed samples")
    assert approved.status == ApprovalStatus.APPROVED
    assert [a.action for a in approved.audit][-1] == "approve" and approved.audit[-1].actor == "bob"
    assert sm.describe_model_package(ModelPackageName=v2.tags["sagemaker:model_package_arn"])["ModelApprovalStatus"] == "Approved"
    listed = registry.list_versions("bccd-detector")
    assert [(v.version, v.status) for v in listed] == [("1", ApprovalStatus.PENDING), ("2", ApprovalStatus.APPROVED)]
    assert [v.version for v in listed if v.status == ApprovalStatus.APPROVED] == ["2"]
    assert listed[1].metrics == {"test/AP50": 0.57} and listed[1].registered_by == "alice"
    assert [v.name for v in registry.list_versions()] == ["bccd-detector", "bccd-detector"]

    # -- deploy: a pending package is refused above the target and by the target itself
    monkeypatch.setenv("DETOPS_SM_ROLE_ARN", ROLE)
    monkeypatch.setenv("DETOPS_SM_CAPTURE_URI", f"s3://{BUCKET}/capture/")
    target = SageMakerTarget()
    with pytest.raises(GateError, match="PendingManualApproval"):
        deploy_mod.deploy("bccd-detector", "1", target, "bccd-prod", registry=registry)
    pending = registry.get_version("bccd-detector", "1")
    with pytest.raises(GateError, match="not Approved"):
        target.deploy(pending, "bccd-prod")
    # the target re-checks SageMaker: a stale "Approved" ModelVersion of a pending package is refused
    stale = registry.get_version("bccd-detector", "1")
    stale.status = ApprovalStatus.APPROVED
    with pytest.raises(GateError, match="PendingManualApproval"):
        target.deploy(stale, "bccd-prod")
    assert sm.list_endpoints()["Endpoints"] == [] and sm.list_models()["Models"] == []

    d = deploy_mod.deploy("bccd-detector", "2", target, "bccd-prod", registry=registry)
    assert (d.endpoint, d.model_name, d.model_version) == ("bccd-prod", "bccd-detector", "2")
    model = sm.describe_model(ModelName=d.details["model"])
    assert model["PrimaryContainer"]["ModelPackageName"] == v2.tags["sagemaker:model_package_arn"]
    cfg = sm.describe_endpoint_config(EndpointConfigName=d.details["endpoint_config"])
    capture = cfg["DataCaptureConfig"]
    assert capture["EnableCapture"] is True and capture["InitialSamplingPercentage"] == 100
    assert capture["DestinationS3Uri"] == f"s3://{BUCKET}/capture/"
    assert {o["CaptureMode"] for o in capture["CaptureOptions"]} == {"Input", "Output"}
    assert cfg["ProductionVariants"][0]["ModelName"] == d.details["model"]
    assert sm.describe_endpoint(EndpointName="bccd-prod")["EndpointConfigName"] == d.details["endpoint_config"]
    now = target.describe("bccd-prod")
    assert (now.model_name, now.model_version) == ("bccd-detector", "2")
    assert target.describe("no-such-endpoint") is None

    # a rejected version stays undeployable
    service.reject("bccd-detector", "1", by="bob", comment="superseded by v2")
    with pytest.raises(GateError, match="Rejected"):
        deploy_mod.deploy("bccd-detector", "1", target, "bccd-prod", registry=registry)


def test_sagemaker_dry_run_deploy_needs_no_credentials(no_cloud_credentials, monkeypatch):
    from deployment.registry.base import ModelVersion
    from deployment.targets.sagemaker import SageMakerTarget

    monkeypatch.setenv("DETOPS_SM_CAPTURE_URI", "s3://bucket/capture/")
    mv = ModelVersion("bccd-detector", "3", ApprovalStatus.APPROVED, "s3://b/run/export", "alice", "2026-11-22")
    d = SageMakerTarget().deploy(mv, "bccd-prod", dry_run=True)
    assert d.status == "planned"
    reqs = d.details["requests"]
    assert reqs["endpoint_config"]["DataCaptureConfig"]["EnableCapture"] is True
    assert reqs["endpoint"]["EndpointName"] == "bccd-prod"
    assert reqs["model"]["ModelName"] == reqs["endpoint_config"]["ProductionVariants"][0]["ModelName"]
