"""Cloud commands: ``submit`` (run the pipeline on a backend) and ``finish`` (mark a run complete).

``detops submit CONFIG --backend local|azureml|sagemaker [--dry-run] [--wait/--no-wait]
[--set key=value]... [--out DIR] [--nodes N]`` -- CI workflows call exactly these flags.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

out = Console()

app = typer.Typer(help="Cloud commands: submit a run to a backend, finish a run.")
"""This command group; :mod:`detops.cli` mounts it with ``add_typer`` (commands at the top level)."""


@app.command()
def submit(
    config: Annotated[Path, typer.Argument(help="Run config YAML (see configs/bccd.yaml).")],
    backend: Annotated[str, typer.Option("--backend", help="local, azureml or sagemaker.")] = "local",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Build and validate the job specs, write them, submit nothing.")
    ] = False,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Stream status until the job ends.")] = True,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config key, e.g. --set train.steps=50.")
    ] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Folder for the job specs.")] = None,
    nodes: Annotated[int, typer.Option("--nodes", min=1, help="Training machines (multi-worker).")] = 1,
) -> None:
    """Run the pipeline (prepare -> train -> evaluate -> export) on a backend."""
    from training.backends import get_backend

    b = get_backend(backend)
    result = b.submit(config, set_ or [], dry_run=dry_run, wait=wait, out_dir=out_dir, nodes=nodes, console=out)
    if dry_run:
        out.print(f"[bold]dry run[/]: would create on {backend}:")
    out.print_json(json.dumps(result.to_dict(), default=str))

@app.command()
def finish(
    run_dir: Annotated[str, typer.Option("--run-dir", help="Run folder (local path, az:// or s3:// URL).")],
) -> None:
    """Mark a run complete after checking its prepare/train/evaluate/export stages finished.

    The last step of a cloud pipeline calls this; ``run.json`` is written last (a run is
    complete only when ``status`` says so). Exit 4 when a stage is missing.
    """
    from training.errors import GateError
    from training.run import Run

    run = Run.open(run_dir)
    missing = run.missing_stages()
    if missing:
        raise GateError(f"{run_dir}: stage(s) {', '.join(missing)} did not finish; the run stays {run.manifest.get('status')}")
    run.finish("complete")
    out.print(f"run {run.id} complete: {run.url}")
