"""``bash scripts/rehearse.sh azureml``: train.yml and release.yml job by job, each job with exactly its workflow's
environment and as its own Azure identity (scripts/rehearse_azure.py): Azurite behind Azure RBAC, the Azure ML
workspace of tests/ci/aml_fake.py, both checking every call against the Azure program's role assignments x
Microsoft's built-in role definitions. With ``REHEARSAL_CI=azure-devops`` the same for .azure-pipelines (each
job's linked variable groups and service connection, output variables between jobs).

- end to end, on both CI systems: every job passes, from the stack outputs to a smoke-tested endpoint and a
  rollback;
- put-back breaks (an assignment removed with ``--without``, or an edited copy of a workflow with
  ``--workflows``; no file of the checkout is edited) end the rehearsal at the first job that fails, with one line
  naming that job, its identity and the refused call or the failed step.

What the smoke test here cannot show: no serving container runs; the front door answers with the version of the
deployment taking the traffic (after checking the endpoint key). So this proves that the deployer may read the key,
that the smoke test checks which version answers, and that the endpoint's identity may read the model's files (the
deployment pulls them under RBAC and checks their digest), not that the image serves the model
(tests/cloud/test_containers.py runs the images).

One tiny training for the module: the first rehearsal keeps its trained run, every other one reuses it. Everything
runs in subprocesses (the Pulumi program under mocks included), so this file may run after tests that used asyncio.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cicd_helpers import AZURE_DIR, GITHUB_DIR, REPO, load_yaml

pytestmark = pytest.mark.slow
DATASETS = Path(os.environ.get("DETOPS_DATASETS") or REPO.parent / "shared" / "datasets")
JOBS = ["images/build as trainer", "train as trainer", "wait as trainer", "evaluate as trainer",
        "register as registrar", "release.yml:images/build as trainer", "release.yml:staging as deployer"]


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AZURE_", "AZUREML_", "DETOPS_", "MLFLOW_"))}
    env["DETOPS_DATASETS"] = str(DATASETS)
    return env


def _ran(stdout: str) -> list[str]:
    return [line.split("== job ", 1)[1].split(" (environment")[0] for line in stdout.splitlines()
            if line.startswith("== job ") and " as " in line]


@pytest.fixture(scope="module")
def github(tmp_path_factory):
    """``bash scripts/rehearse.sh azureml`` once, keeping its trained run."""
    base = tmp_path_factory.mktemp("azureml rehearsal")
    env = {**_clean_env(), "REHEARSAL_DIR": str(base / "work"), "REHEARSAL_KEEP_TRAINED": str(base / "trained")}
    r = subprocess.run(["bash", "scripts/rehearse.sh", "azureml"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=3600, check=False)
    (base / "rehearsal.log").write_text(r.stdout + "\n--- stderr ---\n" + r.stderr)
    return r, base


@pytest.fixture(scope="module")
def trained(github):
    r, base = github
    assert r.returncode == 0, "the end-to-end rehearsal failed: no trained run to reuse"
    return base / "trained"


def test_every_github_job_passes_as_its_own_azure_identity_to_a_smoke_tested_endpoint_and_a_rollback(github):
    r, base = github
    tail = r.stdout[-4000:] + "\n--- stderr ---\n" + r.stderr[-3000:]
    assert r.returncode == 0, tail
    assert "REHEARSAL PASSED (azureml, every job as its own identity): versions 1 and 2" in r.stdout, tail
    expected = [f"github:{'' if j.startswith('release.yml') else 'train.yml:'}{j}" for j in JOBS]
    assert _ran(r.stdout) == expected * 2
    assert "approved version 1 as approver" in r.stdout and "approved version 2 as approver" in r.stdout
    assert "version 2 failed its smoke test (version 1 answered) and was rolled back to 1" in r.stdout, tail
    work = base / "work"
    # every workspace call was checked, and allowed (the quota pre-flight's reads at subscription level aside:
    # refused, reported as a note, and the pre-flight warns)
    calls = [json.loads(line) for line in (work / "workspace" / "calls.jsonl").read_text().splitlines()]
    assert {c["principal"] for c in calls} == {"trainer", "registrar", "approver", "deployer", "serving"}
    assert all(c["allowed"] for c in calls if not c["operation"].startswith("compute.list_"))
    assert "note: trainer may not Microsoft.MachineLearningServices/locations/vmsizes/read" in r.stdout
    # the deployments pulled the model's files as the stack's serving identity, each a blob read on runs
    pulled = [c for c in calls if c["principal"] == "serving"]
    assert pulled and all(c["action"].endswith("/blobs/read") and "/containers/runs/blobs/" in c["scope"] for c in pulled)
    # every blob call went through its identity's RBAC proxy; the cloud job's steps as the cluster's identity
    blobs = [json.loads(line) for line in (work / "blob-calls.jsonl").read_text().splitlines()]
    assert {b["principal"] for b in blobs} >= {"trainer", "registrar", "approver", "deployer", "compute:gpu-cluster"}
    assert all(b["allowed"] for b in blobs)
    staging = sorted((work / "jobs").glob("*-github_release.yml_staging"))[-1]
    log = (staging / "log").read_text()
    assert "answered with model version 1, not 2" in log and '"rolled_back_from": "2"' in log


def test_every_azure_devops_job_passes_as_its_service_connection(tmp_path, trained):
    env = {**_clean_env(), "REHEARSAL_DIR": str(tmp_path / "work"), "REHEARSAL_TRAINED": str(trained),
           "REHEARSAL_CI": "azure-devops"}
    r = subprocess.run(["bash", "scripts/rehearse.sh", "azureml"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=3600, check=False)
    tail = r.stdout[-4000:] + "\n--- stderr ---\n" + r.stderr[-3000:]
    assert r.returncode == 0, tail
    assert "REHEARSAL PASSED (azureml, Azure DevOps, every job as its own identity): versions 1 and 2" in r.stdout, tail
    expected = ["train.yml:Images.Build as trainer", "train.yml:Train.Submit as trainer", "train.yml:Train.Wait as trainer",
                "train.yml:Train.Evaluate as trainer", "train.yml:Register.Register as registrar",
                "release.yml:Images.Build as trainer", "release.yml:Staging.Deploy as deployer"]
    assert _ran(r.stdout) == [f"azure-devops:{j}" for j in expected] * 2
    assert "version 2 failed its smoke test (version 1 answered) and was rolled back to 1" in r.stdout, tail
    # the Train.Submit job's output variables (##vso[task.setvariable ...]) reached the later jobs and stages
    register = next((tmp_path / "work" / "jobs").glob("*-azure-devops_train.yml_Register.Register"))
    names = {n for line in (register / "environ").read_text().splitlines() for n in json.loads(line)["names"]}
    assert {"RUN_DIR", "DETOPS_SERVING_IMAGE", "AZURE_CLIENT_ID"} <= names
    assert "DETOPS_AML_ENDPOINT" not in names  # the staging group's, not linked to the Register stage


def _broken(tmp_path, trained, *args: str, ci: str = "github") -> str:
    """The rehearsal with a put-back break; asserts it failed and returns its one ``REHEARSAL FAILED`` line."""
    r = subprocess.run([sys.executable, "scripts/rehearse_jobs.py", "--cloud", "azure", "--ci", ci, "--work",
                        str(tmp_path / "work"), "--datasets", str(DATASETS), "--trained", str(trained), *args],
                       cwd=REPO, env=_clean_env(), capture_output=True, text=True, timeout=3600, check=False)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("REHEARSAL FAILED: ")]
    return line.removeprefix("REHEARSAL FAILED: ")


def _edited(tmp_path, folder: Path, edit) -> Path:
    """A copy of train.yml and release.yml of ``folder`` with ``edit(docs)`` applied (the checkout untouched)."""
    docs = {name: load_yaml(folder / name) for name in ("train.yml", "release.yml")}
    edit(docs)
    out = tmp_path / "workflows"
    out.mkdir()
    for name, doc in docs.items():
        (out / name).write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def test_compute_cluster_without_write_on_runs_fails_the_azure_ml_jobs_steps(tmp_path, trained):
    message = _broken(tmp_path, trained, "--without", "compute:gpu-cluster:Storage Blob Data Contributor:runs")
    assert message.startswith("the Azure ML job's steps as compute:gpu-cluster: "), message
    assert "blobs/write on " in message and "/containers/runs/blobs/bccd/runs/" in message, message


def test_serving_identity_without_read_on_runs_fails_the_staging_deployment(tmp_path, trained):
    message = _broken(tmp_path, trained, "--without", "serving:Storage Blob Data Reader:runs")
    assert message.startswith("job github:release.yml:staging as deployer: blob.read "), message
    assert "/containers/runs/blobs/bccd/runs/" in message and "/export/" in message, message
    assert message.endswith("denied (serving)"), message


def test_release_yml_without_the_endpoint_identity_fails_the_staging_deployment(tmp_path, trained):
    """release.yml's staging job not mapping DETOPS_AML_ENDPOINT_IDENTITY (issue 30): the endpoint runs as its
    system-assigned identity, which holds no role, and cannot read the model."""
    def edit(docs):
        del docs["release.yml"]["jobs"]["staging"]["env"]["DETOPS_AML_ENDPOINT_IDENTITY"]

    message = _broken(tmp_path, trained, "--workflows", str(_edited(tmp_path, GITHUB_DIR, edit)))
    assert message.startswith("job github:release.yml:staging as deployer: blob.read "), message
    assert message.endswith("denied (endpoint:detopsdev-staging)"), message


def test_deployer_without_azureml_data_scientist_fails_the_staging_job(tmp_path, trained):
    message = _broken(tmp_path, trained, "--without", "deployer:AzureML Data Scientist")
    assert message.startswith("job github:release.yml:staging as deployer: "), message
    assert "Microsoft.MachineLearningServices/workspaces/" in message and message.endswith("denied (deployer)"), message


def test_azure_devops_register_stage_as_the_approver_is_refused(tmp_path, trained):
    """A pipeline whose Register stage signs in with another identity's service connection (the approver's, a
    Reader of the workspace with no role on the runs): the register job's first call is refused. (The trainer's
    connection would pass: the stack gives trainer, registrar and deployer AzureML Data Scientist on the workspace,
    which allows model writes; approval is guarded by the approval records instead, docs/contracts.md.)"""
    def edit(docs):
        stage = next(s for s in docs["train.yml"]["stages"] if s["stage"] == "Register")
        stage["jobs"][0]["steps"][1]["parameters"]["identity"] = "approver"

    message = _broken(tmp_path, trained, "--workflows", str(_edited(tmp_path, AZURE_DIR, edit)), ci="azure-devops")
    assert message.startswith("job azure-devops:train.yml:Register.Register as approver: "), message
    assert message.endswith("denied (approver)"), message


def test_azure_devops_staging_without_its_group_stops_on_the_unset_endpoint_name(tmp_path, trained):
    """The Staging stage without the detops-staging group (issue 30: `${ENDPOINT_NAME}` under `set -u`): the deploy
    script stops at the unset variable; the rehearsal names the job and the failed step."""
    def edit(docs):
        stage = next(s for s in docs["release.yml"]["stages"] if s["stage"] == "Staging")
        stage["variables"] = [v for v in stage["variables"] if v.get("group") != "detops-staging"]

    message = _broken(tmp_path, trained, "--workflows", str(_edited(tmp_path, AZURE_DIR, edit)), ci="azure-devops")
    # the deploy step failed, and so did the failure() path's rollback, which needs the same variable
    assert message.startswith("job azure-devops:release.yml:Staging.Deploy as deployer: "), message
    log = Path(message.rsplit("(log ", 1)[1].rstrip(")")).read_text()
    assert "ENDPOINT_NAME: unbound variable" in log


def test_trainer_without_acr_push_fails_the_images_job(tmp_path, trained):
    """The images job's pushes, which no registry here serves, checked against the trainer's role assignments."""
    message = _broken(tmp_path, trained, "--without", "trainer:AcrPush")
    assert message.startswith("job github:train.yml:images/build as trainer: acr.pull "), message  # az acr login
    assert "/providers/Microsoft.ContainerRegistry/registries/detopsdevacr" in message, message


def test_registrar_without_write_on_runs_fails_the_register_job(tmp_path, trained):
    """register writes the artifact manifest next to the export (export/detops-manifest.json) as the registrar."""
    message = _broken(tmp_path, trained, "--without", "registrar:Storage Blob Data Contributor:runs")
    assert message.startswith("job github:train.yml:register as registrar: "), message
    assert "blobs/write on " in message and "/export/detops-manifest.json denied (registrar)" in message, message
