"""CI setup commands: ``detops ci setup azure-devops`` (and its GitHub twin, ``detops ci setup github``).

Each reads ``pulumi stack output --json`` (files, or ``-`` for stdin) and the repository's pipeline files,
then creates or updates what the pipelines rely on through the CI system's REST API; ``--dry-run`` prints
the requests instead of sending them. The work is in :mod:`detops.ci`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

out = Console(soft_wrap=True, highlight=False)

group = typer.Typer(help="Set up the CI systems from the stack outputs.", no_args_is_help=True)
setup_group = typer.Typer(help="Create or update what the pipelines rely on (idempotent).", no_args_is_help=True)
group.add_typer(setup_group, name="setup")
app = typer.Typer()
"""This command group (joined by :mod:`detops.cli` with ``add_typer``): ``detops ci ...``."""
app.add_typer(group, name="ci")


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


@setup_group.command("azure-devops")
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
    if dry_run:
        if client.offline:
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
        for line in ado.subject_commands(report.connections, desired.tenant_id):
            out.print(line)
    if report.problems:
        raise ConfigError("; ".join(report.problems))
