"""training.github_oidc: which workflow files name which environment (the trust policies and
`detops ci setup github` read the same answer), on the project's workflows and on planted ones."""

from __future__ import annotations

import pytest

from training import github_oidc
from training.errors import ConfigError


def test_the_projects_environments_and_their_workflow_files() -> None:
    assert github_oidc.workflows_naming("training") == ["images.yml", "train.yml"]  # the called images.yml too
    assert github_oidc.workflows_naming("model-registration") == ["train.yml"]
    assert github_oidc.workflows_naming("production") == ["release.yml"]
    # expressions: a quoted literal of a condition, a template's ${{ }} part
    assert (
        github_oidc.workflows_naming("infra-dev") == github_oidc.workflows_naming("infra-production") == ["infra.yml"]
    )
    assert github_oidc.workflows_naming("infra-preview-dev") == ["infra.yml"]
    assert github_oidc.workflows_naming("model-approval") == []
    assert github_oidc.workflows_naming("infra-preview-") == []  # the template needs its variable part


def test_planted_workflows(tmp_path) -> None:
    (tmp_path / "a.yml").write_text(
        "jobs:\n  x:\n    environment: {name: staging, url: u}\n  y:\n    uses: ./.github/workflows/b.yml\n"
        "  z:\n    environment: ${{ inputs.prod && 'production' || 'staging' }}\n"
    )
    (tmp_path / "b.yaml").write_text("jobs:\n  build:\n    environment: release-${{ vars.STAGE }}\n")
    assert github_oidc.workflows_naming("staging", tmp_path) == ["a.yml"]
    assert github_oidc.workflows_naming("production", tmp_path) == ["a.yml"]
    assert github_oidc.workflows_naming("release-eu", tmp_path) == ["b.yaml"]
    assert github_oidc.main_subjects("o/r", ["staging"], tmp_path) == [
        "repo:o/r:environment:staging:job_workflow_ref:o/r/.github/workflows/a.yml@refs/heads/main"
    ]
    (tmp_path / "c.yml").write_text("jobs: [unclosed\n")
    with pytest.raises(ConfigError, match="c.yml: not valid YAML"):
        github_oidc.workflows_naming("staging", tmp_path)
    with pytest.raises(ConfigError, match="no GitHub workflows folder"):
        github_oidc.workflows_naming("staging", tmp_path / "missing")
