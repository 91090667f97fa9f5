"""CI setup commands: ``detops ci setup github`` and ``detops ci setup azure-devops``.

Each reads ``pulumi stack output --json`` (files, or ``-`` for stdin: the input of ``detops settings
ci-variables``) and the repository's workflow / pipeline files, compares the CI system with what they need and
sends only what differs, one line per change; ``--dry-run`` prints the requests (method, path, body) instead.

``detops ci setup github OUTPUTS [--repo ORG/REPO] [--reviewer ENV=LOGIN|ENV=ORG/TEAM]... [--dry-run]``
(:mod:`deployment.ci_github`): token ``GITHUB_TOKEN`` or ``GH_TOKEN``; repository ``--repo`` or
``GITHUB_REPOSITORY``; API ``GITHUB_API_URL`` (GitHub Enterprise) or api.github.com.

``detops ci setup azure-devops OUTPUTS [--approver GUID]... [--dry-run]`` (:mod:`detops.ci.azure_devops`):
organization and project from flags or ``AZURE_DEVOPS_ORG`` / ``AZURE_DEVOPS_PROJECT`` (in a pipeline
``SYSTEM_COLLECTIONURI`` / ``SYSTEM_TEAMPROJECT``), token ``AZURE_DEVOPS_EXT_PAT`` or ``SYSTEM_ACCESSTOKEN``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)

ci = typer.Typer(help="Set up a CI system from the stack outputs.", no_args_is_help=True)
setup = typer.Typer(help="Create or update what the workflows rely on (idempotent).", no_args_is_help=True)
ci.add_typer(setup, name="setup")
app = typer.Typer()
"""This command group (mounted by :mod:`detops.cli`): ``detops ci setup ...``."""
app.add_typer(ci, name="ci")


def _reviewers(values: list[str]) -> dict[str, list[str]]:
    from training.errors import ConfigError

    found: dict[str, list[str]] = {}
    for value in values:
        env, sep, who = value.partition("=")
        if not sep or not env or not who:
            raise ConfigError(
                f"--reviewer {value!r}: use ENVIRONMENT=LOGIN or ENVIRONMENT=ORG/TEAM ('*' for every gate)"
            )
        found.setdefault(env, []).extend(w for w in who.split(",") if w)
    return found


@setup.command("github")
def github(
    outputs: Annotated[
        list[Path],
        typer.Argument(help="`pulumi stack output --json` of the stack (and of its bootstrap): files, or - for stdin."),
    ],
    repo: Annotated[str | None, typer.Option("--repo", help="owner/name (default: GITHUB_REPOSITORY).")] = None,
    reviewer: Annotated[
        list[str] | None,
        typer.Option(
            "--reviewer", help="ENV=LOGIN or ENV=ORG/TEAM for a gated environment ('*=LOGIN': every gate); repeatable."
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the requests (method, path, body); send none.")
    ] = False,
    workflows: Annotated[
        Path | None,
        typer.Option("--workflows", help="The workflows folder (default: ./.github/workflows, else the project's)."),
    ] = None,
) -> None:
    """Environments (reviewers, main-only branch policies), variables, main's protection, the OIDC subject template."""
    from deployment import ci_github
    from detops import contract
    from training.errors import ConfigError

    repository = repo or os.environ.get("GITHUB_REPOSITORY") or ""
    if repository.count("/") != 1:
        raise ConfigError("give the repository as --repo OWNER/NAME (or GITHUB_REPOSITORY)")
    documents = []
    for path in outputs:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
        try:
            documents.append((str(path), json.loads(text)))
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not `pulumi stack output --json` output ({e})") from None
    data = ci_github.merge_outputs(documents)
    if data.get("cloud") == "azure":
        err.print(
            "warning: on Azure the pull-request preview's infra-reader cannot sign in once the subject template "
            "is set (exact-match federated credentials; docs/cicd.md, 'OIDC to Azure and AWS')"
        )
    variables = contract.ci_variables(data)
    here = Path(".github/workflows")
    want = ci_github.wanted(
        repository,
        variables.repository,
        variables.environments,
        _reviewers(reviewer or []),
        workflows or (here if here.is_dir() else None),
    )
    api = ci_github.connect(
        os.environ.get("GITHUB_TOKEN") or os.environ.get("GH_TOKEN") or "",
        os.environ.get("GITHUB_API_URL") or None,
        ci_github.TRANSPORT,
    )
    requests = ci_github.plan(api, want)
    if not requests:
        out.print(f"{repository}: nothing to change")
        return
    if dry_run:
        for r in requests:
            sys.stdout.write(r.line() + "\n")
        out.print(f"# dry run: {len(requests)} request(s) not sent", style="dim")
        return
    sent = ci_github.apply(api, requests, lambda r: out.print(f"changed: {r.why}"))
    out.print(f"{repository}: {sent} change(s)")


def read_outputs(paths: list[Path]) -> list[dict]:
    """Each ``pulumi stack output --json`` given (``-``: stdin). Raises ConfigError naming a file that is not one."""
    from training.errors import ConfigError

    found = []
    for path in paths:
        try:
            text = sys.stdin.read() if str(path) == "-" else path.read_text()
        except OSError as e:
            raise ConfigError(f"{path}: {e.strerror}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not `pulumi stack output --json` output ({e})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: not `pulumi stack output --json` output (not an object)")
        found.append(data)
    return found


@setup.command("azure-devops")
def azure_devops(
    outputs: Annotated[
        list[Path],
        typer.Argument(
            help="`pulumi stack output --json` of infra/azure (and of infra/bootstrap), files or - for stdin."
        ),
    ],
    approver: Annotated[
        list[str],
        typer.Option(
            "--approver",
            help="Identity id (GUID) of a person or group who approves the gated environments and the registrar connection; repeat for more.",
        ),
    ] = [],  # noqa: B006
    organization: Annotated[
        str | None,
        typer.Option("--organization", help="Name or URL (default: AZURE_DEVOPS_ORG / SYSTEM_COLLECTIONURI)."),
    ] = None,
    project: Annotated[
        str | None, typer.Option("--project", help="Default: AZURE_DEVOPS_PROJECT / SYSTEM_TEAMPROJECT.")
    ] = None,
    repository: Annotated[
        str | None,
        typer.Option(
            "--repository",
            help="Azure Repos repository of the YAML (default: the project's name), or owner/name with --github-connection.",
        ),
    ] = None,
    github_connection: Annotated[
        str | None,
        typer.Option(
            "--github-connection", help="The pipelines' YAML is on GitHub: name of the GitHub service connection."
        ),
    ] = None,
    backend: Annotated[str, typer.Option("--backend", help="Cloud of the connections (azureml).")] = "azureml",
    pipelines: Annotated[Path, typer.Option("--pipelines", help="The folder of the pipeline files.")] = Path(
        ".azure-pipelines"
    ),
    prefix: Annotated[str, typer.Option("--prefix", help="Pipelines are named <prefix><file stem>.")] = "detops-",
    common_group: Annotated[
        str,
        typer.Option(
            "--common-group", help="The group of the settings-named outputs (detops-production for the prod stack)."
        ),
    ] = "detops-common",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the requests (method, path, body) instead of sending them.")
    ] = False,
) -> None:
    """Service connections, environments and their checks, variable groups, the four pipelines and their
    permissions on Azure DevOps; prints what it changed and the subjects `pulumi up` pins (docs/cicd.md)."""
    from detops.ci import azure_devops as ado
    from training.errors import ConfigError
    from training.settings import AzureDevOpsSettings

    settings = AzureDevOpsSettings.load()
    org = ado.organization_name(organization or settings.organization or "")
    project = project or settings.project
    if not project:
        raise ConfigError("--project: set AZURE_DEVOPS_PROJECT (or SYSTEM_TEAMPROJECT in a pipeline)")
    merged = ado.merge_outputs(read_outputs(outputs))
    desired = ado.desired_state(
        merged, ado.read_pipelines(pipelines), backend=backend, prefix=prefix, common_group=common_group
    )
    repo = ado.Repository(repository or project, "gitHub" if github_connection else "azureReposGit", github_connection)
    pat, access = (t.get_secret_value() if t else None for t in (settings.pat, settings.access_token))
    http = ado.connect(pat, access) if (pat or access or not dry_run) else None
    client = ado.AzureDevOps(org, project, http, dry_run=dry_run)
    try:
        report = ado.setup(client, desired, approver, repo)
    finally:
        if http is not None:
            http.close()
    _print_report(report, offline=client.offline, dry_run=dry_run, tenant_id=desired.tenant_id)
    if report.problems:
        raise ConfigError("; ".join(report.problems))


def _print_report(report, *, offline: bool, dry_run: bool, tenant_id: str) -> None:
    """What ``ci setup azure-devops`` did (or would do): the requests of a dry run, one line per change, and the
    ``pulumi config set`` lines that pin each connection's subject."""
    from detops.ci import azure_devops as ado

    if dry_run:
        if offline:
            out.print(
                "# dry run without a token: an empty project is assumed; negative / 00000000-... ids stand for new resources"
            )
        for request in report.writes:
            out.print(request.show())
    verb = "would change" if dry_run else "changed"
    for line in report.changes:
        out.print(f"{verb}: {line}")
    out.print(f"{len(report.changes)} {verb}, {report.unchanged} unchanged")
    for line in report.skipped:
        out.print(f"skipped: {line}")
    if not dry_run:
        out.print("# pin each connection's subject in the stack that federates its identity, then `pulumi up`:")
        for line in ado.subject_commands(report.connections, tenant_id):
            out.print(line)
