"""Settings commands: ``detops settings docs|list|ci-variables``.

``ci-variables`` is the step from ``pulumi up`` to CI: it reads ``pulumi stack output --json`` (a file
or ``-`` for stdin) and prints the ``gh variable set`` or ``az pipelines variable-group create``
commands that put every output named like a setting into CI variables (or a dotenv file).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

out = Console(soft_wrap=True, highlight=False)
DOCS = Path(__file__).resolve().parents[1] / "docs" / "settings.md"


group = typer.Typer(help="The settings contract: docs, values, stack outputs -> CI variables.", no_args_is_help=True)
app = typer.Typer()
"""This command group (joined by :mod:`detops.cli` with ``add_typer``): ``detops settings ...``."""
app.add_typer(group, name="settings")


@group.command("docs")
def docs(
    write: Annotated[bool, typer.Option("--write", help="Write docs/settings.md.")] = False,
    check: Annotated[bool, typer.Option("--check", help="Exit 2 when docs/settings.md is stale.")] = False,
) -> None:
    """Print (or write / check) docs/settings.md, generated from the settings classes."""
    from detops.contract import render_markdown
    from training.errors import ConfigError

    text = render_markdown()
    if check:
        if not DOCS.exists() or DOCS.read_text() != text:
            raise ConfigError(f"{DOCS} is stale: run `detops settings docs --write`")
        out.print(f"{DOCS} is up to date")
    elif write:
        DOCS.write_text(text)
        out.print(f"wrote {DOCS}")
    else:
        sys.stdout.write(text)


@group.command("list")
def list_(
    command: Annotated[
        str | None, typer.Option("--for", help="Only what this call needs, e.g. 'submit --backend azureml'.")
    ] = None,
) -> None:
    """Every setting with whether it is set here (values of secrets never shown); exit 2 if a needed one is unset."""
    import os
    import shlex

    from detops.contract import all_settings, required_for
    from training.errors import ConfigError

    items = required_for(shlex.split(command), os.environ) if command else all_settings()
    missing = []
    for s in items:
        is_set = any(os.environ.get(n) for n in s.env)  # presence only, through the contract's names
        if not is_set and command:
            missing.append(s.name)
        out.print(f"{'set  ' if is_set else 'unset'} {' / '.join(s.env)}: {s.description}")
    if missing:
        raise ConfigError(f"`detops {command}` needs {', '.join(missing)} (docs/settings.md)")


@group.command("ci-variables")
def ci_variables(
    outputs: Annotated[Path, typer.Argument(help="`pulumi stack output --json` saved to a file, or - for stdin.")],
    fmt: Annotated[str, typer.Option("--format", help="github, azure-devops or dotenv.")] = "github",
    environment: Annotated[
        str | None, typer.Option("--environment", help="dotenv: the CI environment whose variables to add.")
    ] = None,
    group_name: Annotated[str, typer.Option("--group", help="azure-devops: the shared variable group.")] = "detops-common",
    repo: Annotated[
        str | None, typer.Option("--repo", help="github: owner/name (default: the current repository).")
    ] = None,
) -> None:
    """Turn stack outputs into GitHub variables, Azure DevOps variable groups or a dotenv file."""
    from detops import contract
    from training.errors import ConfigError

    text = sys.stdin.read() if str(outputs) == "-" else outputs.read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{outputs}: not `pulumi stack output --json` output ({e})") from None
    v = contract.ci_variables(data)
    if fmt == "github":
        lines = contract.github_commands(v, repo)
    elif fmt == "azure-devops":
        lines = contract.azure_devops_commands(v, group_name)
    elif fmt == "dotenv":
        lines = [contract.dotenv(v, environment).rstrip("\n")]
    else:
        raise ConfigError(f"--format {fmt!r}: use github, azure-devops or dotenv")
    sys.stdout.write("\n".join(lines) + "\n")
    if v.ignored:
        print(f"# not settings (left out): {', '.join(v.ignored)}", file=sys.stderr)
