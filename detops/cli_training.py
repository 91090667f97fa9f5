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
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key, e.g. --set train.steps=50 (repeatable)."),
]

app = typer.Typer(help="Training commands: prepare, train, evaluate, export, run.")
"""This command group; :mod:`detops.cli` mounts it with ``add_typer`` (commands at the top level)."""


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
    run = pipeline.prepare(cfg, run_dir=run_dir)
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
    print_metrics(metrics)

@app.command()
def export(run_dir: RunDirOpt) -> None:
    """Export SavedModel and TFLite (float, int8) with a parity check; writes export/."""
    from training import pipeline

    pipeline.export(pipeline.Run.open(run_dir))

@app.command()
def run(
    config: ConfigArg,
    datastore: DatastoreOpt = None,
    set_: SetOpt = None,
    run_dir: Annotated[
        str | None, typer.Option("--run-dir", help="Resume this run folder instead of a new one.")
    ] = None,
) -> None:
    """The whole local pipeline: prepare -> train -> evaluate -> export, into one run folder."""
    from training import pipeline

    cfg = pipeline.load_run_config(config, overrides=set_ or [], datastore=datastore)
    result = pipeline.run_all(cfg, run_dir=run_dir, console=out)
    print_metrics({"test": result.metrics["test"]})
    out.print(f"run folder: {result.run.url}")


def print_metrics(metrics: dict[str, dict]) -> None:
    """Print COCO metrics per split as a table, then each split's per-class AP50."""
    from rich.table import Table

    from training.names import COCO_METRIC_NAMES

    table = Table(title="COCO metrics")
    table.add_column("split")
    for name in COCO_METRIC_NAMES:
        table.add_column(name, justify="right")
    for split, m in metrics.items():
        table.add_row(split, *(f"{m[n]:.3f}" for n in COCO_METRIC_NAMES))
    out.print(table)
    for split, m in metrics.items():
        per = ", ".join(f"{k} {v['AP50']:.3f}" for k, v in m.get("per_class", {}).items())
        out.print(f"{split} per-class AP50: {per}")
