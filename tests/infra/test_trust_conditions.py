"""Write identities are reachable only from ``main`` and the project's own workflow files (issue 32).

Each write identity's trust is taken from the Pulumi programs under mocks (infra/aws, infra/azure,
infra/bootstrap, dev and prod) and evaluated with the claims GitHub puts in a job's OIDC token once the
repository's subject claim template is ``repo, context, job_workflow_ref`` (:mod:`training.github_oidc`):

- main's job, in the right environment and workflow file (the pairs the workflow YAML gives): allowed;
- the same environment and workflow from a pushed branch, from a pull request (context ``environment:E``:
  the job names it; and ``pull_request`` when it does not), from a workflow file the project does not have
  (``evil.yml``) and from a project workflow that does not name that environment, both on main; from a fork
  (another repository, its own main): refused, every one.

AWS: the role's trust policy through the project's IAM evaluator (tests/infra/iam_eval.py), request
``sts:AssumeRoleWithWebIdentity`` with the context keys ``token.actions.githubusercontent.com:sub`` /
``:aud`` (how IAM exposes the GitHub provider's claims). Azure: the federated identity credentials with
the documented rule (Entra "Workload identity federation": issuer, subject and an audience of
``api://AzureADTokenExchange`` must match exactly; no wildcards). What this cannot show: that GitHub
really issues these claims (the format comes from GitHub's docs, "OpenID Connect reference"), or IAM's
checks of the token's signature and thumbprint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from iam_eval import evaluate
from infra_helpers import bootstrap_settings, run_bootstrap, run_cloud, stack_settings
from infra_mocks import ProgramRun

from infra.components.aws import GITHUB_OIDC_HOST, STS_AUDIENCE
from infra.components.azure import ENTRA_TOKEN_AUDIENCE
from infra.policies import rules
from infra.settings import APP_PURPOSES, WRITE_PURPOSES
from training import github_oidc

ISSUER = "https://token.actions.githubusercontent.com"
AZURE_ID = "azure-native:managedidentity:UserAssignedIdentity"


@dataclass(frozen=True)
class Token:
    """The claims of one job's token that the trust conditions can see."""

    label: str
    repository: str
    environment: str | None
    workflow: str
    ref: str
    event: str = "push"

    def sub(self) -> str:
        if self.environment:
            context = f"environment:{self.environment}"
        elif self.event == "pull_request":
            context = "pull_request"
        else:
            context = f"ref:{self.ref}"
        return github_oidc.claims_subject(
            {
                "repository": self.repository,
                "context": context,
                "job_workflow_ref": f"{self.repository}/.github/workflows/{self.workflow}@{self.ref}",
            }
        )


def tokens(repository: str, environment: str, workflow: str) -> tuple[Token, list[Token]]:
    """(main's token, the tokens that must be refused) for ``environment`` used by ``workflow``."""
    other = next(
        w
        for w in ("ci.yml", "infra.yml", "train.yml", "release.yml")
        if w not in github_oidc.workflows_naming(environment)
    )
    fork = "forker/" + repository.split("/", 1)[1]
    main = Token("main", repository, environment, workflow, github_oidc.MAIN_REF)
    return main, [
        Token("branch push", repository, environment, workflow, "refs/heads/feature"),
        Token(
            "pull request naming the environment",
            repository,
            environment,
            workflow,
            "refs/pull/7/merge",
            "pull_request",
        ),
        Token("pull request", repository, None, workflow, "refs/pull/7/merge", "pull_request"),
        Token("new workflow file on main", repository, environment, "evil.yml", github_oidc.MAIN_REF),
        Token(f"edited {other} on main", repository, environment, other, github_oidc.MAIN_REF),
        Token("fork", fork, environment, workflow, github_oidc.MAIN_REF),
    ]


def write_environments(name: str, settings) -> list[tuple[str, str]]:
    """(purpose, environment) of every write identity program ``name`` makes (the bootstrap: the infra
    deployer; the application stacks: the others)."""
    made = ("infra_deployer",) if name.startswith("bootstrap") else APP_PURPOSES
    return [(p, e) for p in WRITE_PURPOSES if p in made for e in getattr(settings.github.environments, p)]


# -- AWS ----------------------------------------------------------------------------------------------------


def _cases(cloud: str):
    """(program, stack, run it, its settings) of the ``cloud`` program and its bootstrap, dev and prod."""
    out = []
    for stack in ("dev", "prod"):
        out.append((cloud, stack, lambda s=stack: run_cloud(cloud, stack_settings(cloud, s)), stack_settings(cloud, stack)))
        out.append((f"bootstrap-{cloud}", stack, lambda s=stack: run_bootstrap(bootstrap_settings(cloud, s)),
                    bootstrap_settings(cloud, stack)))
    return out


def _aws_cases():
    return _cases("aws")


def _azure_cases():
    return _cases("azure")


@pytest.fixture(scope="module")
def runs() -> dict[tuple[str, str], ProgramRun]:
    return {(name, stack): make() for name, stack, make, _ in [*_aws_cases(), *_azure_cases()]}


def _aws_trust(run: ProgramRun, purpose: str) -> dict:
    tag = purpose.replace("_", "-")
    (role,) = [r for r in run.of_type(rules.AWS_ROLE) if (r.inputs.get("tags") or {}).get("detops:purpose") == tag]
    return json.loads(role.inputs["assumeRolePolicy"])


def aws_allows(trust: dict, token: Token) -> bool:
    context = {f"{GITHUB_OIDC_HOST}:sub": token.sub(), f"{GITHUB_OIDC_HOST}:aud": STS_AUDIENCE}
    return evaluate([trust], "sts:AssumeRoleWithWebIdentity", "*", context).allowed


def _pairs(settings, purpose: str, environment: str) -> list[str]:
    return github_oidc.workflows_naming(environment)


@pytest.mark.parametrize(("name", "stack"), [(n, s) for n, s, _, _ in _aws_cases()])
def test_aws_write_roles_trust_main_and_the_projects_workflows_only(runs, name: str, stack: str) -> None:
    settings = next(c[3] for c in _aws_cases() if c[:2] == (name, stack))
    checked = 0
    for purpose, environment in write_environments(name, settings):
        trust = _aws_trust(runs[name, stack], purpose)
        workflows = _pairs(settings, purpose, environment)
        for workflow in workflows:
            main, refused = tokens(settings.github.repository, environment, workflow)
            assert aws_allows(trust, main), f"{name}/{stack} {purpose}: main's {workflow} in {environment} refused"
            for token in refused:
                assert not aws_allows(trust, token), f"{name}/{stack} {purpose}: {token.label} ({token.sub()}) allowed"
            checked += 1
        if not workflows:  # no workflow names it (model-approval): no GitHub token at all, main's included
            main, _ = tokens(settings.github.repository, environment, "train.yml")
            assert not aws_allows(trust, main)
    assert checked, f"{name}/{stack}: no write identity checked"


def test_trainer_is_reachable_from_both_of_its_workflows(runs) -> None:
    """The images job is a called workflow: its token names images.yml, not the caller (train.yml, release.yml)."""
    trust = _aws_trust(runs["aws", "dev"], "trainer")
    repo = stack_settings("aws", "dev").github.repository
    for workflow in ("images.yml", "train.yml"):
        assert aws_allows(trust, Token("main", repo, "training", workflow, github_oidc.MAIN_REF))
    assert not aws_allows(trust, Token("main", repo, "training", "release.yml", github_oidc.MAIN_REF))


def test_aws_infra_reader_is_pinned_to_its_workflow_file(runs) -> None:
    """The read-only preview runs on pull requests (any ref), but only from infra.yml in its own environment."""
    settings = bootstrap_settings("aws", "dev")
    trust = _aws_trust(runs["bootstrap-aws", "dev"], "infra_reader")
    (environment,) = settings.github.environments.infra_reader
    repo = settings.github.repository
    assert aws_allows(trust, Token("pr", repo, environment, "infra.yml", "refs/pull/7/merge", "pull_request"))
    assert not aws_allows(trust, Token("new file", repo, environment, "evil.yml", "refs/pull/7/merge", "pull_request"))
    assert not aws_allows(trust, Token("fork", "forker/detops", environment, "infra.yml", "refs/pull/7/merge"))
    assert not aws_allows(trust, Token("other env", repo, "infra-dev", "infra.yml", "refs/pull/7/merge"))


# -- Azure --------------------------------------------------------------------------------------------------


def azure_allows(run: ProgramRun, purpose: str, token: Token, audience: str = ENTRA_TOKEN_AUDIENCE) -> bool:
    """Exact match of issuer, subject and audience against the identity's federated credentials."""
    tag = purpose.replace("_", "-")
    (identity,) = [r for r in run.of_type(AZURE_ID) if r.inputs["tags"].get("detops-purpose") == tag]
    credentials = [c for c in run.of_type(rules.AZ_FEDERATED) if c.inputs["resourceName"] == identity.outputs["name"]]
    return any(
        c.inputs["issuer"] == ISSUER and c.inputs["subject"] == token.sub() and audience in c.inputs["audiences"]
        for c in credentials
    )


@pytest.mark.parametrize(("name", "stack"), [(n, s) for n, s, _, _ in _azure_cases()])
def test_azure_write_identities_federate_main_and_the_projects_workflows_only(runs, name: str, stack: str) -> None:
    settings = next(c[3] for c in _azure_cases() if c[:2] == (name, stack))
    checked = 0
    for purpose, environment in write_environments(name, settings):
        run = runs[name, stack]
        workflows = _pairs(settings, purpose, environment)
        for workflow in workflows:
            main, refused = tokens(settings.github.repository, environment, workflow)
            assert azure_allows(run, purpose, main), (
                f"{name}/{stack} {purpose}: main's {workflow} in {environment} refused"
            )
            assert not azure_allows(run, purpose, main, audience=STS_AUDIENCE)
            for token in refused:
                assert not azure_allows(run, purpose, token), f"{name}/{stack} {purpose}: {token.label} allowed"
            checked += 1
        if not workflows:
            main, _ = tokens(settings.github.repository, environment, "train.yml")
            assert not azure_allows(run, purpose, main)
    assert checked, f"{name}/{stack}: no write identity checked"


def test_token_subject_matches_githubs_documented_example() -> None:
    """GitHub's docs give, for the template repo+context+job_workflow_ref, the example
    ``repo:octo-org/octo-repo:environment:prod:job_workflow_ref:octo-org/octo-automation/.github/workflows/oidc.yml@refs/heads/main``."""
    sub = github_oidc.claims_subject(
        {
            "repository": "octo-org/octo-repo",
            "context": "environment:prod",
            "job_workflow_ref": "octo-org/octo-automation/.github/workflows/oidc.yml@refs/heads/main",
        }
    )
    assert (
        sub
        == "repo:octo-org/octo-repo:environment:prod:job_workflow_ref:octo-org/octo-automation/.github/workflows/oidc.yml@refs/heads/main"
    )
    assert github_oidc.subject("o/r", "Production:V1", "w.yml").startswith("repo:o/r:environment:Production%3AV1:")
