"""Policy-style checks of the CI hardening rules (docs/cicd.md), over every workflow of both systems.

GitHub: actions pinned by a full commit SHA with the release it stands for; ``permissions: {}`` at the
top and minimal per job; ``id-token: write`` only on jobs that log in to a cloud; every job has
``timeout-minutes``; every workflow has ``concurrency``; no ``pull_request_target``; checkouts do not
persist the token; the human gates (registration, production, infra) are environments; cloud logins
take their ids from ``vars`` (OIDC), never from stored keys.
Azure Pipelines: the registration gate is an agentless ManualValidation whose approvers cannot
approve their own run; releases and ``pulumi up`` run in deployment jobs targeting environments;
every job has a quoted ``timeoutInMinutes``; settings come from variable groups; cloud access only
through the workload-identity templates.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cicd_helpers import AZURE_DIR, GITHUB_DIR, load_yaml, workflow_files

SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
CLOUD_LOGIN = ("azure/login@", "aws-actions/configure-aws-credentials@", "pulumi/actions@")
SECRET_HINTS = re.compile(
    r"(client-secret|aws-secret-access-key|aws-access-key-id|AKIA[0-9A-Z]{16}|password\s*[:=]|"
    r"PULUMI_ACCESS_TOKEN|PULUMI_CONFIG_PASSPHRASE|AccountKey=|SharedAccessSignature)",
    re.IGNORECASE,
)

GITHUB = workflow_files()["github"]
AZURE = workflow_files()["azure"]


def _gh(name: str) -> dict[str, Any]:
    return load_yaml(GITHUB_DIR / f"{name}.yml")


def _az(name: str) -> dict[str, Any]:
    return load_yaml(AZURE_DIR / f"{name}.yml")


def _uses_lines(path: Path) -> Iterator[tuple[str, str]]:
    for line in path.read_text().splitlines():
        m = re.match(r"^\s*(?:-\s*)?uses:\s*(\S+)\s*(#.*)?$", line)
        if m:
            yield m.group(1), (m.group(2) or "")


@pytest.mark.parametrize("path", GITHUB, ids=lambda p: p.name)
def test_github_actions_are_pinned_by_commit_sha_with_the_release_named(path):
    uses = list(_uses_lines(path))
    assert uses, "no action used?"
    for ref, comment in uses:
        if ref.startswith("./"):
            continue
        assert SHA_PIN.match(ref), f"{path.name}: {ref} is not pinned by a full commit SHA"
        assert re.search(r"#\s*v\d+\.\d+\.\d+", comment), f"{path.name}: {ref} lacks its '# vX.Y.Z' comment"


def test_the_same_action_is_pinned_to_the_same_sha_everywhere():
    pins: dict[str, set[str]] = {}
    for path in GITHUB:
        for ref, comment in _uses_lines(path):
            action, _, sha = ref.partition("@")
            pins.setdefault(action, set()).add(f"{sha} {comment.strip()}")
    assert all(len(v) == 1 for v in pins.values()), pins
    assert {
        "actions/checkout",
        "actions/setup-python",
        "azure/login",
        "aws-actions/configure-aws-credentials",
        "pulumi/actions",
        "actions/upload-artifact",
    } <= set(pins)


@pytest.mark.parametrize("path", GITHUB, ids=lambda p: p.name)
def test_github_permissions_timeouts_concurrency(path):
    wf = load_yaml(path)
    assert wf.get("permissions") == {}, f"{path.name}: top-level permissions must be {{}}"
    has_concurrency = bool((wf.get("concurrency") or {}).get("group")) or any(
        (j.get("concurrency") or {}).get("group") for j in wf["jobs"].values()
    )
    assert has_concurrency, f"{path.name}: no concurrency group (workflow or job)"
    assert "pull_request_target" not in wf["on"], f"{path.name}: pull_request_target"
    for job_id, job in wf["jobs"].items():
        where = f"{path.name}:{job_id}"
        if "uses" in job:  # a reusable workflow call: its own jobs are checked in the called file
            assert str(job["uses"]).startswith("./.github/workflows/"), f"{where}: {job['uses']}"
            continue
        assert isinstance(job.get("timeout-minutes"), int), f"{where}: no timeout-minutes"
        perms = job.get("permissions")
        if (perms or {}).get("id-token") == "write":
            assert job["timeout-minutes"] <= 60, f"{where}: a cloud job may not run longer than 60 minutes (OIDC tokens last ~1 h)"
        assert isinstance(perms, dict), f"{where}: job permissions must be explicit"
        allowed = {"contents": {"read"}, "id-token": {"write"}, "pull-requests": {"write"}}
        for scope, level in perms.items():
            assert level in allowed.get(scope, {"read"}), f"{where}: {scope}: {level}"
        steps = job.get("steps", [])
        logs_in = any(str(s.get("uses", "")).startswith(CLOUD_LOGIN) for s in steps)
        assert (perms.get("id-token") == "write") == logs_in, f"{where}: id-token: write iff it logs in to a cloud"
        if perms.get("pull-requests") == "write":
            assert (path.name, job_id) == ("infra.yml", "preview"), f"{where}: pull-requests: write"
        for s in steps:
            if str(s.get("uses", "")).startswith("actions/checkout@"):
                assert s.get("with", {}).get("persist-credentials") is False, f"{where}: checkout persists the token"


def test_github_cloud_logins_use_oidc_ids_from_vars_and_no_stored_keys():
    for path in GITHUB:
        text = path.read_text()
        assert not SECRET_HINTS.search(text), f"{path.name}: {SECRET_HINTS.search(text).group(0)}"
        for job in load_yaml(path)["jobs"].values():
            for s in job.get("steps", []):
                uses = str(s.get("uses", ""))
                if uses.startswith("azure/login@"):
                    assert set(s["with"]) == {"client-id", "tenant-id", "subscription-id"}
                    assert all(v.startswith("${{ vars.") for v in s["with"].values())
                if uses.startswith("aws-actions/configure-aws-credentials@"):
                    assert set(s["with"]) == {"role-to-assume", "aws-region"}
                    assert s["with"]["role-to-assume"] == "${{ vars.AWS_ROLE_ARN }}"
        # secrets.* only for the endpoints' own API key, and only in jobs bound to an environment
        for job_id, job in load_yaml(path)["jobs"].items():
            if "secrets." in str(job):
                assert job.get("environment"), f"{path.name}:{job_id} reads a secret outside an environment"
                assert set(re.findall(r"secrets\.(\w+)", str(job))) == {"DETOPS_API_KEY"}


def _env_name(job: dict[str, Any]) -> str | None:
    env = job.get("environment")
    return env.get("name") if isinstance(env, dict) else env


def test_github_human_gates_are_environments():
    train = _gh("train")["jobs"]
    assert _env_name(train["register"]) == "model-registration"
    assert "evaluate" in train["register"]["needs"]
    release = _gh("release")["jobs"]
    assert _env_name(release["staging"]) == "staging"
    assert _env_name(release["production"]) == "production" and "staging" in release["production"]["needs"]
    infra = _gh("infra")["jobs"]
    assert "'infra-production'" in _env_name(infra["up"]) and "'infra-dev'" in _env_name(infra["up"])
    assert "refs/heads/main" in infra["up"]["if"] and "pull_request" in infra["preview"]["if"]
    preview = next(s for s in infra["preview"]["steps"] if str(s.get("uses", "")).startswith("pulumi/actions@"))
    assert preview["with"]["command"] == "preview" and preview["with"]["comment-on-pr"] is True


def test_github_train_triggers_on_merge_of_training_inputs_and_on_demand():
    on = _gh("train")["on"]
    assert on["push"]["branches"] == ["main"]
    assert {"configs/**", "training/**"} <= set(on["push"]["paths"])
    assert "workflow_dispatch" in on
    ci_on = _gh("ci")["on"]
    assert "pull_request" in ci_on
    test_steps = [s.get("run", "") for s in _gh("ci")["jobs"]["test"]["steps"]]
    assert any(r.startswith("bash scripts/test.sh") for r in test_steps)


def test_github_release_rolls_back_only_after_a_failed_deploy_or_smoke_test():
    for job_id in ("staging", "production"):
        steps = _gh("release")["jobs"][job_id]["steps"]
        ids = [s.get("id") for s in steps]
        assert ids.index("deploy") + 1 == ids.index("smoke"), "the smoke test follows the deployment"
        rollback = steps[ids.index("smoke") + 1]
        assert "detops rollback" in rollback["run"]
        assert rollback["if"] == (
            "${{ failure() && (steps.deploy.outcome == 'failure' || steps.smoke.outcome == 'failure') }}"
        )


def _jobs(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for stage in doc.get("stages", []):
        for job in stage.get("jobs", []):
            if "template" in job:  # a job template: its jobs are in the template file
                yield from load_yaml(AZURE_DIR / job["template"]).get("jobs", [])
            else:
                yield job


def _steps(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "task" in node or "script" in node or "template" in node or "checkout" in node:
            yield node
        for v in node.values():
            yield from _steps(v)
    elif isinstance(node, list):
        for v in node:
            yield from _steps(v)


@pytest.mark.parametrize("name", ["ci", "train", "release", "infra"])
def test_azure_jobs_have_quoted_timeouts_and_settings_from_variable_groups(name):
    doc = _az(name)
    assert doc["pool"]["vmImage"] == "ubuntu-24.04"
    for job in _jobs(doc):
        t = job.get("timeoutInMinutes")
        assert isinstance(t, str) and t.isdigit(), f"{name}: {job.get('job') or job.get('deployment')}: {t!r}"
    text = (AZURE_DIR / f"{name}.yml").read_text()
    assert not SECRET_HINTS.search(text)
    if name != "ci":
        groups = [v["group"] for v in doc["variables"] if "group" in v]
        assert groups, f"{name}: no variable group"


def test_azure_registration_gate_is_an_agentless_manual_validation():
    stages = {s["stage"]: s for s in _az("train")["stages"]}
    review = stages["Review"]["jobs"][0]
    assert review["pool"] == "server"
    (task,) = review["steps"]
    assert task["task"] == "ManualValidation@1"
    assert task["inputs"]["allowApproversToApproveTheirOwnRuns"] is False
    assert task["inputs"]["onTimeout"] == "reject"
    assert {"Train", "Review"} <= set(stages["Register"]["dependsOn"])


def test_azure_deployments_target_environments_and_roll_back_on_failure():
    for stage in _az("release")["stages"]:
        if stage["stage"] == "Images":
            continue
        (job,) = stage["jobs"]
        assert job["environment"] == {"Staging": "detops-staging", "Production": "detops-production"}[stage["stage"]]
        failure = job["strategy"]["runOnce"]["on"]["failure"]["steps"]
        assert any("detops rollback" in s.get("parameters", {}).get("script", "") for s in failure)
    (up,) = next(s for s in _az("infra")["stages"] if s["stage"] == "Up")["jobs"]
    assert up["environment"] == "detops-infra"


def test_azure_cloud_access_only_through_workload_identity_templates():
    for path in AZURE:
        for step in _steps(load_yaml(path)):
            task = step.get("task", "")
            if task.startswith("AzureCLI@"):
                assert path.parent.name == "templates", f"{path}: AzureCLI outside the cloud templates"
                cloud = "azureml" if path.name == "cloud-azureml.yml" else "sagemaker"
                assert step["inputs"]["azureSubscription"] == f"detops-{cloud}-${{{{ parameters.identity }}}}"
            tpl = step.get("template", "")
            if "cloud-" in tpl:
                want = "cloud-${{ parameters.backend }}.yml"
                assert tpl == (want if path.parent.name == "templates" else f"templates/{want}"), tpl
    for cloud in ("azureml", "sagemaker"):
        tpl = load_yaml(AZURE_DIR / "templates" / f"cloud-{cloud}.yml")
        step, cancel = tpl["steps"]
        assert step["task"] == "AzureCLI@2" and step["name"] == "cloud"
        assert cancel["name"] == "cancel" and cancel["condition"] == "canceled()"
    aws = (AZURE_DIR / "templates" / "cloud-sagemaker.yml").read_text()
    assert "AWS_WEB_IDENTITY_TOKEN_FILE" in aws and "addSpnToEnvironment: true" in aws
