"""Quota pre-flight of ``detops submit`` (issue 11, item 9): the job is refused with the numbers
when the GPU quota is short, ``--skip-preflight`` bypasses the check, and a quota that cannot be
found or read is a warning, never a crash.

No cloud is reachable here. AWS: moto has no ``ListServiceQuotas``, so real boto3 clients with
botocore's ``Stubber`` answer, which checks every request and every canned response against
botocore's service model. Azure: the installed azure-ai-ml's own ``ComputeOperations.list_usage`` /
``list_sizes`` run over REST models built from recorded-shape JSON (the Usages - List and Virtual
Machine Sizes - List responses), so the SDK's real conversion into ``Usage`` / ``VmSize`` entities
(which leaves ``currentValue`` / ``vCPUs`` in REST spelling) is what the pre-flight reads.
"""

from __future__ import annotations

from types import SimpleNamespace as NS

import pytest
from cloud_fakes import gpu_run_config

from training.backends import SubmitOptions
from training.cloud.quota import QuotaError

REGION = "us-east-1"
QUOTA = "ml.g5.xlarge for spot training job usage"
CODE = "L-1234ABCD"


def _quota(name: str, value: float, code: str = CODE) -> dict:
    return {"ServiceCode": "sagemaker", "ServiceName": "Amazon SageMaker", "QuotaCode": code, "QuotaName": name,
            "QuotaArn": f"arn:aws:servicequotas:{REGION}:123456789012:sagemaker/{code}", "Value": value,
            "Unit": "None", "Adjustable": True, "GlobalQuota": False}


def _clients(monkeypatch=None):
    import boto3
    from botocore.stub import Stubber

    kw = {"region_name": REGION, "aws_access_key_id": "x", "aws_secret_access_key": "x"}
    sq, sm = boto3.client("service-quotas", **kw), boto3.client("sagemaker", **kw)
    return sq, Stubber(sq), sm, Stubber(sm)


def _running_jobs(stub, jobs: list[tuple[str, str, int, bool]], denied: set[str] = frozenset()) -> None:
    """``ListTrainingJobs(StatusEquals=InProgress)`` and one ``DescribeTrainingJob`` per job
    (AccessDenied for the names in ``denied``)."""
    import datetime as dt

    t = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    stub.add_response("list_training_jobs", {"TrainingJobSummaries": [
        {"TrainingJobName": n, "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:123456789012:training-job/{n}",
         "CreationTime": t, "TrainingJobStatus": "InProgress"} for n, *_ in jobs]}, {"StatusEquals": "InProgress"})
    for name, itype, count, spot in jobs:
        if name in denied:
            stub.add_client_error("describe_training_job", "AccessDeniedException", f"not authorized on {name}", 400,
                                  expected_params={"TrainingJobName": name})
            continue
        stub.add_response("describe_training_job", {
            "TrainingJobName": name, "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:123456789012:training-job/{name}",
            "ModelArtifacts": {"S3ModelArtifacts": "s3://b/m.tar.gz"}, "TrainingJobStatus": "InProgress",
            "SecondaryStatus": "Training", "AlgorithmSpecification": {"TrainingInputMode": "File"},
            "ResourceConfig": {"InstanceType": itype, "InstanceCount": count, "VolumeSizeInGB": 50},
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600}, "CreationTime": t, "EnableManagedSpotTraining": spot,
        }, {"TrainingJobName": name})


@pytest.fixture
def sm_env(monkeypatch, no_cloud_credentials, tmp_path):
    monkeypatch.setenv("DETOPS_SM_ROLE_ARN", "arn:aws:iam::123456789012:role/detops-sagemaker-execution")
    monkeypatch.setenv("DETOPS_TRAINING_IMAGE", "123456789012.dkr.ecr.us-east-1.amazonaws.com/detops-training:0.1.0-gpu")
    monkeypatch.setenv("DETOPS_SM_INSTANCE_TYPE", "ml.g5.xlarge")
    monkeypatch.setenv("DETOPS_SM_SPOT", "true")
    monkeypatch.setenv("DETOPS_DATASETS", str(tmp_path / "datasets"))
    calls: list[str] = []
    from training import pipeline
    from training.backends.sagemaker import SageMakerBackend

    monkeypatch.setattr(pipeline, "prepare", lambda cfg, **kw: calls.append("prepare"))
    monkeypatch.setattr(SageMakerBackend, "start",
                        lambda self, req, **kw: calls.append("start") or {"TrainingJobStatus": "InProgress"})
    return calls


def _sm_submit(tmp_path, sq, sm, **kw):
    from training.backends.sagemaker import SageMakerBackend

    b = SageMakerBackend(sagemaker_client=sm, quotas_client=sq)
    return b.submit(SubmitOptions(gpu_run_config(tmp_path, "s3://detops-ml/runs", steps=10), [], wait=False, console=None, **kw))


def test_sagemaker_submit_refuses_when_the_spot_quota_is_short(sm_env, tmp_path):
    sq, sq_stub, sm, sm_stub = _clients()
    with sq_stub, sm_stub:
        sq_stub.add_response("list_service_quotas", {"Quotas": [
            _quota("ml.g5.xlarge for training job usage", 8, "L-OTHER"), _quota(QUOTA, 2)]}, {"ServiceCode": "sagemaker"})
        # one spot job holds 1 ml.g5.xlarge; the on-demand job and the other type do not count
        _running_jobs(sm_stub, [("spot-a", "ml.g5.xlarge", 1, True), ("ondemand", "ml.g5.xlarge", 4, False),
                                ("cpu", "ml.m5.large", 1, True)])
        with pytest.raises(QuotaError) as e:
            _sm_submit(tmp_path, sq, sm, nodes=2)
        sq_stub.assert_no_pending_responses()
    msg = str(e.value)
    assert e.value.exit_code == 4 and "\n" not in msg
    assert f"{QUOTA}: needed 2 instances, available 1 (limit 2, in use 1)" in msg
    assert f"--service-code sagemaker --quota-code {CODE} --desired-value 3" in msg
    assert "servicequotas/home/services/sagemaker/quotas/" + CODE in msg
    assert sm_env == []  # nothing prepared, nothing created


def test_sagemaker_submit_goes_on_when_the_quota_fits(sm_env, tmp_path):
    sq, sq_stub, sm, sm_stub = _clients()
    with sq_stub, sm_stub:
        sq_stub.add_response("list_service_quotas", {"Quotas": [_quota(QUOTA, 4)]}, {"ServiceCode": "sagemaker"})
        _running_jobs(sm_stub, [("spot-a", "ml.g5.xlarge", 2, True)])
        sub = _sm_submit(tmp_path, sq, sm, nodes=2)
    (check,) = sub.details["preflight"]["checks"]
    assert check["ok"] and check["needed"] == 2 and check["available"] == 2 and check["limit"] == 4
    assert sm_env == ["prepare", "start"]


def test_skip_preflight_submits_without_asking(sm_env, tmp_path):
    sq, sq_stub, sm, sm_stub = _clients()
    with sq_stub, sm_stub:  # no canned responses: any quota call would raise
        sub = _sm_submit(tmp_path, sq, sm, nodes=2, preflight=False)
    assert sub.details["preflight"] == "skipped (--skip-preflight)"
    assert sm_env == ["prepare", "start"]


def test_quota_not_found_or_not_readable_warns_and_goes_on(sm_env, tmp_path):
    sq, sq_stub, sm, sm_stub = _clients()
    with sq_stub, sm_stub:
        # an instance type the region does not know: neither applied nor default quota by that name
        sq_stub.add_response("list_service_quotas", {"Quotas": [_quota("ml.m5.large for training job usage", 10)]},
                             {"ServiceCode": "sagemaker"})
        sq_stub.add_response("list_aws_default_service_quotas", {"Quotas": []}, {"ServiceCode": "sagemaker"})
        sub = _sm_submit(tmp_path, sq, sm, nodes=2)
        assert sub.details["preflight"]["checks"] == []
        assert "no SageMaker quota named" in sub.details["preflight"]["warnings"][0]
        # the role may not read quotas: one warning, the job is still submitted
        sq_stub.add_client_error("list_service_quotas", "AccessDeniedException", "not authorized to perform "
                                 "servicequotas:ListServiceQuotas", 400, expected_params={"ServiceCode": "sagemaker"})
        sub = _sm_submit(tmp_path, sq, sm, nodes=2)
        assert "could not read the SageMaker quota" in sub.details["preflight"]["warnings"][0]
    assert sm_env == ["prepare", "start"] * 2


def test_a_job_the_role_may_not_describe_is_named_and_not_counted(no_cloud_credentials):
    from training.cloud.quota import sagemaker_preflight

    sq, sq_stub, sm, sm_stub = _clients()
    with sq_stub, sm_stub:
        sq_stub.add_response("list_service_quotas", {"Quotas": [_quota(QUOTA, 4)]}, {"ServiceCode": "sagemaker"})
        # someone else's job, which the trainer role (scoped to the stack's names) may not describe
        _running_jobs(sm_stub, [("theirs", "ml.g5.xlarge", 8, True), ("detops-a", "ml.g5.xlarge", 3, True)],
                      denied={"theirs"})
        result = sagemaker_preflight("ml.g5.xlarge", 1, usage="spot training job", quotas_client=sq, sm_client=sm)
        sm_stub.assert_no_pending_responses()
    assert (result.checks[0].in_use, result.checks[0].available) == (3, 1)
    assert result.warnings == ["not counted (may not describe them): theirs"]


def test_default_quota_is_used_when_never_changed_and_the_usage_may_be_unreadable(sm_env, tmp_path):
    from training.cloud.quota import sagemaker_preflight

    sq, sq_stub, sm, sm_stub = _clients()
    with sq_stub, sm_stub:
        sq_stub.add_response("list_service_quotas", {"Quotas": []}, {"ServiceCode": "sagemaker"})
        sq_stub.add_response("list_aws_default_service_quotas", {"Quotas": [_quota(QUOTA, 0)]},
                             {"ServiceCode": "sagemaker"})
        sm_stub.add_client_error("list_training_jobs", "AccessDeniedException", "no", 400)
        result = sagemaker_preflight("ml.g5.xlarge", 1, usage="spot training job", quotas_client=sq, sm_client=sm)
    (check,) = result.checks
    assert (check.limit, check.in_use, check.ok) == (0, None, False)  # a new account's 0: refused
    assert "could not count" in result.warnings[0]


def test_endpoint_usage_counts_the_serving_instances(no_cloud_credentials):
    import datetime as dt

    from training.cloud.quota import sagemaker_preflight

    t = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    sq, sq_stub, sm, sm_stub = _clients()
    with sq_stub, sm_stub:
        sq_stub.add_response("list_service_quotas", {"Quotas": [_quota("ml.g4dn.xlarge for endpoint usage", 2)]},
                             {"ServiceCode": "sagemaker"})
        sm_stub.add_response("list_endpoints", {"Endpoints": [{
            "EndpointName": "detops", "EndpointArn": f"arn:aws:sagemaker:{REGION}:123456789012:endpoint/detops",
            "CreationTime": t, "LastModifiedTime": t, "EndpointStatus": "InService"}]}, {"StatusEquals": "InService"})
        sm_stub.add_response("describe_endpoint", {
            "EndpointName": "detops", "EndpointArn": f"arn:aws:sagemaker:{REGION}:123456789012:endpoint/detops",
            "EndpointConfigName": "detops-1", "EndpointStatus": "InService", "CreationTime": t, "LastModifiedTime": t,
            "ProductionVariants": [{"VariantName": "primary", "CurrentInstanceCount": 2}]}, {"EndpointName": "detops"})
        sm_stub.add_response("describe_endpoint_config", {
            "EndpointConfigName": "detops-1", "CreationTime": t,
            "EndpointConfigArn": f"arn:aws:sagemaker:{REGION}:123456789012:endpoint-config/detops-1",
            "ProductionVariants": [{"VariantName": "primary", "ModelName": "m", "InstanceType": "ml.g4dn.xlarge"}]},
            {"EndpointConfigName": "detops-1"})
        result = sagemaker_preflight("ml.g4dn.xlarge", 1, usage="endpoint", quotas_client=sq, sm_client=sm)
    (check,) = result.checks
    assert (check.needed, check.in_use, check.available, check.ok) == (1, 2, 0, False)


def test_cli_exit_code_and_skip_flag(sm_env, tmp_path, monkeypatch, capsys):
    """``detops submit`` exits 4 with the numbers on stderr; ``--skip-preflight`` submits."""
    import training.cloud.aws
    from detops.cli import main

    sq, sq_stub, sm, sm_stub = _clients()
    monkeypatch.setattr(training.cloud.aws, "client", lambda service, settings=None: {"service-quotas": sq,
                                                                                        "sagemaker": sm}[service])
    cfg = gpu_run_config(tmp_path, "s3://detops-ml/runs", steps=10)
    with sq_stub, sm_stub:
        sq_stub.add_response("list_service_quotas", {"Quotas": [_quota(QUOTA, 0)]}, {"ServiceCode": "sagemaker"})
        _running_jobs(sm_stub, [])
        with pytest.raises(SystemExit) as e:
            main(["submit", str(cfg), "--backend", "sagemaker", "--no-wait"])
        assert e.value.code == 4
        assert "needed 1 instances, available 0 (limit 0, in use 0)" in " ".join(capsys.readouterr().err.split())
        assert sm_env == []
        main(["submit", str(cfg), "--backend", "sagemaker", "--no-wait", "--skip-preflight"])
    assert sm_env == ["prepare", "start"]
    assert "skipped (--skip-preflight)" in capsys.readouterr().out


def test_dry_run_makes_no_quota_call(sm_env, tmp_path):
    sq, sq_stub, sm, sm_stub = _clients()
    with sq_stub, sm_stub:
        sub = _sm_submit(tmp_path, sq, sm, nodes=2, dry_run=True, out_dir=tmp_path / "out")
    assert sub.status == "planned" and sub.details["preflight"].startswith("not run")


# -- Azure ML -------------------------------------------------------------------------------------

SUB = "00000000-0000-0000-0000-000000000000"
LOC = "westeurope"


def _usage(value: str, localized: str, current: int, limit: int, workspace: str | None = None) -> dict:
    """One entry of ``GET .../locations/{loc}/usages`` as the REST API returns it."""
    scope = f"/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/{workspace}" if workspace else ""
    return {"id": f"/subscriptions/{SUB}{scope}/providers/Microsoft.MachineLearningServices/locations/{LOC}/usages/{value}",
            "amlWorkspaceLocation": LOC, "type": "Microsoft.MachineLearningServices/vmFamily/usages", "unit": "Count",
            "currentValue": current, "limit": limit, "name": {"value": value, "localizedValue": localized}}


USAGES = [
    _usage("Clusters", "Clusters", 3, 200),
    _usage("TotalDedicatedCores", "Total Cluster Dedicated Regional vCPUs", 8, 100),
    _usage("TotalLowPriorityCores", "Total Cluster LowPriority Regional vCPUs", 0, 100),
    _usage("standardNCASv3_T4Family", "Standard NCASv3_T4 Family Cluster Dedicated vCPUs", 4, 8),
    _usage("standardNCFamily", "Standard NC Family Cluster Dedicated vCPUs", 0, 48),
    # another workspace's entry for the same family does not count against this one
    _usage("standardNCASv3_T4Family", "Standard NCASv3_T4 Family Cluster Dedicated vCPUs", 0, 0, workspace="other"),
]
SIZES = [
    {"name": "Standard_NC4as_T4_v3", "family": "standardNCASv3_T4Family", "vCPUs": 4, "gpus": 1, "memoryGB": 28.0,
     "lowPriorityCapable": True, "supportedComputeTypes": ["AmlCompute"]},
    {"name": "Standard_DS3_v2", "family": "standardDSv2Family", "vCPUs": 4, "gpus": 0, "memoryGB": 14.0,
     "lowPriorityCapable": True, "supportedComputeTypes": ["AmlCompute"]},
]


def _ml_client(size="Standard_NC4as_T4_v3", tier="dedicated", max_instances=4, usages=USAGES):
    """A stand-in ``MLClient`` whose ``compute`` is azure-ai-ml's real ``ComputeOperations`` over
    canned REST answers (only ``get`` of the cluster is replaced)."""
    from azure.ai.ml._restclient.arm_ml_service.models import Usage as RestUsage
    from azure.ai.ml._restclient.arm_ml_service.models import VirtualMachineSize
    from azure.ai.ml.entities import AmlCompute
    from azure.ai.ml.operations import ComputeOperations

    class Compute(ComputeOperations):
        def __init__(self):  # no service client: the REST operations below answer
            self._usage_operations = NS(list=lambda location, cls: cls([RestUsage(u) for u in usages]))
            self._vmsize_operations = NS(list=lambda location: NS(value=[VirtualMachineSize(s) for s in SIZES]))

        def get(self, name):
            return AmlCompute(name=name, size=size, tier=tier, max_instances=max_instances, location=LOC)

    created = []
    jobs = NS(create_or_update=lambda job: created.append(job) or NS(name="job-1", studio_url="https://ml", status="Queued"))
    return NS(compute=Compute(), jobs=jobs, created=created)


@pytest.fixture
def aml_env(monkeypatch, no_cloud_credentials, tmp_path):
    for k, v in {"AZURE_SUBSCRIPTION_ID": SUB, "AZURE_RESOURCE_GROUP": "rg", "AZUREML_WORKSPACE": "ws",
                 "DETOPS_TRAINING_IMAGE": "detopsacr.azurecr.io/detops-training:0.1.0-gpu",
                 "DETOPS_AML_COMPUTE": "gpu-cluster", "DETOPS_DATASETS": str(tmp_path / "datasets")}.items():
        monkeypatch.setenv(k, v)
    # the run config's upload to the datastore is tested with Azurite (test_azureml_specs.py); not here
    monkeypatch.setattr("training.backends.azureml.upload_config", lambda config, uri, client=None: None)


def _aml_submit(tmp_path, client, **kw):
    from training.backends.azureml import AzureMLBackend

    return AzureMLBackend(ml_client=client).submit(SubmitOptions(gpu_run_config(tmp_path, "runs", steps=10), [], wait=False, **kw))


def test_azureml_submit_refuses_when_the_family_quota_is_short(aml_env, tmp_path):
    client = _ml_client()
    with pytest.raises(QuotaError) as e:
        _aml_submit(tmp_path, client, nodes=2)  # 2 x 4 vCPUs; the family has 8 - 4 = 4 left
    msg = str(e.value)
    assert "Standard NCASv3_T4 Family Cluster Dedicated vCPUs: needed 8 vCPUs, available 4 (limit 8, in use 4)" in msg
    assert "Regional" not in msg  # the regional total (92 left) is fine
    assert "--resource-name standardNCASv3_T4Family" in msg and "--resource-type dedicated" in msg
    assert f"/subscriptions/{SUB}/providers/Microsoft.MachineLearningServices/locations/{LOC}" in msg
    assert "value=12" in msg and "ml.azure.com/quota" in msg
    assert client.created == []  # no job created


def test_azureml_submit_goes_on_within_quota_and_skip_preflight_bypasses(aml_env, tmp_path):
    client = _ml_client()
    sub = _aml_submit(tmp_path, client, nodes=1)
    checks = {c["quota"]: c for c in sub.details["preflight"]["checks"]}
    assert checks["Standard NCASv3_T4 Family Cluster Dedicated vCPUs"]["available"] == 4
    assert checks["Total Cluster Dedicated Regional vCPUs"]["needed"] == 4
    assert checks["cluster gpu-cluster max_instances"]["ok"]
    assert len(client.created) == 1
    sub = _aml_submit(tmp_path, client, nodes=2, preflight=False)
    assert sub.details["preflight"] == "skipped (--skip-preflight)" and len(client.created) == 2


def test_azureml_low_priority_uses_the_pooled_quota_and_max_instances_is_checked(aml_env, tmp_path):
    from training.cloud.quota import azureml_preflight

    result = azureml_preflight(_ml_client(tier="low_priority"), "gpu-cluster", 4, workspace="ws")
    assert {c.quota for c in result.checks} == {"cluster gpu-cluster max_instances",
                                                "Total Cluster LowPriority Regional vCPUs"}
    assert all(c.ok for c in result.checks)
    result = azureml_preflight(_ml_client(tier="low_priority", max_instances=2), "gpu-cluster", 3, workspace="ws")
    (short,) = [c for c in result.checks if not c.ok]
    assert short.quota == "cluster gpu-cluster max_instances" and "--nodes 2" in short.request


def test_azureml_unknown_size_or_missing_quota_warns_and_goes_on(aml_env, tmp_path):
    from training.cloud.quota import azureml_preflight

    result = azureml_preflight(_ml_client(size="Standard_Made_Up"), "gpu-cluster", 1, workspace="ws")
    assert "not in the region's VM sizes" in result.warnings[0]
    result = azureml_preflight(_ml_client(usages=USAGES[:1]), "gpu-cluster", 1, workspace="ws")
    assert "no Azure ML quota entry" in result.warnings[0]
    client = _ml_client()
    client.compute.get = lambda name: (_ for _ in ()).throw(RuntimeError("ResourceNotFound"))
    sub = _aml_submit(tmp_path, client, nodes=1)
    assert "could not read cluster 'gpu-cluster'" in sub.details["preflight"]["warnings"][0]
    assert len(client.created) == 1


# -- SageMaker deploy (endpoint usage) -------------------------------------------------------------

PKG = f"arn:aws:sagemaker:{REGION}:123456789012:model-package/bccd-detector/2"


def _approved_version():
    from deployment.registry.base import ApprovalStatus, ModelVersion

    return ModelVersion("bccd-detector", "2", ApprovalStatus.APPROVED, "s3://detops-ml/runs/r1/export", "alice",
                        "2026-12-01T12:00:00Z", tags={"sagemaker:model_package_arn": PKG})


@pytest.fixture
def deploy_env(monkeypatch, no_cloud_credentials):
    monkeypatch.setenv("DETOPS_SM_ROLE_ARN", "arn:aws:iam::123456789012:role/detops-sagemaker-execution")
    monkeypatch.setenv("DETOPS_SM_CAPTURE_URI", "s3://detops-ml/capture/")
    monkeypatch.setenv("DETOPS_SM_INSTANCE_TYPE_SERVING", "ml.g4dn.xlarge")


def _package_approved(sm_stub) -> None:
    import datetime as dt

    sm_stub.add_response("describe_model_package", {
        "ModelPackageName": "bccd-detector", "ModelPackageArn": PKG, "ModelApprovalStatus": "Approved",
        "CreationTime": dt.datetime(2026, 12, 1, tzinfo=dt.UTC), "ModelPackageStatus": "Completed",
        "ModelPackageStatusDetails": {"ValidationStatuses": [], "ImageScanStatuses": []}}, {"ModelPackageName": PKG})


def test_sagemaker_deploy_refuses_when_the_endpoint_quota_is_short(deploy_env):
    from deployment.targets.sagemaker import SageMakerTarget

    sq, sq_stub, sm, sm_stub = _clients()
    with sq_stub, sm_stub:
        _package_approved(sm_stub)
        sq_stub.add_response("list_service_quotas", {"Quotas": [_quota("ml.g4dn.xlarge for endpoint usage", 0)]},
                             {"ServiceCode": "sagemaker"})
        sm_stub.add_response("list_endpoints", {"Endpoints": []}, {"StatusEquals": "InService"})
        with pytest.raises(QuotaError, match=r"ml.g4dn.xlarge for endpoint usage: needed 1 instances, available 0"):
            SageMakerTarget(sagemaker_client=sm, quotas_client=sq).deploy(_approved_version(), "bccd-prod")
        sm_stub.assert_no_pending_responses()  # nothing created: create_model was never called


def test_sagemaker_deploy_skip_preflight_creates_the_endpoint(deploy_env, monkeypatch):
    import datetime as dt
    import time

    from deployment.targets.sagemaker import SageMakerTarget

    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "120000")  # the new config: bccd-prod-v2-120000

    t = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    arn = f"arn:aws:sagemaker:{REGION}:123456789012:endpoint/bccd-prod"
    sq, sq_stub, sm, sm_stub = _clients()
    with sq_stub, sm_stub:  # no quota responses: a quota call would fail the test
        _package_approved(sm_stub)
        sm_stub.add_response("create_model", {"ModelArn": f"arn:aws:sagemaker:{REGION}:123456789012:model/m"})
        sm_stub.add_response("create_endpoint_config",
                             {"EndpointConfigArn": f"arn:aws:sagemaker:{REGION}:123456789012:endpoint-config/c"})
        sm_stub.add_client_error("describe_endpoint", "ValidationException", "Could not find endpoint")
        sm_stub.add_response("create_endpoint", {"EndpointArn": arn})
        for status in ("Creating", "InService", "InService"):  # waited for until InService on the new config
            sm_stub.add_response("describe_endpoint", {"EndpointName": "bccd-prod", "EndpointArn": arn,
                                                       "EndpointConfigName": "bccd-prod-v2-120000", "EndpointStatus": status,
                                                       "CreationTime": t, "LastModifiedTime": t})
        d = SageMakerTarget(sagemaker_client=sm, quotas_client=sq, preflight=False, wait_delay=0).deploy(_approved_version(), "bccd-prod")
    assert d.status == "InService" and d.details["preflight"] == "skipped (--skip-preflight)"


def test_deploy_cli_passes_skip_preflight_to_the_sagemaker_target(monkeypatch, no_cloud_credentials):
    from deployment import deploy as deploy_mod
    from deployment.targets.base import Deployment
    from detops.cli import main

    seen = []
    monkeypatch.setattr(deploy_mod, "deploy", lambda *a, **kw: seen.append(kw) or Deployment("sagemaker", "e", "m", "1", "x"))
    main(["deploy", "--target", "sagemaker", "--name", "m", "--version", "1", "--skip-preflight"])
    main(["deploy", "--target", "sagemaker", "--name", "m", "--version", "1"])
    assert seen[0].get("preflight") is False and "preflight" not in seen[1]
