"""Training commands: ``prepare``, ``train``, ``evaluate``, ``export``, ``run``.

Each parses its options, calls one function of :mod:`training.pipeline` and reports; no logic here.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

out = Console(soft_wrap=True)  # paths and URLs stay on one line in logs

ConfigArg = Annotated[Path, typer.Argument(help="Run config YAML (see configs/bccd.yaml).", exists=False)]
RunDirOpt = Annotated[str, typer.Option("--run-dir", help="Run folder (local path, az:// or s3:// URL).")]
DatastoreOpt = Annotated[
    str | None, typer.Option("--datastore", help="Datastore root; overrides the config's `datastore`.")
]
VerboseOpt = Annotated[
    bool,
    typer.Option("--verbose", "-v", help="Show TensorFlow, absl and Python warnings on the terminal (else: log file)."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key, e.g. --set train.steps=50 (repeatable)."),
]

app = typer.Typer(help="Training commands: prepare, train, evaluate, export, run.")
"""This command group; :mod:`detops.cli` mounts it with ``add_typer`` (commands at the top level)."""


@contextlib.contextmanager
def _quiet(verbose: bool):
    """TensorFlow, absl and Python warnings of the ``with`` body go to ``<DETOPS_HOME>/logs/`` (the
    terminal with ``verbose``); yields :class:`training.report.LogRouting`. When the body raises,
    the log file's path is printed (``full log: ...``) before the error."""
    from training import pipeline, report

    with report.quiet_logs(verbose, log_dir=str(pipeline.detops_home() / "logs")) as logs:
        try:
            yield logs
        except BaseException:
            if logs.path:
                logs.terminal.write(f"full log: {logs.path}\n")
            raise


@app.command()
def prepare(
    config: ConfigArg,
    datastore: DatastoreOpt = None,
    run_dir: Annotated[str | None, typer.Option("--run-dir", help="Use this run folder.")] = None,
    set_: SetOpt = None,
) -> None:
    """Ingest, validate, split and convert a labelled dataset into a run folder."""
    from training import pipeline

    cfg = pipeline.load_run_config(config, overrides=set_ or [], datastore=datastore)
    run = pipeline.prepare(cfg, run_dir=run_dir, console=out)  # prints the data-quality summary
    out.print(f"prepared {run.url}")


@app.command()
def train(
    run_dir: RunDirOpt,
    steps: Annotated[int | None, typer.Option("--steps", help="Override the number of train steps.")] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Train (or resume training) the detector of a prepared run."""
    from training import pipeline, report

    with _quiet(verbose):
        reporter = report.Reporter(out)
        with reporter.stage("train"):
            pipeline.train(pipeline.Run.open(run_dir), steps=steps, console=reporter)


@app.command()
def evaluate(
    run_dir: RunDirOpt,
    split: Annotated[list[str] | None, typer.Option("--split", help="Split(s) to evaluate.")] = None,
    verbose: VerboseOpt = False,
) -> None:
    """COCO metrics of the latest checkpoint on train/val/test; writes evaluation/<split>/."""
    from training import pipeline
    from training.report import print_metrics

    with _quiet(verbose):
        metrics = pipeline.evaluate(pipeline.Run.open(run_dir), splits=split or None)
    print_metrics(metrics, out)


@app.command()
def export(run_dir: RunDirOpt, verbose: VerboseOpt = False) -> None:
    """Export SavedModel and TFLite (float, int8) with a parity check; writes export/ (exit 7 if parity fails)."""
    from training import pipeline
    from training.errors import ExportError
    from training.report import parity_failure

    with _quiet(verbose):
        parity = pipeline.export(pipeline.Run.open(run_dir))
    failure = parity_failure(parity)
    if failure:
        raise ExportError(failure)


@app.command()
def run(
    config: Annotated[
        Path | None, typer.Argument(help="Run config YAML (needed unless --run-dir names a prepared run).")
    ] = None,
    datastore: DatastoreOpt = None,
    set_: SetOpt = None,
    run_dir: Annotated[
        str | None, typer.Option("--run-dir", help="Resume this run folder instead of a new one.")
    ] = None,
    stage: Annotated[
        list[str] | None,
        typer.Option("--stage", help="Run only this stage (repeatable): prepare, train, evaluate, export."),
    ] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Override the number of train steps.")] = None,
    verbose: VerboseOpt = False,
) -> None:
    """The pipeline: prepare -> train -> evaluate -> export into one run folder, skipping the
    stages run.json records complete (the Azure ML steps run it one --stage at a time).

    Shows one progress bar per stage and ends with a summary (verdict first, run folder, test
    metrics, per-class AP50, TFLite parity, wall time per stage, next command). TensorFlow, absl
    and Python warnings go to ``logs/detops.log`` in the run folder (``--verbose`` shows them).
    Exits 7 (ExitCode.EXPORT) when the TFLite parity check failed; the run folder is kept complete.
    A model under the quality floor (no test detections, test AP50 under ``gate.min_ap50`` or a class
    under ``gate.min_class_ap50``) leads the summary but exits 0: the run finished; ``detops gate``
    refuses it.
    """
    from training import floors, pipeline, report
    from training.errors import ExportError

    cfg = None
    if config is not None:
        cfg = pipeline.load_run_config(config, overrides=set_ or [], datastore=datastore)
    with _quiet(verbose) as logs:
        reporter = report.Reporter(out)
        run = pipeline.run_stages(cfg, run_dir, stages=tuple(stage or pipeline.STAGES), steps=steps, console=reporter)
        log_path = logs.copy_into(run.local_dir)
        if log_path and run.url != run.local_dir:
            run.publish()
            log_path = f"{run.url}/{report.LOG_NAME}"
    metrics = pipeline.read_run_metrics(run)
    parity_file = Path(run.path("export", "parity.json"))
    parity = json.loads(parity_file.read_text()) if parity_file.exists() else None
    failure = report.print_summary(
        out,
        run_url=run.url,
        project=run.manifest.get("project", "detops"),
        status=run.manifest.get("status", "?"),
        metrics=metrics,
        parity=parity,
        stage_seconds={**report.stage_seconds_from_manifest(run.manifest), **reporter.stage_seconds},
        train_info=run.manifest.get("stages", {}).get("train"),
        log_path=log_path,
        floor=floors.gate_config(run.manifest.get("config"), where=f"{run.url}/run.json"),
    )
    if failure:
        raise ExportError(failure)
