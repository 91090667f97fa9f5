"""CI setup commands: ``detops ci setup github`` (and the Azure DevOps counterpart beside it).

``detops ci setup github OUTPUTS [--repo ORG/REPO] [--reviewer ENV=LOGIN|ENV=ORG/TEAM]... [--dry-run]``
reads ``pulumi stack output --json`` (a file, or ``-`` for stdin: the input of ``detops settings
ci-variables``), compares the repository with what the workflows need (:mod:`deployment.ci_github`) and
sends only what differs, one line per change. ``--dry-run`` reads the repository and prints the requests
(method, path, body) without sending any. Token: ``GITHUB_TOKEN`` or ``GH_TOKEN``; repository: ``--repo``
or ``GITHUB_REPOSITORY``; API: ``GITHUB_API_URL`` (GitHub Enterprise) or api.github.com.
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
