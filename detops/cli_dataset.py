"""Dataset commands: ``detops dataset upload CONFIG`` (:mod:`training.dataset_upload`).

Copies the run config's dataset from the local datasets root (``--from``, else a local ``DETOPS_DATASETS``, else
``../shared/datasets`` beside a checkout) to the stack's datasets location (``--to``, else the ``DETOPS_DATASETS``
output of ``--outputs`` = ``pulumi stack output --json``, else a cloud URL in ``DETOPS_DATASETS``), keeping the
layout below the root, and prints the ``data.sha256`` pin to commit in the run config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

out = Console(soft_wrap=True, highlight=False)

dataset = typer.Typer(help="Put a run config's dataset where the cloud jobs read it.", no_args_is_help=True)
app = typer.Typer()
"""This command group (mounted by :mod:`detops.cli`): ``detops dataset ...``."""
app.add_typer(dataset, name="dataset")


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} B"


@dataset.command("upload")
def upload(
    config: Annotated[Path, typer.Argument(help="The run config (YAML) whose data paths say ${DETOPS_DATASETS}/...")],
    source: Annotated[
        str | None,
        typer.Option("--from", help="Local datasets root (default: DETOPS_DATASETS, else ../shared/datasets)."),
    ] = None,
    to: Annotated[
        str | None, typer.Option("--to", help="Destination datasets root: a folder, s3://BUCKET or az://CONTAINER.")
    ] = None,
    outputs: Annotated[
        Path | None,
        typer.Option("--outputs", help="`pulumi stack output --json` of the stack (- for stdin): its DETOPS_DATASETS."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be copied; copy nothing.")] = False,
) -> None:
    """Copy the dataset to the stack's datasets location and print its data.sha256 pin (idempotent)."""
    from detops import contract
    from detops.cli_ci import read_outputs
    from training import storage
    from training.dataset_upload import upload_dataset
    from training.errors import ConfigError
    from training.settings import AzureSettings, CommonSettings, azure_storage_sign_in_given

    settings = CommonSettings.load()
    # the stack's outputs named like settings (DETOPS_DATASETS, AZURE_STORAGE_ACCOUNT_NAME), read as settings
    stack = contract.ci_variables(read_outputs([outputs])[0]).repository if outputs else {}
    stack_datasets, stack_account = CommonSettings.load(stack).datasets, AzureSettings.load(stack).storage_account_name
    env = settings.datasets
    if source is None:
        source = env if env and storage.is_local(env) else str(settings.datasets_root)
    destination = to or (stack_datasets if outputs else None) or (env if env and not storage.is_local(env) else None)
    if not destination:
        where = f"{outputs} has no DETOPS_DATASETS output" if outputs else "no --to, --outputs or cloud DETOPS_DATASETS"
        raise ConfigError(f"dataset upload: no destination ({where}); give --to URI or --outputs FILE")
    options = {}
    if destination.startswith(("az://", "abfs://")) and stack_account and not azure_storage_sign_in_given():
        options["account_name"] = stack_account

    def show(action: str, src: str, dst: str, size: int) -> None:
        if dry_run and action == "copy":
            out.print(f"would copy {src} -> {dst} ({_mib(size)})")

    plan = upload_dataset(config, source, destination, dry_run=dry_run, storage_options=options, on_file=show)
    c = plan.counts
    verb = "would upload" if dry_run else "uploaded"
    for local, url in plan.folders:
        out.print(f"{local} -> {url}")
    out.print(
        f"{verb} {c['uploaded']} file(s), {_mib(c['bytes_uploaded'])}; "
        f"skipped {c['skipped']} already there, {_mib(c['bytes_skipped'])}"
    )
    out.print(f"data.sha256: {plan.sha256}")
    out.print(
        f"# commit it in {config} (data: sha256: ...); the jobs read DETOPS_DATASETS={plan.destination}", style="dim"
    )
