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
    from deployment.registry.artifact import DIGEST_TAG, manifest_tags

    registry = SageMakerRegistry(metadata_uri=f"s3://{BUCKET}/registry", serving_image=SERVING_IMAGE)
    tags = {"run_url": run_url, **manifest_tags(f"{run_url}/export")}
    v1 = registry.create_version("bccd-detector", f"{run_url}/export", "alice", {"test/AP50": 0.55}, tags)
    v2 = registry.create_version("bccd-detector", f"{run_url}/export", "alice", {"test/AP50": 0.57}, tags)
    assert (v1.version, v2.version) == ("1", "2")
    assert v1.status == v2.status == ApprovalStatus.PENDING
    sm = boto3.client("sagemaker")
    pkg = sm.describe_model_package(ModelPackageName=v2.tags["sagemaker:model_package_arn"])
    assert pkg["ModelApprovalStatus"] == "PendingManualApproval"
    container = pkg["InferenceSpecification"]["Containers"][0]
    assert container["Image"] == SERVING_IMAGE and "ModelDataUrl" not in container
    assert container["ModelDataSource"] == {"S3DataSource": {
        "S3Uri": f"{run_url}/export/", "S3DataType": "S3Prefix", "CompressionType": "None"}}
    assert v2.artifact_uri == f"{run_url}/export"

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
    # moto has no ListServiceQuotas: the endpoint quota pre-flight warns and the deploy goes on
    assert d.details["preflight"]["checks"] == [], d.details["preflight"]
    assert "could not read the SageMaker quota 'ml.m5.large for endpoint usage'" in d.details["preflight"]["warnings"][0]
    model = sm.describe_model(ModelName=d.details["model"])
    assert model["PrimaryContainer"]["ModelPackageName"] == v2.tags["sagemaker:model_package_arn"]
    assert model["PrimaryContainer"]["Environment"]["DETOPS_MODEL_SHA256"] == tags[DIGEST_TAG]
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


# -- registration form, status updates, identities, errors, smoke test, exact rollback ----------------


def _validate(operation: str, params: dict) -> None:
    """Validate a request against botocore's SageMaker service model (raises ParamValidationError)."""
    import botocore.session
    from botocore.validate import validate_parameters

    model = botocore.session.get_session().get_service_model("sagemaker")
    validate_parameters(params, model.operation_model(operation).input_shape)


def test_package_request_matches_botocore_service_model(no_cloud_credentials):
    from botocore.exceptions import ParamValidationError

    from deployment.registry.sagemaker import SageMakerRegistry

    reg = SageMakerRegistry(metadata_uri="s3://b/registry", serving_image=SERVING_IMAGE, sagemaker_client=object())
    req = reg.package_request("bccd-detector", "s3://b/runs/r1/export", "alice",
                              {"run_url": "s3://b/runs/r1", "artifact.sha256": "a" * 64})
    _validate("CreateModelPackage", req)
    src = req["InferenceSpecification"]["Containers"][0]["ModelDataSource"]["S3DataSource"]
    assert src == {"S3Uri": "s3://b/runs/r1/export/", "S3DataType": "S3Prefix", "CompressionType": "None"}
    assert req["CustomerMetadataProperties"]["artifact.sha256"] == "a" * 64
    # the validator really checks: the old form (a folder in ModelDataUrl) is the wrong type of thing,
    # and a misspelt compression type is refused
    bad = json.loads(json.dumps(req))
    bad["InferenceSpecification"]["Containers"][0]["ModelDataSource"]["S3DataSource"]["CompressionType"] = "none"
    with pytest.raises(ParamValidationError):
        _validate("CreateModelPackage", {**bad, "Unknown": 1})


def test_endpoint_requests_match_botocore_service_model(no_cloud_credentials, monkeypatch):
    from deployment.registry.base import ModelVersion
    from deployment.targets.sagemaker import SageMakerTarget

    monkeypatch.setenv("DETOPS_SM_CAPTURE_URI", "s3://bucket/capture/")
    mv = ModelVersion("bccd-detector", "5", ApprovalStatus.APPROVED, "s3://b/run/export", "alice", "now",
                      tags={"artifact.sha256": "f" * 64})
    reqs = SageMakerTarget(role_arn=ROLE).specs(mv, "bccd-prod", "arn:aws:sagemaker:us-east-1:123456789012:model-package/g/5",
                                                "120000", {"model_name": "bccd-detector", "model_version": "3",
                                                           "endpoint_config": "bccd-prod-v3-110000"})
    _validate("CreateModel", reqs["model"])
    _validate("CreateEndpointConfig", reqs["endpoint_config"])
    _validate("CreateEndpoint", reqs["endpoint"])
    tags = {t["Key"]: t["Value"] for t in reqs["endpoint_config"]["Tags"]}
    assert tags["detops:previous_model_version"] == "3"
    assert tags["detops:previous_endpoint_config"] == "bccd-prod-v3-110000"


def _register_and_approve(registry, run_url, n=1, approver="bob"):
    from deployment.registry.artifact import manifest_tags

    service = ApprovalService(registry)
    out = []
    for _ in range(n):
        tags = {"run_url": run_url, "registered_by.id": "ci", **manifest_tags(f"{run_url}/export")}
        mv = registry.create_version("bccd-detector", f"{run_url}/export", "ci", {"test/AP": 0.3}, tags)
        service.approve("bccd-detector", mv.version, by=approver, comment="reviewed")
        out.append(mv.version)
    return out


def test_no_update_model_package_when_status_does_not_change(aws_env, tmp_path):
    import boto3

    from deployment.registry.base import AuditEntry
    from deployment.registry.sagemaker import SageMakerRegistry

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    run_url = f"s3://{BUCKET}/bccd/runs/r1"
    _prepared_run(tmp_path, run_url)
    sm = boto3.client("sagemaker")
    updates: list[dict] = []
    sm.meta.events.register("provide-client-params.sagemaker.UpdateModelPackage",
                            lambda params, **kw: updates.append(dict(params)))
    registry = SageMakerRegistry(metadata_uri=f"s3://{BUCKET}/registry", serving_image=SERVING_IMAGE,
                                 sagemaker_client=sm)
    mv = registry.create_version("bccd-detector", f"{run_url}/export", "ci", {}, {"run_url": run_url})
    for action in ("gate", "register"):  # what ApprovalService.register appends, status unchanged
        registry.set_status("bccd-detector", mv.version, ApprovalStatus.PENDING, AuditEntry("ci", "now", action))
    assert updates == []
    assert [a.action for a in registry.get_version("bccd-detector", mv.version).audit] == ["gate", "register"]
    registry.set_status("bccd-detector", mv.version, ApprovalStatus.APPROVED, AuditEntry("bob", "now", "approve"))
    assert [u["ModelApprovalStatus"] for u in updates] == ["Approved"]


def test_access_denied_is_one_line_naming_action_and_principal(no_cloud_credentials):
    import boto3
    from botocore.stub import Stubber

    from deployment.registry.base import AuditEntry
    from deployment.registry.sagemaker import SageMakerRegistry
    from training.errors import AccessDeniedError, ExitCode

    sm = boto3.client("sagemaker", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    arn = "arn:aws:sagemaker:us-east-1:111122223333:model-package/bccd-detector/1"
    principal = "arn:aws:sts::111122223333:assumed-role/detops-ci/gh-run-1"
    with Stubber(sm) as stub:
        stub.add_response("list_model_packages", {"ModelPackageSummaryList": [{
            "ModelPackageGroupName": "bccd-detector", "ModelPackageVersion": 1, "ModelPackageArn": arn,
            "CreationTime": "2026-11-22T12:00:00Z", "ModelPackageStatus": "Completed",
            "ModelApprovalStatus": "PendingManualApproval"}]}, {"ModelPackageGroupName": "bccd-detector", "MaxResults": 100})
        stub.add_response("describe_model_package", {
            "ModelPackageName": "bccd-detector", "ModelPackageArn": arn, "CreationTime": "2026-11-22T12:00:00Z",
            "ModelPackageStatus": "Completed", "ModelApprovalStatus": "PendingManualApproval",
            "ModelPackageStatusDetails": {"ValidationStatuses": []}})
        stub.add_client_error(
            "update_model_package", service_error_code="AccessDeniedException", http_status_code=400,
            service_message=f"User: {principal} is not authorized to perform: sagemaker:UpdateModelPackage on "
                            f"resource: {arn} because no identity-based policy allows the sagemaker:UpdateModelPackage action")
        registry = SageMakerRegistry(metadata_uri="s3://b/registry", serving_image=SERVING_IMAGE, sagemaker_client=sm)
        with pytest.raises(AccessDeniedError) as err:
            registry.set_status("bccd-detector", "1", ApprovalStatus.APPROVED, AuditEntry("ci", "now", "approve"))
    msg = str(err.value)
    assert msg == f"access denied: {principal} may not sagemaker:UpdateModelPackage (update model package)"
    assert err.value.exit_code == ExitCode.BACKEND and "\n" not in msg


def test_registrant_and_approver_are_sts_principals(aws_env):
    import boto3

    from deployment.registry.identity import current_principal

    me = current_principal("sagemaker")
    who = boto3.client("sts").get_caller_identity()
    assert (me.id, me.name, me.source) == (who["UserId"], who["Arn"], "aws")


def test_smoke_test_invokes_the_endpoint_through_sagemaker_runtime(aws_env, tmp_path):
    import urllib.request

    import boto3

    from deployment.smoke import smoke_test

    body = json.dumps({"model": {"name": "bccd-detector", "version": "2"},
                       "predictions": [{"num_detections": 3, "detections": []}]})
    req = urllib.request.Request(f"{aws_env}/moto-api/static/sagemaker/endpoint-results", method="POST",
                                 data=json.dumps({"results": [{"Body": body, "ContentType": "application/json"},
                                                              {"Body": "oops", "ContentType": "text/plain"}]}).encode(),
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10)
    img = tmp_path / "cell.jpg"
    img.write_bytes(b"image 0")  # moto's server decodes request bodies as UTF-8: no real JPEG bytes here
    runtime = boto3.client("sagemaker-runtime")
    r = smoke_test(None, str(img), target="sagemaker", endpoint="bccd-prod", runtime_client=runtime)
    assert r == {"target": "sagemaker", "endpoint": "bccd-prod", "model": {"name": "bccd-detector", "version": "2"},
                 "num_detections": 3, "latency_ms": r["latency_ms"]}
    img.write_bytes(b"image 1")  # another request: the next (bad) queued answer
    from training.errors import BackendError

    with pytest.raises(BackendError, match="unexpected body"):
        smoke_test(None, str(img), target="sagemaker", endpoint="bccd-prod", runtime_client=runtime)


def _client_with_update_endpoint():
    """A SageMaker client on moto whose UpdateEndpoint (not implemented by moto 5.2.5) is emulated as the
    config swap it is: delete + create the endpoint with the new config, through moto itself."""
    import boto3

    sm = boto3.client("sagemaker")
    backend = boto3.client("sagemaker")

    def update_endpoint(params, **kwargs):
        name, config = params["EndpointName"], params["EndpointConfigName"]
        backend.describe_endpoint_config(EndpointConfigName=config)  # must exist, as in SageMaker
        tags = backend.list_tags(ResourceArn=backend.describe_endpoint(EndpointName=name)["EndpointArn"]).get("Tags", [])
        backend.delete_endpoint(EndpointName=name)
        arn = backend.create_endpoint(EndpointName=name, EndpointConfigName=config, Tags=tags)["EndpointArn"]
        return {"status_code": 200, "headers": {}, "body": b""}, {"EndpointArn": arn}

    def before_call(model, params, **kwargs):
        if model.name == "UpdateEndpoint":
            http, parsed = update_endpoint(json.loads(params["body"]))  # the serialized JSON request
            return type("R", (), {"status_code": 200, "headers": {}})(), parsed
        return None

    sm.meta.events.register("before-call.sagemaker.UpdateEndpoint", before_call)
    return sm


def test_sagemaker_exact_rollback_switches_back_to_the_previous_endpoint_config(aws_env, tmp_path, monkeypatch):
    import boto3

    from deployment import deploy as deploy_mod
    from deployment.registry.sagemaker import SageMakerRegistry
    from deployment.targets.sagemaker import SageMakerTarget

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    run_url = f"s3://{BUCKET}/bccd/runs/r1"
    _prepared_run(tmp_path, run_url)
    monkeypatch.setenv("DETOPS_SM_ROLE_ARN", ROLE)
    monkeypatch.setenv("DETOPS_SM_CAPTURE_URI", f"s3://{BUCKET}/capture/")
    registry = SageMakerRegistry(metadata_uri=f"s3://{BUCKET}/registry", serving_image=SERVING_IMAGE)
    v1, v2, v3 = _register_and_approve(registry, run_url, 3)
    sm = _client_with_update_endpoint()
    target = SageMakerTarget(sagemaker_client=sm)
    monkeypatch.setattr("time.strftime", lambda fmt, *a: {"1": "110000", "3": "130000"}[target._next])
    target._next = "1"
    first = deploy_mod.deploy("bccd-detector", v1, target, "bccd-prod", registry=registry)
    target._next = "3"
    d = deploy_mod.deploy("bccd-detector", v3, target, "bccd-prod", registry=registry)  # v2 never released
    assert d.details["previous"]["model_version"] == v1
    assert target.describe("bccd-prod").details["previous"]["endpoint_config"] == first.details["endpoint_config"]
    none = deploy_mod.rollback(target, "bccd-detector", "bccd-prod", if_serving=v2, registry=registry)
    assert none.details["rollback"] == "none" and none.model_version == v3
    back = deploy_mod.rollback(target, "bccd-detector", "bccd-prod", if_serving=v3, registry=registry)
    assert back.model_version == v1 and back.details["rollback_via"] == "previous endpoint config"
    assert sm.describe_endpoint(EndpointName="bccd-prod")["EndpointConfigName"] == first.details["endpoint_config"]
    assert len(sm.list_models()["Models"]) == 2  # nothing new was created to roll back


def test_deploy_refuses_a_tampered_s3_artifact(aws_env, tmp_path, monkeypatch):
    import boto3

    from deployment import deploy as deploy_mod
    from deployment.registry.artifact import ArtifactIntegrityError
    from deployment.registry.sagemaker import SageMakerRegistry
    from deployment.targets.sagemaker import SageMakerTarget

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    run_url = f"s3://{BUCKET}/bccd/runs/r1"
    _prepared_run(tmp_path, run_url)
    monkeypatch.setenv("DETOPS_SM_ROLE_ARN", ROLE)
    monkeypatch.setenv("DETOPS_SM_CAPTURE_URI", f"s3://{BUCKET}/capture/")
    registry = SageMakerRegistry(metadata_uri=f"s3://{BUCKET}/registry", serving_image=SERVING_IMAGE)
    (v1,) = _register_and_approve(registry, run_url)
    s3.put_object(Bucket=BUCKET, Key="bccd/runs/r1/export/model.tflite", Body=b"TFL3 but different")
    with pytest.raises(ArtifactIntegrityError, match="changed: model.tflite"):
        deploy_mod.deploy("bccd-detector", v1, SageMakerTarget(), "bccd-prod", registry=registry)
    assert boto3.client("sagemaker").list_models()["Models"] == []


def test_a_dev_account_group_is_read_by_arn(no_cloud_credentials):
    """``detops promote`` reads the dev account's group (its resource policy lets the prod role): by ARN,
    in the form SageMaker's ListModelPackages accepts (botocore's own pattern of ``ArnOrName``)."""
    import re

    import botocore.session

    from deployment.registry.sagemaker import SageMakerRegistry
    from training.errors import ConfigError

    class Meta:
        region_name = "eu-west-1"

    class FakeSm:
        meta = Meta()
        asked: list[dict] = []

        def list_model_packages(self, **kwargs):
            self.asked.append(kwargs)
            return {"ModelPackageSummaryList": []}

        def get_paginator(self, operation):
            """botocore's own paginator over this fake's method (as a client's get_paginator builds it)."""
            from botocore.paginate import Paginator

            session = botocore.session.get_session()
            op = session.get_service_model("sagemaker").operation_model("ListModelPackages")
            assert operation == "list_model_packages"
            config = session.get_paginator_model("sagemaker").get_paginator("ListModelPackages")
            return Paginator(self.list_model_packages, config, op)

    reg = SageMakerRegistry(metadata_uri="s3://dev-runs/registry", serving_image=SERVING_IMAGE, sagemaker_client=FakeSm(),
                            group_account_id="111122223333")
    assert reg.list_versions("detops-dev-detector") == []
    arn = "arn:aws:sagemaker:eu-west-1:111122223333:model-package-group/detops-dev-detector"
    assert FakeSm.asked[-1]["ModelPackageGroupName"] == arn
    _validate("ListModelPackages", FakeSm.asked[-1])
    shape = botocore.session.get_session().get_service_model("sagemaker").operation_model("ListModelPackages").input_shape
    assert re.fullmatch(shape.members["ModelPackageGroupName"].metadata["pattern"], arn)
    # this account's groups stay named by name
    same = SageMakerRegistry(metadata_uri="s3://b/registry", serving_image=SERVING_IMAGE, sagemaker_client=FakeSm())
    same.list_versions("detops-prod-detector")
    assert FakeSm.asked[-1]["ModelPackageGroupName"] == "detops-prod-detector"
    with pytest.raises(ConfigError, match="12-digit"):
        SageMakerRegistry(metadata_uri="s3://b/registry", sagemaker_client=FakeSm(), group_account_id="dev")


def test_the_approver_person_comes_from_moto_sts_sessions(aws_env):
    """GetCallerIdentity of moto's assumed-role sessions (moto builds ARN and UserId as AWS documents them):
    a session of an Identity Center-shaped role is the person it names; a CI role's session is nobody. moto
    cannot show that Identity Center names the session after the user (it runs no Identity Center)."""
    import boto3

    from deployment.registry.identity import aws_person, current_principal

    iam, sts = boto3.client("iam"), boto3.client("sts")
    trust = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "sts:AssumeRole"}]})

    def session(role: str, name: str):
        arn = iam.create_role(RoleName=role, AssumeRolePolicyDocument=trust)["Role"]["Arn"]
        c = sts.assume_role(RoleArn=arn, RoleSessionName=name)["Credentials"]
        return current_principal("sagemaker", sts_client=boto3.client(
            "sts", aws_access_key_id=c["AccessKeyId"], aws_secret_access_key=c["SecretAccessKey"],
            aws_session_token=c["SessionToken"]))

    person = session("AWSReservedSSO_DetopsApprover_0123456789abcdef", "alice@example.com")
    assert person.id.startswith("AROA") and person.id.endswith(":alice@example.com")
    assert aws_person(person) == "alice@example.com"
    assert aws_person(session("detops-dev-approver", "GitHubActions")) is None
