"""Training commands: ``prepare``, ``train``, ``evaluate``, ``export``, ``run``.

Each parses its options, calls one function of :mod:`training.pipeline` and reports; no logic here.
"""

from __future__ import annotations

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


def register(app: typer.Typer) -> None:
    """Mount the training commands on the ``detops`` app."""

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
    ) -> None:
        """Train (or resume training) the detector of a prepared run."""
        from training import pipeline

        pipeline.train(pipeline.Run.open(run_dir), steps=steps)

    @app.command()
    def evaluate(
        run_dir: RunDirOpt,
        split: Annotated[list[str] | None, typer.Option("--split", help="Split(s) to evaluate.")] = None,
    ) -> None:
        """COCO metrics of the latest checkpoint on train/val/test; writes evaluation/<split>/."""
        from training import pipeline

        metrics = pipeline.evaluate(pipeline.Run.open(run_dir), splits=split or None)
        pipeline.print_metrics(metrics, out)

    @app.command()
    def export(run_dir: RunDirOpt) -> None:
        """Export SavedModel and TFLite (float, int8) with a parity check; writes export/ (exit 7 if parity fails)."""
        from training import pipeline
        from training.errors import ExportError
        from training.report import parity_failure

        failure = parity_failure(pipeline.export(pipeline.Run.open(run_dir)))
        if failure:
            raise ExportError(failure)

    @app.command()
    def run(
        config: ConfigArg,
        datastore: DatastoreOpt = None,
        set_: SetOpt = None,
        run_dir: Annotated[
            str | None, typer.Option("--run-dir", help="Resume this run folder instead of a new one.")
        ] = None,
        verbose: VerboseOpt = False,
    ) -> None:
        """The whole local pipeline: prepare -> train -> evaluate -> export, into one run folder.

        Shows one progress bar per stage and ends with a summary (verdict, test metrics, parity,
        wall time per stage, next command). TensorFlow / absl logs and Python warnings go to
        ``logs/detops.log`` in the run folder (``--verbose`` shows them). Exits 7 (ExitCode.EXPORT)
        when the TFLite parity check failed; the run folder is kept complete.
        """
        from training import pipeline, report
        from training.errors import ExportError

        cfg = pipeline.load_run_config(config, overrides=set_ or [], datastore=datastore)
        with report.quiet_logs(verbose, log_dir=str(pipeline.detops_home() / "logs")) as logs:
            reporter = report.Reporter(out)
            try:
                result = pipeline.run_all(cfg, run_dir=run_dir, console=reporter)
            except BaseException:
                if logs.path:
                    logs.terminal.write(f"log (TensorFlow, absl, warnings): {logs.path}\n")
                raise
            log_path = logs.copy_into(result.run.local_dir)
            if log_path and result.run.url != result.run.local_dir:
                result.run.publish()
                log_path = f"{result.run.url}/{report.LOG_NAME}"
        manifest = result.run.manifest
        train_stage = manifest.get("stages", {}).get("train", {})
        seconds = {**report.stage_seconds_from_manifest(manifest), **reporter.stage_seconds}
        failure = report.print_summary(
            out,
            run_url=result.run.url,
            project=cfg.project,
            metrics=result.metrics,
            parity=result.parity,
            stage_seconds=seconds,
            train_info={"steps_run": train_stage.get("steps_run"), "steps_per_s": train_stage.get("steps_per_s", 0.0)},
            log_path=log_path,
        )
        if failure:
            raise ExportError(failure)
