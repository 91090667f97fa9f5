"""A GitHub job sees only the names its workflow's and its own ``env:`` map (not every CI variable, as
Azure DevOps' variable groups or the rehearsal's ``set -a`` would give it). These tests build exactly that
environment from a stack's outputs (the AWS program under Pulumi's mocks, scripts/mock_stack_outputs.py,
through `detops settings ci-variables`' mapping) and run the job's own command with it, so a setting the
job needs but does not map fails here, not at the first real run:

- train.yml's train job: `detops submit --dry-run` names the training job ``<stack prefix>-...`` (the
  trainer may only create ``training-job/<prefix>-*``) on the stack's training instance type (the only
  one its policy allows);
- release.yml's deploy jobs: the SageMaker target uses the stack's serving instance type (the only one
  the deployer's policy allows).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cicd_helpers import GITHUB_DIR, REPO, detops_calls, load_yaml

from detops import contract

VAR = re.compile(r"^\$\{\{\s*vars\.([A-Za-z0-9_]+)\s*\}\}$")
SHELL = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/detops-dev/training@sha256:" + "0" * 64


def job_env(workflow: dict[str, Any], job: str, variables: dict[str, str], passed: dict[str, str],
            step: dict[str, Any] | None = None) -> dict[str, str]:
    """The environment of ``job``'s steps (of ``step``, with its own ``env:``): the workflow's and the job's
    ``env:``; ``${{ vars.X }}`` is the CI variable X ("" when unset, as GitHub expands it), any other
    expression the value in ``passed`` (by the env name: job outputs, inputs), else ""."""
    mapping = {**(workflow.get("env") or {}), **(workflow["jobs"][job].get("env") or {}), **((step or {}).get("env") or {})}
    env = {}
    for name, value in mapping.items():
        m = VAR.match(str(value))
        env[name] = variables.get(m.group(1), "") if m else passed.get(name, "" if "${{" in str(value) else str(value))
    return env


def run_clean(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """``argv`` with ``env`` and nothing else of this process's settings (PATH, HOME, the worktree on PYTHONPATH)."""
    base = {k: os.environ[k] for k in ("PATH", "HOME", "TMPDIR") if k in os.environ}
    base["PYTHONPATH"] = str(REPO)
    return subprocess.run(argv, env={**base, **env}, cwd=cwd, capture_output=True, text=True, check=False, timeout=600)


@pytest.fixture(scope="module")
def stacks():
    """``stacks(cloud, stack) -> (outputs, CI variables)``: the program under mocks (each run once)."""
    cache: dict[tuple[str, str], tuple[dict[str, Any], contract.CiVariables]] = {}

    def get(cloud: str, stack: str):
        if (cloud, stack) not in cache:
            r = subprocess.run([sys.executable, str(REPO / "scripts" / "mock_stack_outputs.py"), cloud, stack],
                               capture_output=True, text=True, cwd=REPO, check=False, timeout=600)
            assert r.returncode == 0, r.stderr[-3000:]
            outputs = json.loads(r.stdout)
            cache[cloud, stack] = (outputs, contract.ci_variables(outputs))
        return cache[cloud, stack]

    return get


@pytest.fixture(scope="module")
def aws_stack(stacks):
    """``{stack: (outputs, CI variables)}`` of the AWS program (dev, prod)."""
    return {stack: stacks("aws", stack) for stack in ("dev", "prod")}


def test_the_train_job_submits_under_the_stack_prefix_on_the_stack_instance_type(aws_stack, tmp_path) -> None:
    outputs, variables = aws_stack["dev"]
    workflow = load_yaml(GITHUB_DIR / "train.yml")
    env = job_env(workflow, "train", {**variables.all_for("training"), "DETOPS_BACKEND": "sagemaker"},
                  {"DETOPS_TRAINING_IMAGE": IMAGE})
    (step,) = [s for s in workflow["jobs"]["train"]["steps"] if s.get("id") == "submit"]
    (args,) = [a for a in detops_calls(step["run"]) if a[0] == "submit" and "--set" not in a]
    argv = [SHELL.sub(lambda m: env.get(m.group(1), ""), a) for a in args if a != "--no-wait"]
    r = run_clean([sys.executable, "-m", "detops.cli", *argv, "--dry-run", "--out", str(tmp_path)], env, REPO)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    request = json.loads((tmp_path / "sagemaker" / "create_training_job.json").read_text())
    assert request["TrainingJobName"].startswith(outputs["sagemaker_name_prefix"] + "-"), request["TrainingJobName"]
    assert request["ResourceConfig"]["InstanceType"] == outputs["training_instance_type"]
    assert request["RoleArn"] == outputs["sagemaker_role_arn"]


@pytest.mark.parametrize(("stack", "job"), [("dev", "staging"), ("prod", "production")])
def test_the_release_jobs_deploy_on_the_stack_serving_instance_type(aws_stack, stack: str, job: str) -> None:
    outputs, variables = aws_stack[stack]
    workflow = load_yaml(GITHUB_DIR / "release.yml")
    env = job_env(workflow, job, {**variables.all_for(job), "DETOPS_BACKEND": "sagemaker"}, {})
    code = ("from deployment.targets.sagemaker import SageMakerTarget; t = SageMakerTarget(); "
            "print(t.instance_type, t.role_arn)")
    r = run_clean([sys.executable, "-c", code], env, REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == [outputs["serving_instance_type"], outputs["sagemaker_role_arn"]]


#: The endpoint each stack serves an environment from, by cloud: its output (SageMaker) / the Azure ML
#: endpoint name the program gives the environment's deployer.
ENDPOINT_SETTING = {"aws": "DETOPS_SM_ENDPOINT", "azure": "DETOPS_AML_ENDPOINT"}


@pytest.mark.parametrize(("cloud", "stack", "job"), [("aws", "dev", "staging"), ("aws", "prod", "production"),
                                                     ("azure", "dev", "staging")])
def test_the_release_steps_get_the_stack_endpoint_as_endpoint_name(stacks, cloud: str, stack: str, job: str) -> None:
    """Both release workflows call `deploy` / `smoke-test` / `rollback --endpoint "${ENDPOINT_NAME}"`:
    `detops settings ci-variables` must give each release environment its stack's endpoint under that name
    (GitHub: an environment variable; Azure DevOps: the group detops-<environment>, whose every variable
    the script sees, under `set -u`)."""
    outputs, variables = stacks(cloud, stack)
    endpoint = variables.environments[job][ENDPOINT_SETTING[cloud]]
    if cloud == "aws":
        assert endpoint == outputs["sagemaker_endpoints"][job]
    workflow = load_yaml(GITHUB_DIR / "release.yml")
    steps = [s for s in workflow["jobs"][job]["steps"] if "ENDPOINT_NAME" in str(s.get("run", ""))]
    assert {s.get("id") for s in steps} >= {"deploy", "smoke"}
    for step in steps:
        assert job_env(workflow, job, variables.all_for(job), {}, step)["ENDPOINT_NAME"] == endpoint, step["name"]
    group = next(c for c in contract.azure_devops_commands(variables) if f"--name detops-{job} " in c)
    assert f"ENDPOINT_NAME={endpoint}" in group.split()


@pytest.mark.parametrize("job", ["staging", "production"])
def test_the_release_jobs_open_the_runs_datastore_without_the_workspace(stacks, job: str) -> None:
    """`deploy` verifies the version's files in the runs container against the registered digest; the
    release job's environment names the storage account and the datastore's container (as train.yml's), so
    the files open directly (adlfs reads AZURE_STORAGE_ACCOUNT_NAME) instead of failing or asking the
    workspace for the datastore."""
    outputs, variables = stacks("azure", "dev")
    workflow = load_yaml(GITHUB_DIR / "release.yml")
    env = job_env(workflow, job, {**variables.all_for("staging"), "DETOPS_BACKEND": "azureml"}, {})
    code = ("import sys; from training.cloud.azure import datastore_location; "
            "print(*datastore_location(sys.argv[1])[:2])")
    r = run_clean([sys.executable, "-c", code, outputs["runs_datastore_name"]], env, REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == [outputs["storage_account_name"], outputs["runs_container"]]
    assert env["AZURE_STORAGE_ACCOUNT_NAME"] == outputs["storage_account_name"]  # what adlfs opens az://runs/... with
