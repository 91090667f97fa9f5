"""Every Azure ML entity detops builds round-trips through azure-ai-ml's own loaders and validation.

Jobs: the pipeline job and its four standalone command jobs (``load_job`` + ``_validate``), compared
with golden YAML (normalized: no machine paths). Endpoints and deployments, managed and
Kubernetes (AKS-attached): ``load_online_endpoint`` / ``load_online_deployment``. Blue/green
traffic shifting against an in-memory stand-in of ``MLClient`` that round-trips every entity it is
given through those loaders (no Azure is reachable here).
Regenerate golden files with ``DETOPS_UPDATE_GOLDEN=1``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deployment.registry.base import ApprovalStatus, ModelVersion

GOLDEN = Path(__file__).parent / "golden"
RUN_ID = "20261122T120000-abc123"


def _check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("DETOPS_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"golden file {path} missing; run with DETOPS_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name} differs from its golden file"


@pytest.fixture
def aml_env(monkeypatch, no_cloud_credentials):
    monkeypatch.setenv("DETOPS_TRAINING_IMAGE", "detopsacr.azurecr.io/detops-training:0.1.0-gpu")
    monkeypatch.setenv("DETOPS_AML_COMPUTE", "gpu-cluster")
    monkeypatch.setenv("DETOPS_AML_DATASTORE", "detopsdata")
    monkeypatch.setenv("DETOPS_DATASETS", "/somewhere/on/this/machine")


def test_pipeline_and_step_jobs_roundtrip_and_match_golden(aml_env, tmp_path):
    from azure.ai.ml import load_job
    from azure.ai.ml.entities import PipelineJob

    from training.backends import SubmitOptions
    from training.backends.azureml import AzureMLBackend

    root = Path(__file__).resolve().parents[2]
    sub = AzureMLBackend().submit(SubmitOptions(root / "configs" / "bccd.yaml", ["train.steps=300", "train.batch_size=16"],
                                                dry_run=True, out_dir=tmp_path / "specs out", nodes=2, run_id=RUN_ID))
    assert sub.run_url == f"azureml://datastores/detopsdata/paths/bccd/runs/{RUN_ID}/"
    assert set(sub.specs) == {"pipeline", "prepare", "train", "evaluate", "export"}
    for name, path in sub.specs.items():
        text = Path(path).read_text()
        assert str(tmp_path) not in text and "/somewhere/on/this/machine" not in text  # no machine paths
        job = load_job(path)
        if isinstance(job, PipelineJob):
            assert job._validate().passed
        else:
            job._to_job()._validate()  # raises on an undefined ${{inputs.x}}, missing env or command
        _check_golden(f"azureml_{name}.yaml", text)
    pipeline = load_job(sub.specs["pipeline"])
    assert pipeline.settings.default_compute in ("gpu-cluster", "azureml:gpu-cluster")
    train = pipeline.jobs["train"]
    assert train.distribution.type == "tensorflow" and train.distribution.worker_count == 2
    assert train.resources.instance_count == 2
    assert pipeline.jobs["export"].command == "detops run --run-dir ${{outputs.run}} --stage export"
    assert pipeline.jobs["train"].environment_variables["DETOPS_RUN_ID"] == RUN_ID
    for step in ("prepare", "train", "evaluate"):
        assert pipeline.jobs[step].outputs["run"].path == sub.run_url
    assert pipeline.outputs["run"].path == sub.run_url  # export writes the pipeline's output: the same folder
    # the copied config referenced by the spec is the one given
    assert (tmp_path / "specs out" / "azureml" / "inputs" / "bccd.yaml").read_text() == (root / "configs" / "bccd.yaml").read_text()


def test_undefined_input_is_caught_by_azure_validation(aml_env):
    from azure.ai.ml import Input, command
    from azure.ai.ml.entities import Environment

    from training.backends.azureml import validate_job
    from training.errors import ConfigError

    bad = command(command="detops train --run-dir ${{inputs.rn}}", inputs={"run": Input(type="uri_folder", path="azureml://datastores/d/paths/r/")},
                  environment=Environment(image="a.azurecr.io/b:1"), compute="c")._to_job()
    with pytest.raises(ConfigError, match="rn"):
        validate_job(bad)


def _mv(version: str) -> ModelVersion:
    return ModelVersion("bccd-detector", version, ApprovalStatus.APPROVED, "azureml://x", "alice", "2026-11-22")


@pytest.mark.parametrize("compute", ["managed", "aks-inference"])
def test_endpoint_and_deployment_roundtrip(compute, tmp_path, monkeypatch):
    from azure.ai.ml import load_online_deployment, load_online_endpoint

    from deployment.targets.azureml import AzureMLTarget

    monkeypatch.setenv("DETOPS_AML_DEPLOY_COMPUTE", compute)
    monkeypatch.setenv("DETOPS_SERVING_IMAGE", "detopsacr.azurecr.io/detops-serving:0.1.0")
    paths = AzureMLTarget().dump_specs(_mv("3"), "bccd-prod", tmp_path / "specs", color="green")
    ep = load_online_endpoint(paths["endpoint"])
    dep = load_online_deployment(paths["deployment"])
    kind = "Kubernetes" if compute != "managed" else "Managed"
    assert type(ep).__name__ == f"{kind}OnlineEndpoint" and type(dep).__name__ == f"{kind}OnlineDeployment"
    assert ep.auth_mode == "key"
    if compute != "managed":
        assert ep.compute.endswith("aks-inference")
    assert dep.app_insights_enabled is True
    assert set(dep.data_collector.collections) == {"request", "response"}
    assert all(c.enabled == "true" for c in dep.data_collector.collections.values())
    assert str(dep.model).removeprefix("azureml:") == "bccd-detector:3" and dep.name == "green"
    cfg = dep.environment.inference_config
    assert dict(cfg.scoring_route) == {"port": 8080, "path": "/score"}
    assert cfg.readiness_route["path"] == "/readyz" and cfg.liveness_route["path"] == "/healthz"
    _check_golden(f"azureml_endpoint_{compute}.yaml", Path(paths["endpoint"]).read_text())
    _check_golden(f"azureml_deployment_{compute}.yaml", Path(paths["deployment"]).read_text())


class _Poller:
    def __init__(self, value=None):
        self.value = value

    def result(self):
        return self.value


class FakeMLClient:
    """In-memory online endpoints/deployments. Every entity handed to it is dumped to YAML and loaded
    back with azure-ai-ml's loaders first, as the service would reject what the schema rejects."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.endpoints: dict = {}
        self.deployments: dict = {}
        self.calls: list[str] = []
        outer = self

        class Endpoints:
            def get(self, name):
                from azure.core.exceptions import ResourceNotFoundError

                if name not in outer.endpoints:
                    raise ResourceNotFoundError(f"endpoint {name} not found")
                return outer.endpoints[name]

            def begin_create_or_update(self, ep):
                import json

                import yaml
                from azure.ai.ml import load_online_endpoint

                p = outer.folder / f"ep-{len(outer.calls)}.yaml"
                p.write_text(yaml.safe_dump(json.loads(json.dumps(ep.dump()))))
                loaded = load_online_endpoint(p)
                loaded._provisioning_state = "Succeeded"  # set by the service on a real endpoint
                outer.endpoints[ep.name] = loaded
                outer.calls.append(f"endpoint {ep.name} traffic={dict(loaded.traffic or {})}")
                return _Poller(loaded)

        class Deployments:
            def get(self, name, endpoint_name):
                return outer.deployments[(endpoint_name, name)]

            def begin_create_or_update(self, dep):
                from azure.ai.ml import load_online_deployment

                p = outer.folder / f"dep-{len(outer.calls)}.yaml"
                dep.dump(str(p))
                loaded = load_online_deployment(p)
                outer.deployments[(dep.endpoint_name, dep.name)] = loaded
                outer.calls.append(f"deployment {dep.name} {loaded.model}")
                return _Poller(loaded)

        self.online_endpoints = Endpoints()
        self.online_deployments = Deployments()


def test_blue_green_traffic_shift_and_rollback(tmp_path, monkeypatch):
    from deployment.targets.azureml import AzureMLTarget

    monkeypatch.setenv("DETOPS_SERVING_IMAGE", "detopsacr.azurecr.io/detops-serving:0.1.0")
    client = FakeMLClient(tmp_path)

    class Approved:  # the registry's answer (its records: tests/cloud/test_azureml_registry.py)
        def require_approved(self, name, version):
            return _mv(version)

    target = AzureMLTarget(ml_client=client, approvals=Approved())
    assert target.describe("bccd-prod") is None

    d1 = target.deploy(_mv("1"), "bccd-prod")
    assert d1.details["color"] == "blue" and client.endpoints["bccd-prod"].traffic == {"blue": 100}
    d2 = target.deploy(_mv("2"), "bccd-prod")
    assert d2.details["color"] == "green"
    assert client.endpoints["bccd-prod"].traffic == {"green": 100, "blue": 0}
    assert str(client.deployments[("bccd-prod", "blue")].model).endswith("bccd-detector:1")  # kept for rollback
    now = target.describe("bccd-prod")
    assert (now.model_version, now.details["color"]) == ("2", "green")

    n_deployments = sum(c.startswith("deployment") for c in client.calls)
    back = target.rollback(_mv("1"), "bccd-prod")
    assert back.details["rollback"] == "traffic shift"
    assert client.endpoints["bccd-prod"].traffic == {"blue": 100, "green": 0}
    assert sum(c.startswith("deployment") for c in client.calls) == n_deployments  # no redeploy
    assert target.describe("bccd-prod").model_version == "1"

    d3 = target.deploy(_mv("3"), "bccd-prod")  # replaces the idle colour (green, v2)
    assert d3.details["color"] == "green" and client.endpoints["bccd-prod"].traffic == {"green": 100, "blue": 0}
    assert str(client.deployments[("bccd-prod", "green")].model).endswith("bccd-detector:3")


def test_azureml_dry_run_deploy_needs_no_credentials(no_cloud_credentials):
    from deployment.targets.azureml import AzureMLTarget

    d = AzureMLTarget().deploy(_mv("4"), "bccd-prod", dry_run=True)
    assert d.status == "planned"
    assert "auth_mode: key" in d.details["specs"]["endpoint"]
    assert "app_insights_enabled: true" in d.details["specs"]["deployment"]


def test_submit_uploads_the_run_config_into_the_run_folder_and_reads_the_stack_datasets(azure_env, monkeypatch, tmp_path):
    """The trainer may write the runs container only: submit puts the config there itself (azure-ai-ml would
    upload a local file to the workspace's default datastore), the job reads the stack's datasets container
    (DETOPS_DATASETS=az://datasets/...) and every step runs as the compute cluster's managed identity.
    Azurite stands in for the storage account; what it cannot show is Azure RBAC on these writes
    (tests/infra/test_job_access.py checks the roles)."""
    import contextlib

    from azure.core.exceptions import ResourceExistsError
    from azure.storage.blob import BlobServiceClient

    from training.backends import SubmitOptions
    from training.backends.azureml import AzureMLBackend

    with contextlib.suppress(ResourceExistsError):  # Azurite is shared by the session's tests
        BlobServiceClient.from_connection_string(azure_env).create_container("runs")
    for k, v in {"AZURE_SUBSCRIPTION_ID": "sub", "AZURE_RESOURCE_GROUP": "rg", "AZUREML_WORKSPACE": "ws",
                 "DETOPS_TRAINING_IMAGE": "detopsacr.azurecr.io/detops-training@sha256:" + "0" * 64,
                 "DETOPS_AML_DATASTORE": "runs_store", "DETOPS_AML_DATASTORE_CONTAINER": "runs",
                 "AZURE_STORAGE_ACCOUNT_NAME": "devstoreaccount1", "DETOPS_DATASETS": "az://datasets"}.items():
        monkeypatch.setenv(k, v)
    created = []
    client = type("Client", (), {"jobs": type("Jobs", (), {"create_or_update": lambda self, job: created.append(job) or job})()})()
    root = Path(__file__).resolve().parents[2]
    sub = AzureMLBackend(ml_client=client).submit(
        SubmitOptions(root / "configs" / "bccd.yaml", [], dry_run=False, wait=False, preflight=False, run_id=RUN_ID))
    blob = BlobServiceClient.from_connection_string(azure_env).get_blob_client("runs", f"bccd/runs/{RUN_ID}/inputs/bccd.yaml")
    assert blob.download_blob().readall() == (root / "configs" / "bccd.yaml").read_bytes()
    (job,) = created
    assert job.inputs["config"].path == f"azureml://datastores/runs_store/paths/bccd/runs/{RUN_ID}/inputs/bccd.yaml"
    assert job.inputs["datasets"].path == "https://devstoreaccount1.blob.core.windows.net/datasets/"
    assert {type(node.identity).__name__ for node in job.jobs.values()} == {"ManagedIdentityConfiguration"}
    assert sub.run_url == f"azureml://datastores/runs_store/paths/bccd/runs/{RUN_ID}/"


def test_a_config_upload_the_identity_cannot_make_stops_submit_before_any_job(azure_env, monkeypatch, tmp_path):
    from training.backends import SubmitOptions
    from training.backends.azureml import AzureMLBackend
    from training.errors import BackendError

    for k, v in {"AZURE_SUBSCRIPTION_ID": "sub", "AZURE_RESOURCE_GROUP": "rg", "AZUREML_WORKSPACE": "ws",
                 "DETOPS_TRAINING_IMAGE": "detopsacr.azurecr.io/detops-training@sha256:" + "0" * 64,
                 "DETOPS_AML_DATASTORE": "runs_store", "DETOPS_AML_DATASTORE_CONTAINER": "no-such-container",
                 "AZURE_STORAGE_ACCOUNT_NAME": "devstoreaccount1"}.items():
        monkeypatch.setenv(k, v)
    created = []
    client = type("Client", (), {"jobs": type("Jobs", (), {"create_or_update": lambda self, job: created.append(job) or job})()})()
    root = Path(__file__).resolve().parents[2]
    with pytest.raises(BackendError, match=f"uploading the run config to azureml://datastores/runs_store/paths/bccd/runs/{RUN_ID}/inputs/bccd.yaml"):
        AzureMLBackend(ml_client=client).submit(
            SubmitOptions(root / "configs" / "bccd.yaml", [], dry_run=False, wait=False, preflight=False, run_id=RUN_ID))
    assert created == []


def test_az_datasets_need_the_storage_account():
    from training.backends.azureml import blob_url
    from training.errors import ConfigError

    assert blob_url("az://datasets/bccd", "acct") == "https://acct.blob.core.windows.net/datasets/bccd/"
    with pytest.raises(ConfigError, match="AZURE_STORAGE_ACCOUNT_NAME"):
        blob_url("az://datasets", None)


@pytest.mark.parametrize("compute", ["managed", "aks-inference"])
def test_the_endpoint_runs_as_the_stack_serving_identity(compute, tmp_path, monkeypatch):
    """DETOPS_AML_ENDPOINT_IDENTITY (a stack output) attaches the serving identity, which the stack lets pull
    the model files (runs/*/export/*) and the image; without it Azure ML gives the endpoint a system identity
    that no role assignment of the stack names."""
    from azure.ai.ml import load_online_endpoint

    from deployment.targets.azureml import AzureMLTarget

    identity = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/detopsdev-serving"
    monkeypatch.setenv("DETOPS_AML_DEPLOY_COMPUTE", compute)
    monkeypatch.setenv("DETOPS_SERVING_IMAGE", "detopsacr.azurecr.io/detops-serving:0.1.0")
    monkeypatch.setenv("DETOPS_AML_ENDPOINT_IDENTITY", identity)
    ep = load_online_endpoint(AzureMLTarget().dump_specs(_mv("3"), "bccd-prod", tmp_path / "specs", color="green")["endpoint"])
    assert ep.identity.type == "user_assigned"
    assert [i.resource_id for i in ep.identity.user_assigned_identities] == [identity]
