"""Cloud commands: ``submit`` (run the pipeline on a backend), ``wait`` / ``cancel`` (a submitted cloud
job) and ``finish`` (mark a run complete).

``detops submit CONFIG --backend local|azureml|sagemaker [--dry-run] [--wait/--no-wait]
[--set key=value]... [--out DIR] [--nodes N] [--skip-preflight]`` -- CI workflows call exactly these flags.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

out = Console()

app = typer.Typer(help="Cloud commands: submit a run to a backend, wait for or cancel its job, finish a run.")
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
    skip_preflight: Annotated[
        bool, typer.Option("--skip-preflight", help="Submit without first checking the cloud's GPU quota.")
    ] = False,
) -> None:
    """Run the pipeline (prepare -> train -> evaluate -> export) on a backend.

    A cloud backend first checks the quota for the instance type and count (exit 4 with the
    numbers when it is short; ``--skip-preflight`` submits anyway; ``--dry-run`` does not ask).
    """
    from training.backends import SubmitOptions, get_backend

    b = get_backend(backend)
    result = b.submit(SubmitOptions(config, set_ or [], dry_run=dry_run, wait=wait, out_dir=out_dir, nodes=nodes,
                                    console=out, preflight=not skip_preflight))
    if dry_run:
        out.print(f"[bold]dry run[/]: would create on {backend}:")
    out.print_json(json.dumps(result.to_dict(), default=str))

def _job_control(backend: str):
    from training.backends import get_backend
    from training.backends.base import JobControl
    from training.errors import ConfigError

    b = get_backend(backend)
    if not isinstance(b, JobControl):
        raise ConfigError(f"backend {backend!r} runs in the foreground: no cloud job to wait for or cancel")
    return b


@app.command("wait")
def wait_cmd(
    job: Annotated[str, typer.Option("--job", help="Job name `submit` printed (its `name`).")],
    backend: Annotated[str, typer.Option("--backend", help="azureml or sagemaker.")],
    timeout_minutes: Annotated[
        float, typer.Option("--timeout-minutes", min=0, help="Wait at most this long (0: ask once).")
    ] = 50.0,
    poll_seconds: Annotated[float, typer.Option("--poll-seconds", min=1, help="Seconds between status calls.")] = 30.0,
    still_running_ok: Annotated[
        bool, typer.Option("--still-running-ok", help="Exit 0 when the job is still running at the timeout.")
    ] = False,
) -> None:
    """Wait (bounded) for a submitted cloud job: exit 0 when it completed, 6 when it failed or was
    cancelled, 4 when it is still running at the timeout (0 with --still-running-ok)."""
    from training.backends.base import COMPLETED, FAILED
    from training.errors import BackendError, GateError

    state, text = _job_control(backend).wait(job, timeout_s=timeout_minutes * 60, poll_s=poll_seconds, console=out)
    out.print_json(json.dumps({"job": job, "backend": backend, "state": state, "status": text}))
    if state == FAILED:
        raise BackendError(f"{backend} job {job} ended {text}")
    if state != COMPLETED and not still_running_ok:
        raise GateError(f"{backend} job {job} is still {text} after {timeout_minutes:g} minutes")


@app.command()
def cancel(
    job: Annotated[str, typer.Option("--job", help="Job name `submit` printed.")],
    backend: Annotated[str, typer.Option("--backend", help="azureml or sagemaker.")],
) -> None:
    """Cancel a submitted cloud job (CI runs this when a workflow is cancelled)."""
    status = _job_control(backend).cancel(job)
    out.print_json(json.dumps({"job": job, "backend": backend, "status": status}))


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
