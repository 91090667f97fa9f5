"""``detops ci setup github`` against a fake GitHub that keeps state (tests/ci/github_fake.py): the input is
the AWS program's dev stack outputs under Pulumi mocks (scripts/mock_stack_outputs.py, its own process).

Every write's body is validated by the fake against githubkit's request model of its endpoint (generated
from GitHub's OpenAPI description; what that cannot show is in github_fake's docstring). Checked: the
environments the workflows name exist, gates have resolved reviewers (user and team ids) and
prevent_self_review, every write identity's environment deploys from main only, variables are the
ci-variables mapping, main is protected, the OIDC template is set; a second run changes nothing;
``--dry-run`` sends no write.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from cicd_helpers import REPO
from github_fake import FakeGitHub

from deployment import ci_github
from detops import contract
from training import github_oidc
from training.errors import ConfigError

WRITE_ENVIRONMENTS = [e for e, identity in contract.ENVIRONMENT_IDENTITY.items() if identity != "infra-reader"]
REVIEWERS = ["*=ada", "production=detops/release-approvers"]


@pytest.fixture(scope="module")
def outputs_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("stack") / "outputs.json"
    r = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "mock_stack_outputs.py"), "aws", "dev"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    path.write_text(r.stdout)
    return path


@pytest.fixture
def fake(monkeypatch):
    github = FakeGitHub()
    monkeypatch.setattr(ci_github, "TRANSPORT", github.transport())
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_test")
    monkeypatch.delenv("GH_TOKEN", raising=False)
    monkeypatch.setenv("GITHUB_API_URL", "https://api.github.test")
    return github


def run(outputs_file, *extra: str, reviewers=REVIEWERS) -> tuple[int, str]:
    from typer.testing import CliRunner

    from detops.cli import app

    args = ["ci", "setup", "github", str(outputs_file), "--repo", "detops/detops", *extra]
    for r in reviewers:
        args += ["--reviewer", r]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    return result.exit_code, result.output


def test_setup_creates_everything_the_workflows_rely_on(fake, outputs_file) -> None:
    code, output = run(outputs_file)
    assert code == 0, output
    assert fake.invalid == []
    variables = contract.ci_variables(json.loads(outputs_file.read_text()))
    named = {e for e, wfs in github_oidc.environment_workflows(variables.environments).items() if wfs}
    assert named <= set(fake.environments) and set(variables.environments) <= set(fake.environments)
    for name, env in fake.environments.items():
        if name in ci_github.GATED:
            assert env["reviewers"] and env["prevent_self_review"] is True, name
        else:
            assert env["reviewers"] == [], name
        if name in WRITE_ENVIRONMENTS:  # deploys from main only
            assert env["policy"] == {"protected_branches": False, "custom_branch_policies": True}, name
            assert [b["name"] for b in env["branches"]] == ["main"], name
        else:
            assert name.startswith("infra-preview-") and env["policy"] is None, name
        assert env["variables"] == variables.environments.get(name, {}), name
    # user ids and team ids, resolved from the logins
    assert fake.environments["model-registration"]["reviewers"] == [{"type": "User", "id": 101}]
    assert fake.environments["production"]["reviewers"] == [{"type": "Team", "id": 501}]
    assert fake.variables == variables.repository
    assert fake.protection["main"]["required_pull_request_reviews"]["required_approving_review_count"] == 1
    assert fake.protection["main"]["required_status_checks"]["contexts"] == ci_github.required_checks()
    assert fake.oidc == {"use_default": False, "include_claim_keys": ["repo", "context", "job_workflow_ref"]}
    assert fake.writes()[-1][1].endswith("/actions/oidc/customization/sub")  # after the trust exists


def test_second_run_changes_nothing_and_a_changed_output_changes_one_variable(fake, outputs_file, tmp_path) -> None:
    assert run(outputs_file)[0] == 0
    before = len(fake.writes())
    code, output = run(outputs_file)
    assert code == 0 and "nothing to change" in output and len(fake.writes()) == before
    data = json.loads(outputs_file.read_text())
    data["AWS_REGION"] = "eu-central-1"
    changed = tmp_path / "outputs.json"
    changed.write_text(json.dumps(data))
    assert run(changed)[0] == 0
    assert fake.writes()[before:] == [
        ("PATCH", "/repos/detops/detops/actions/variables/AWS_REGION", {"name": "AWS_REGION", "value": "eu-central-1"})
    ]


def test_a_reviewer_removed_by_hand_is_put_back(fake, outputs_file) -> None:
    assert run(outputs_file)[0] == 0
    fake.environments["production"].update(reviewers=[], prevent_self_review=False)
    fake.environments["staging"]["branches"] = []
    assert run(outputs_file)[0] == 0
    assert fake.environments["production"]["prevent_self_review"] is True
    assert [b["name"] for b in fake.environments["staging"]["branches"]] == ["main"]


def test_dry_run_sends_nothing_and_prints_every_request(fake, outputs_file) -> None:
    code, output = run(outputs_file, "--dry-run")
    assert code == 0, output
    assert fake.writes() == [] and fake.environments == {}
    printed = [line for line in output.splitlines() if line.startswith(("PUT ", "POST ", "PATCH "))]
    assert run(outputs_file)[0] == 0
    sent = [f"{m} {p} {json.dumps(b, sort_keys=True)}" for m, p, b in fake.writes()]
    assert printed == sent


def test_unknown_reviewer_and_a_gate_without_reviewers_are_refused(fake, outputs_file) -> None:
    with pytest.raises(ConfigError, match="'nobody': no such GitHub user"):
        run(outputs_file, reviewers=["*=nobody"])
    with pytest.raises(ConfigError, match="is a gate: give its reviewers"):
        run(outputs_file, reviewers=[])
    assert fake.writes() == []


def test_bodies_are_checked_against_githubs_request_models() -> None:
    """The command's own check and the fake's both refuse what GitHub's OpenAPI models refuse."""
    from github_fake import check_body
    from pydantic import ValidationError

    path = "/repos/o/r/environments/training"
    assert check_body("PUT", path, {"prevent_self_review": True, "reviewers": [{"type": "User", "id": 1}]}) is None
    assert check_body("PUT", path, {"reviewers": [{"type": "User", "id": "ada"}]})  # an id, not a login
    assert check_body("PUT", path, {"prevent_self_reviews": True})  # unknown key
    with pytest.raises(ValidationError):
        ci_github.validated("PUT", "/repos/{o}/{r}/environments/{e}", {"wait_timer": "soon"})
    with pytest.raises(ConfigError, match="not in GitHub's request model"):
        ci_github.validated(
            "PUT", "/repos/{o}/{r}/actions/oidc/customization/sub", {"use_default": False, "claims": []}
        )


def test_no_token_is_a_clear_error(monkeypatch, outputs_file) -> None:
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    monkeypatch.delenv("GH_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="no GitHub token"):
        run(outputs_file)


def test_the_bootstraps_outputs_add_the_infra_environments(fake, outputs_file, tmp_path) -> None:
    bootstrap = tmp_path / "bootstrap.json"
    role = "arn:aws:iam::123456789012:role/detopsdev-infra-deployer"
    bootstrap.write_text(
        json.dumps(
            {"cloud": "aws", "backend_url": "s3://state", "CI_ENVIRONMENTS": {"infra-dev": {"AWS_ROLE_ARN": role}}}
        )
    )
    from typer.testing import CliRunner

    from detops.cli import app

    args = [
        "ci",
        "setup",
        "github",
        str(outputs_file),
        str(bootstrap),
        "--repo",
        "detops/detops",
        "--reviewer",
        "*=ada",
    ]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert fake.environments["infra-dev"]["variables"] == {"AWS_ROLE_ARN": role}
    assert fake.environments["training"]["variables"]  # the application stack's, still there
    clash = {"CI_ENVIRONMENTS": {"training": {"AWS_ROLE_ARN": role}}}
    with pytest.raises(ConfigError, match="CI_ENVIRONMENTS.training differs"):
        ci_github.merge_outputs([("app", json.loads(outputs_file.read_text())), ("other", clash)])
