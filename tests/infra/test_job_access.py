"""Every CI job, as its workflow file defines it, against the permissions of its own identity.

The jobs come from the workflow YAML (tests/ci/ci_jobs.py), each job's environment is the one its CI system
gives it (GitHub: only what its ``env:`` maps; Azure DevOps: its linked variable groups), and each request its
commands make with that environment (tests/ci/job_access.py) is evaluated against the inline policy of the
role the job assumes, from the AWS program under Pulumi's mocks. The put-back breaks below are ones a real
first deploy hit (issue 30): each makes the check fail with a line naming the job, the identity, the action
and the resource.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "ci"))

import ci_jobs  # noqa: E402
import job_access  # noqa: E402
from cicd_helpers import GITHUB_DIR, load_yaml  # noqa: E402

#: Who each job that logs in runs as (the human gate's reviewer approves with the approver identity, by hand).
EXPECTED_IDENTITY = {
    "github:images.yml:build": "trainer", "github:train.yml:images/build": "trainer",
    "github:train.yml:train": "trainer", "github:train.yml:wait": "trainer", "github:train.yml:evaluate": "trainer",
    "github:train.yml:register": "registrar", "github:release.yml:images/build": "trainer",
    "github:release.yml:staging": "deployer", "github:release.yml:production": "deployer",
    "azure-devops:train.yml:Images.Build": "trainer", "azure-devops:train.yml:Train.Submit": "trainer",
    "azure-devops:train.yml:Train.Wait": "trainer", "azure-devops:train.yml:Train.Evaluate": "trainer",
    "azure-devops:train.yml:Register.Register": "registrar", "azure-devops:release.yml:Images.Build": "trainer",
    "azure-devops:release.yml:Staging.Deploy": "deployer", "azure-devops:release.yml:Production.Deploy": "deployer",
    "person:docs/cicd.md:approve": "approver",
}
INFRA_IDENTITY = {"github:infra.yml:preview": "infra-reader", "github:infra.yml:up": "infra-deployer",
                  "azure-devops:infra.yml:Preview.Preview": "infra-reader", "azure-devops:infra.yml:Up.Up": "infra-deployer"}


@pytest.fixture(scope="module")
def azure():
    """``{"dev": AzureStack, "prod": AzureStack}``: role assignments x built-in role definitions."""
    return {name: job_access.AzureStack(name) for name in ("dev", "prod")}


@pytest.fixture(scope="module")
def aws():
    """``{"dev": Stack, "prod": Stack}``."""
    return {name: job_access.AwsStack(name) for name in ("dev", "prod")}


def github_job(workflow: str, name: str, edit=None) -> ci_jobs.Job:
    """A GitHub job read from ``workflow``'s YAML, after ``edit(doc)`` changed a copy of the parsed file."""
    doc = copy.deepcopy(load_yaml(GITHUB_DIR / workflow))
    if edit:
        edit(doc)
    (found,) = [j for j in ci_jobs._github_jobs(workflow, doc) if j.name == name]
    return found


def test_every_job_of_every_workflow_is_listed_with_its_identity(aws) -> None:
    listed = {j.key: job_access_identity(aws, j) for j in ci_jobs.jobs() + job_access.person_jobs()}
    assert {k: v for k, v in listed.items() if v is not None} == {**EXPECTED_IDENTITY, **INFRA_IDENTITY}
    assert {k for k, v in listed.items() if v is None} >= {"github:ci.yml:test", "azure-devops:train.yml:Review.Validate"}


def job_access_identity(aws, job: ci_jobs.Job) -> str | None:
    return aws[job_access.stack_of(job)].access(job).identity


@pytest.mark.parametrize("key", sorted(EXPECTED_IDENTITY))
def test_no_job_needs_a_permission_its_identity_lacks(aws, key: str) -> None:
    job = {j.key: j for j in job_access.person_jobs()}.get(key) or ci_jobs.job(key)
    result = aws[job_access.stack_of(job)].access(job)
    assert result.requests, f"{key}: no request checked"
    assert [str(d) for d in result.denials] == []


def only_denials(result: job_access.JobAccess) -> list[str]:
    return [str(d) for d in result.denials]


def test_a_trainer_without_list_model_packages_fails_the_evaluate_job(aws) -> None:
    policies = copy.deepcopy(aws["dev"].policies)
    for statement in policies["trainer"]["Statement"]:
        if "sagemaker:ListModelPackages" in statement["Action"]:
            statement["Action"].remove("sagemaker:ListModelPackages")
    denials = only_denials(aws["dev"].access(ci_jobs.job("github:train.yml:evaluate"), policies))
    assert denials and all(d.startswith("job github:train.yml:evaluate as trainer: sagemaker:ListModelPackages on *")
                           for d in denials), denials


def test_train_yml_without_the_name_prefix_names_a_job_the_trainer_may_not_create(aws) -> None:
    job = github_job("train.yml", "train", lambda doc: doc["env"].pop("DETOPS_SM_NAME_PREFIX"))
    denials = only_denials(aws["dev"].access(job))
    assert any("sagemaker:CreateTrainingJob on arn:aws:sagemaker:eu-west-1:123456789012:training-job/detops-bccd-" in d
               for d in denials), denials


def test_train_yml_without_the_instance_type_asks_for_an_instance_type_the_trainer_may_not_use(aws) -> None:
    job = github_job("train.yml", "train", lambda doc: doc["env"].pop("DETOPS_SM_INSTANCE_TYPE"))
    denials = aws["dev"].access(job).denials  # both submit commands of the step (with and without --set)
    assert {(d.request.action, *d.request.context["sagemaker:InstanceTypes"]) for d in denials} == {
        ("sagemaker:CreateTrainingJob", "ml.g5.xlarge")}


def test_an_images_job_whose_role_pushes_only_the_training_repository_fails_on_the_serving_image(aws) -> None:
    policies = copy.deepcopy(aws["dev"].policies)
    (push,) = [s for s in policies["trainer"]["Statement"] if s.get("Sid") == "PushImages"]
    push["Resource"] = [r for r in push["Resource"] if r.endswith("/training")]
    denials = only_denials(aws["dev"].access(ci_jobs.job("github:train.yml:images/build"), policies))
    assert denials and all("repository/detops-dev/serving" in d for d in denials), denials


def test_a_release_job_in_the_registration_environment_may_not_deploy(aws) -> None:
    job = github_job("release.yml", "staging", lambda doc: doc["jobs"]["staging"].update(environment="model-registration"))
    result = aws["dev"].access(job)
    assert result.identity == "registrar"
    assert any(": sagemaker:CreateModel on " in d for d in only_denials(result))


def test_a_release_job_without_the_registry_uri_names_the_missing_setting(aws) -> None:
    job = github_job("release.yml", "staging", lambda doc: doc["env"].pop("DETOPS_SM_REGISTRY_URI"))
    denials = only_denials(aws["dev"].access(job))
    assert any("setting on models" in d and "DETOPS_SM_REGISTRY_URI" in d for d in denials), denials


def test_an_azure_devops_job_whose_groups_give_another_role_than_its_service_connection_is_refused(aws) -> None:
    job = ci_jobs.job("azure-devops:train.yml:Register.Register")
    wrong = ci_jobs.Job(**{**job.__dict__, "groups": ("detops-common", "detops-training")})
    (first, *_) = aws["dev"].access(wrong).denials
    assert "service connection is detops-sagemaker-registrar but its variable groups' AWS_ROLE_ARN is the trainer role" in str(first)


@pytest.mark.parametrize("key", sorted(EXPECTED_IDENTITY))
def test_no_job_needs_an_azure_permission_its_identities_lack(azure, key: str) -> None:
    """The job's own identity, and the compute cluster's / endpoint's managed identities Azure ML uses for
    the job's and the deployment's data access."""
    job = {j.key: j for j in job_access.person_jobs()}.get(key) or ci_jobs.job(key)
    result = azure[job_access.stack_of(job)].access(job)
    assert result.identity == EXPECTED_IDENTITY[key]
    assert result.requests, f"{key}: no request checked"
    assert [str(d) for d in result.denials] == []


@pytest.mark.parametrize(("key", "principal", "role", "container", "denied"), [
    # the gate asks which version is Approved: the approval records
    ("github:train.yml:evaluate", "trainer", "Storage Blob Data Reader", "approvals",
     "job github:train.yml:evaluate as trainer: Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read on "),
    # submit uploads the run config into the run folder itself
    ("github:train.yml:train", "trainer", "Storage Blob Data Contributor", "runs", "/containers/runs/blobs/bccd/runs/"),
    # the job's steps read the datasets as the cluster's managed identity
    ("azure-devops:train.yml:Train.Submit", "compute:gpu-cluster", "Storage Blob Data Reader", "datasets",
     "as compute:gpu-cluster: Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read on "),
    # the endpoint pulls the registered files from the run's export/ folder as the serving identity
    ("github:release.yml:staging", "serving", "Storage Blob Data Reader", "runs", "as serving: "),
    ("github:release.yml:staging", "deployer", "AzureML Data Scientist", None, "onlineEndpoints/deployments/write"),
])
def test_a_removed_azure_role_assignment_fails_the_job_that_needs_it(azure, key, principal, role, container, denied) -> None:
    job = ci_jobs.job(key)
    denials = only_denials(azure["dev"].access(job, azure["dev"].without(principal, role, container)))
    assert any(denied in d for d in denials), denials


def test_the_docs_table_is_generated_from_the_same_source() -> None:
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "job_access.py"), "--check"],
                       capture_output=True, text=True, cwd=REPO, check=False, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]


def test_a_stale_docs_table_is_reported(aws, azure) -> None:
    text = (REPO / "docs" / "cicd.md").read_text(encoding="utf-8")
    body = job_access.docs_body(aws, azure)
    assert job_access.replace_section(text, body) == text
    assert job_access.replace_section(text, body.replace("| registrar |", "| trainer |")) != text


def test_the_endpoint_identity_reads_the_export_folders_of_runs_and_nothing_else(azure) -> None:
    job = job_access.AzureJob({"AZUREML_WORKSPACE": "ws"}, azure["dev"].outputs)
    runs = job.container("runs")
    check = azure["dev"].rbac.check
    read = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"
    assert check("serving", read, f"{runs}/blobs/bccd/runs/r1/export/model.tflite").allowed
    assert not check("serving", read, f"{runs}/blobs/bccd/runs/r1/tf_records/train-00000.tfrecord").allowed
    assert not check("serving", "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write",
                     f"{runs}/blobs/bccd/runs/r1/export/model.tflite").allowed
