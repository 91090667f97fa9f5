"""``bash scripts/rehearse.sh sagemaker``: train.yml and release.yml job by job, each job with exactly its
workflow's environment and as its own AWS role on a moto server that enforces IAM (scripts/rehearse_jobs.py).
Azure (GitHub Actions and Azure DevOps): tests/ci/test_rehearsal_azure.py.

- end to end: every job passes, from the stack outputs to a smoke-tested endpoint and a rollback;
- put-back breaks, each injected into :func:`rehearse_jobs.rehearse` (a copy of the parsed workflow, or the policy
  documents it loads into moto; no file is edited), end the rehearsal at the first job that fails, with one line
  naming that job, its role, and the denied action and resource.

What the smoke test here cannot show: no serving container runs on moto; InvokeEndpoint answers what the
rehearsal queued (a detection naming the version it deployed), so this proves that the deployer may call the
endpoint and that the smoke test checks which version answers, not that the image serves the model.

The break tests reuse the run the end-to-end rehearsal trained (``--keep-trained`` / ``--trained``): one tiny
training for the module.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cicd_helpers import GITHUB_DIR, REPO, load_yaml

pytestmark = pytest.mark.slow
DATASETS = Path(os.environ.get("DETOPS_DATASETS") or REPO.parent / "shared" / "datasets")


def _driver():
    """scripts/rehearse_jobs.py as a module, loaded once (scripts/rehearse_azure.py imports the same one)."""
    if "rehearse_jobs" in sys.modules:
        return sys.modules["rehearse_jobs"]
    spec = importlib.util.spec_from_file_location("rehearse_jobs", REPO / "scripts" / "rehearse_jobs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["rehearse_jobs"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """``bash scripts/rehearse.sh sagemaker`` once (keeping its trained run); its result and folders."""
    base = tmp_path_factory.mktemp("sagemaker rehearsal")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AZURE_", "DETOPS_", "MLFLOW_"))}
    env.update(REHEARSAL_DIR=str(base / "work"), REHEARSAL_KEEP_TRAINED=str(base / "trained"),
               DETOPS_DATASETS=os.environ.get("DETOPS_DATASETS", str(REPO.parent / "shared" / "datasets")))
    r = subprocess.run(["bash", "scripts/rehearse.sh", "sagemaker"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=3600, check=False)
    (base / "rehearsal.log").write_text(r.stdout + "\n--- stderr ---\n" + r.stderr)
    return r, base


def test_every_job_passes_as_its_own_role_to_a_smoke_tested_endpoint_and_a_rollback(rehearsal):
    r, base = rehearsal
    tail = r.stdout[-4000:] + "\n--- stderr ---\n" + r.stderr[-3000:]
    assert r.returncode == 0, tail
    assert "REHEARSAL PASSED (sagemaker, every job as its own role): versions 1 and 2" in r.stdout, tail
    expected = ["github:train.yml:images/build as trainer", "github:train.yml:train as trainer",
                "github:train.yml:wait as trainer", "github:train.yml:evaluate as trainer",
                "github:train.yml:register as registrar", "github:release.yml:images/build as trainer",
                "github:release.yml:staging as deployer"]
    ran = [line.split("== job ", 1)[1].split(" (environment")[0] for line in r.stdout.splitlines() if line.startswith("== job ") and " as " in line]
    assert ran == expected * 2, ran  # two candidates, each trained, registered, released in the workflows' order
    for v in (1, 2):  # a person's Identity Center session approves; the approver role's CI session is refused
        assert (f"approver-bob@example.com (an Identity Center session) approved version {v}; the approver role's "
                "CI session was refused") in r.stdout, tail
    assert "version 2 failed its smoke test (version 1 answered) and was rolled back to 1" in r.stdout, tail
    assert "detops train: done" in r.stdout and (base / "trained" / "run.json").exists()  # trained once, kept
    # the second release's staging job: the smoke test refused version 1's answer, the failure() step rolled back
    staging = sorted((base / "work" / "jobs").glob("*-github_release.yml_staging"))[-1]
    log = (staging / "log").read_text()
    assert "answered with model version 1, not 2" in log and '"rolled_back_from": "2"' in log


def test_every_azure_devops_job_passes_as_its_service_connections_role(tmp_path, trained):
    """.azure-pipelines/train.yml and release.yml on AWS: each job sees its linked variable groups, runs the
    cloud-sagemaker template's script (the service connection's OIDC token as its role's web identity) as the role
    of its ``identity:``, and reads the output variables of the jobs before it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AZURE_", "DETOPS_", "MLFLOW_"))}
    env.update(REHEARSAL_DIR=str(tmp_path / "work"), REHEARSAL_TRAINED=str(trained), REHEARSAL_CI="azure-devops",
               DETOPS_DATASETS=str(DATASETS))
    r = subprocess.run(["bash", "scripts/rehearse.sh", "sagemaker"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=3600, check=False)
    tail = r.stdout[-4000:] + "\n--- stderr ---\n" + r.stderr[-3000:]
    assert r.returncode == 0, tail
    assert "REHEARSAL PASSED (sagemaker, Azure DevOps, every job as its own role): versions 1 and 2" in r.stdout, tail
    ran = [line.split("== job ", 1)[1].split(" (environment")[0] for line in r.stdout.splitlines() if line.startswith("== job ") and " as " in line]
    expected = ["train.yml:Images.Build as trainer", "train.yml:Train.Submit as trainer", "train.yml:Train.Wait as trainer",
                "train.yml:Train.Evaluate as trainer", "train.yml:Register.Register as registrar",
                "release.yml:Images.Build as trainer", "release.yml:Staging.Deploy as deployer"]
    assert ran == [f"azure-devops:{j}" for j in expected] * 2, ran
    assert "version 2 failed its smoke test (version 1 answered) and was rolled back to 1" in r.stdout, tail


def test_a_job_sees_only_what_its_workflow_maps(rehearsal):
    """Each step of the register job saw the names train.yml maps for it (workflow, job, step ``env:``), the
    GITHUB_ENV lines of earlier steps, the runner's and the login's variables, and nothing else: not every CI
    variable of its environment (the old rehearsal's ``set -a``)."""
    import json

    driver = _driver()
    r, base = rehearsal
    assert r.returncode == 0
    job = next(j for j in driver.workflow_jobs({"train.yml": load_yaml(GITHUB_DIR / "train.yml")}, "train.yml")
               if j.name == "register")
    given = {"PATH", "HOME", "GITHUB_OUTPUT", "GITHUB_ENV", "RUNNER_TEMP", "GITHUB_REPOSITORY", "GITHUB_RUN_ID",
             "DETOPS_HOME", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ACCESS_KEY_ID",
             "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
    folder = sorted((base / "work" / "jobs").glob("*-github_train.yml_register"))[0]
    seen = [json.loads(line) for line in (folder / "environ").read_text().splitlines()]
    steps = {s.name: s for s in job.steps}
    assert [s["step"] for s in seen] == [s.name for s in job.steps if s.when == "success" and "setup.sh" not in s.script]
    for entry in seen:
        later = {"DETOPS_REVIEWER"} if entry["step"].startswith("Register") or entry["step"].startswith("Show") else set()
        assert set(entry["names"]) == set(job.env) | set(steps[entry["step"]].env) | given | later, entry["step"]
    assert "DETOPS_SERVING_REPOSITORY" not in seen[0]["names"]  # a CI variable of the environment, not mapped here


def _without(policy: dict, action: str) -> dict:
    """``policy`` with ``action`` taken out of every statement (a statement left with no action is dropped)."""
    out = copy.deepcopy(policy)
    kept = []
    for statement in out["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        statement["Action"] = [a for a in actions if a != action]
        if statement["Action"]:
            kept.append(statement)
    out["Statement"] = kept
    assert kept != policy["Statement"], f"{action} is in no statement"
    return out


def _broken(driver, tmp_path, trained, **changes):
    with pytest.raises(driver.RehearsalFailed) as info:
        driver.rehearse(tmp_path / "work", trained=trained, datasets=DATASETS, **changes)
    return str(info.value)


@pytest.fixture(scope="module")
def policies():
    """The inline policy documents the AWS program gives its roles, by purpose."""
    driver = _driver()
    return driver.iam_moto.stack_policies(driver.stack_run())


@pytest.fixture
def trained(rehearsal):
    r, base = rehearsal
    assert r.returncode == 0, "the end-to-end rehearsal failed: no trained run to reuse"
    return base / "trained"


def test_trainer_without_list_model_packages_fails_the_evaluate_job(tmp_path, trained, policies):
    driver = _driver()
    broken = {**policies, "trainer": _without(policies["trainer"], "sagemaker:ListModelPackages")}
    message = _broken(driver, tmp_path, trained, policies=broken)
    assert message == "job github:train.yml:evaluate as trainer: sagemaker:ListModelPackages on * denied", message


def test_train_yml_without_the_name_prefix_fails_the_train_job(tmp_path, trained):
    """train.yml's env not mapping DETOPS_SM_NAME_PREFIX (issue 30): submit names the job outside the
    trainer's ``training-job/<prefix>-*``."""
    driver = _driver()
    docs = {name: load_yaml(GITHUB_DIR / name) for name in driver.WORKFLOWS}
    broken = copy.deepcopy(docs)
    del broken["train.yml"]["env"]["DETOPS_SM_NAME_PREFIX"]
    message = _broken(driver, tmp_path, trained, docs=broken)
    assert message.startswith("job github:train.yml:train as trainer: sagemaker:CreateTrainingJob on "
                              "arn:aws:sagemaker:eu-west-1:123456789012:training-job/detops-bccd-"), message
    assert message.endswith(" denied"), message


def test_deployer_without_create_endpoint_config_fails_the_staging_job(tmp_path, trained, policies):
    driver = _driver()
    broken = {**policies, "deployer": _without(policies["deployer"], "sagemaker:CreateEndpointConfig")}
    message = _broken(driver, tmp_path, trained, policies=broken)
    assert message.startswith("job github:release.yml:staging as deployer: sagemaker:CreateEndpointConfig on "
                              "arn:aws:sagemaker:eu-west-1:123456789012:endpoint-config/detops-dev-staging"), message


def test_trainer_without_ecr_put_image_fails_the_images_job(tmp_path, trained, policies):
    """The images job's pushes, which moto does not serve, checked with iam_eval against the trainer's policy."""
    driver = _driver()
    broken = {**policies, "trainer": _without(policies["trainer"], "ecr:PutImage")}
    message = _broken(driver, tmp_path, trained, policies=broken)
    assert message.startswith("job github:train.yml:images/build as trainer: ecr:PutImage on "
                              "arn:aws:ecr:eu-west-1:123456789012:repository/detops-dev/training denied"), message
