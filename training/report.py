"""What a person sees while a run works and when it ends: quiet logs, one progress bar per stage, a summary.

* :func:`quiet_logs` sends TensorFlow's C++ log lines, absl and Python ``logging`` records and Python
  warnings (Keras, Model Garden, NumPy) to a log file instead of the terminal: it points file
  descriptor 2 at the file (the C++ runtime writes there directly), so it must start before
  TensorFlow is imported. ``verbose=True`` leaves the terminal as it is.
* :class:`Reporter` is the console the pipeline stages write to (``print``), plus one rich progress
  bar per stage with elapsed time and ETA (:meth:`Reporter.stage`, :meth:`Reporter.advance`,
  :meth:`Reporter.train_progress`); it records each stage's wall time.
* :func:`print_summary` prints the final summary of a run: verdict first (a model under the quality
  floor of :mod:`training.floors` leads, then a failed TFLite parity), the run folder, the 12 COCO figures of the test split (other splits' rows too), per-class
  AP50, the parity verdict, wall time per stage and the next command. Tables get the width they
  need when the output is not a terminal (CI logs), so no figure is cut.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from training.evaluate import COCO_STAT_NAMES
from training.names import STAGES

LOG_NAME = os.path.join("logs", "detops.log")  # inside the run folder
_PLAIN_WIDTH = 160  # columns of a progress line when the output is not a terminal (CI logs, files)


@dataclass
class LogRouting:
    """Where the logs of this process go: ``path`` (a file) and ``terminal`` (the real stderr)."""

    path: str | None
    terminal: TextIO

    def copy_into(self, run_dir: str) -> str | None:
        """Copy the log file to ``<run_dir>/logs/detops.log``; return that path (None when verbose)."""
        if not self.path:
            return None
        for stream in (sys.stderr, sys.stdout):
            with contextlib.suppress(Exception):
                stream.flush()
        dest = os.path.join(run_dir, LOG_NAME)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if os.path.abspath(dest) != os.path.abspath(self.path):
            shutil.copyfile(self.path, dest)
        return dest


@contextlib.contextmanager
def quiet_logs(verbose: bool = False, log_dir: str | None = None) -> Iterator[LogRouting]:
    """Route TensorFlow / absl / Python logging and warnings to a log file for the ``with`` body.

    Args:
      verbose: when True nothing is redirected (everything shows on the terminal).
      log_dir: folder of the log file (default: the system temporary folder); the file is
        ``detops-<UTC time>-<pid>.log``; :meth:`LogRouting.copy_into` puts it in the run folder.

    Yields:
      :class:`LogRouting`; its ``terminal`` is a stream on the original stderr, for the messages a
      person must see (errors).
    """
    if verbose:
        yield LogRouting(None, sys.stderr)
        return
    folder = log_dir or tempfile.gettempdir()
    os.makedirs(folder, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    path = os.path.join(folder, f"detops-{stamp}-{os.getpid()}.log")
    for stream in (sys.stderr, sys.stdout):
        with contextlib.suppress(Exception):
            stream.flush()
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    saved_fd = os.dup(2)
    terminal = os.fdopen(os.dup(saved_fd), "w", buffering=1)
    os.dup2(log_fd, 2)  # C++ (TensorFlow runtime) and Python's sys.stderr now write to the file
    os.close(log_fd)
    root = logging.getLogger()
    log_stream = open(path, "a", buffering=1)  # noqa: SIM115 - closed in the finally below
    handler = logging.StreamHandler(log_stream)  # Python logging and warnings, whatever sys.stderr is
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    old_showwarning = warnings.showwarning
    try:
        yield LogRouting(path, terminal)
    finally:
        logging.captureWarnings(False)
        warnings.showwarning = old_showwarning
        root.removeHandler(handler)
        root.setLevel(old_level)
        log_stream.close()
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        with contextlib.suppress(Exception):
            terminal.close()


def _fmt_seconds(s: float) -> str:
    s = round(s)
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


@dataclass
class Reporter:
    """The console of a run: messages, one progress bar per stage (rich), stage wall times.

    Pass it as ``console`` to :mod:`training.pipeline` functions. ``console`` is a
    ``rich.console.Console``; messages are printed above the live bars.
    """

    console: Any
    stage_seconds: dict[str, float] = field(default_factory=dict)
    train_rate: float | None = None
    _progress: Any = None
    _task: Any = None
    _stage: str | None = None

    def print(self, *args: Any, **kwargs: Any) -> None:
        """Print a message (above the progress bars)."""
        self.console.print(*args, **kwargs)

    @contextlib.contextmanager
    def stage(self, name: str, total: float | None = None) -> Iterator[Reporter]:
        """A progress bar named ``name`` for the ``with`` body; records its wall time.

        During the stage stdout belongs to the bars and to :meth:`print`: anything else printed to
        ``sys.stdout`` (Orbit prints each of its log messages) goes to stderr, which is the run's
        log file under :func:`quiet_logs` and the terminal with ``--verbose``.
        """
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        # No markup in the columns: rich parses markup with a lazy relative import, and the live
        # display renders from its own thread; while Model Garden imports through etils' lazy-import
        # hook (a global __import__ patch) that import fails ("Relative import statements not
        # supported (markup)").
        progress = Progress(
            SpinnerColumn(finished_text=Text("done", style="green")),
            TextColumn("{task.description:<9}", style="bold", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}", markup=False),
            TextColumn("elapsed", markup=False),
            TimeElapsedColumn(),
            TextColumn("ETA", markup=False),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
            redirect_stdout=False,  # stray prints go to stderr (below), not above the bars
            redirect_stderr=False,  # stderr stays where quiet_logs sent it (the log file)
        )
        self._progress, self._stage = progress, name
        self._task = progress.add_task(name, total=total, info="")
        t0 = time.monotonic()
        # Pin the console to today's stdout for the stage: sys.stdout points at stderr during the
        # stage (or wherever code in the stage sends it) and the bars must keep their stream. Outside a terminal the bar is printed once, when the stage ends, at
        # the width it needs (rich would cut it at 80 columns).
        saved_file, saved_width = self.console._file, self.console.width
        self.console.file = self.console.file
        if not self.console.is_terminal:
            self.console.width = max(saved_width, _PLAIN_WIDTH)
        progress.start()
        ok = False
        try:
            with contextlib.redirect_stdout(sys.stderr):
                yield self
            ok = True
        finally:
            task = progress.tasks[0]
            if ok:
                done = task.total if task.total is not None else max(task.completed, 1)
                progress.update(self._task, total=done, completed=done)
            progress.stop()
            self.console.file, self.console.width = saved_file, saved_width
            self.stage_seconds[name] = self.stage_seconds.get(name, 0.0) + time.monotonic() - t0
            self._progress = self._task = self._stage = None

    def advance(self, amount: float = 1, total: float | None = None, info: str | None = None) -> None:
        """Advance the current stage's bar by ``amount`` (optionally set its total and info text)."""
        if self._progress is None:
            return
        kwargs: dict[str, Any] = {"advance": amount}
        if total is not None:
            kwargs["total"] = total
        if info is not None:
            kwargs["info"] = info
        self._progress.update(self._task, **kwargs)

    def train_progress(self, step: int, total: int, loss: float, rate: float) -> None:
        """Training callback (:func:`training.train.train_model`): global step, loss, steps/s."""
        self.train_rate = rate
        if self._progress is not None:
            self._progress.update(self._task, completed=step, total=total, info=f"loss {loss:.3f}  {rate:.2f} steps/s")


def _wide(console) -> dict:
    """``print`` kwargs for one-line messages: no wrapping (``soft_wrap``) when not a terminal."""
    return {} if console.is_terminal else {"soft_wrap": True}


def print_wide(console, renderable) -> None:
    """Print ``renderable`` (a table) at its natural width when the output is not a terminal.

    Rich renders at most ``console.width`` columns (80 when stdout is a file or a pipe) and cuts
    cells with an ellipsis; CI logs have no width, so widen the console for this one print.
    """
    if console.is_terminal:
        console.print(renderable)
        return
    from rich.measure import Measurement

    old = console.width
    need = Measurement.get(console, console.options.update(width=10_000), renderable).maximum
    console.width = max(old, need)
    try:
        console.print(renderable)
    finally:
        console.width = old


def metrics_table(metrics: dict[str, dict], title: str = "COCO metrics (bbox)"):
    """A rich table of the 12 COCO figures, one row per split."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("split", no_wrap=True)
    for name in COCO_STAT_NAMES:
        table.add_column(name, justify="right", no_wrap=True, min_width=5)
    for split, m in metrics.items():
        table.add_row(split, *(f"{m[n]:.3f}" if n in m else "-" for n in COCO_STAT_NAMES))
    return table


def print_metrics(metrics: dict[str, dict], console) -> None:
    """Print COCO metrics per split (all 12 figures) and per-class AP50, never cut."""
    print_wide(console, metrics_table(metrics))
    for split, m in metrics.items():
        per = ", ".join(f"{k} {v['AP50']:.3f}" for k, v in m.get("per_class", {}).items())
        console.print(f"{split} per-class AP50: {per}", **_wide(console))


def parity_lines(parity: dict) -> list[str]:
    """One line per TFLite variant: AP50 and AP deltas vs the SavedModel, bound, verdict (or why the
    check was not measurable)."""
    out = []
    for name, p in parity.items():
        if not isinstance(p, dict) or "passed" not in p:
            continue
        if p.get("measurable") is False:
            out.append(
                f"TFLite {name}: parity not measurable: the SavedModel made {p.get('detections_savedmodel')} detections "
                f"on the test split (at least {p.get('min_detections')} needed, export.parity_min_detections)"
            )
            continue
        out.append(
            f"TFLite {name}: AP50 {p['AP50_tflite']:.3f} (SavedModel {p['AP50_savedmodel']:.3f}, "
            f"delta {p['delta_AP50']:+.3f}), AP delta {p['delta_AP']:+.3f}, bound {p.get('max_delta', float('nan')):.3f}: "
            + ("passed" if p["passed"] else "FAILED")
        )
    return out


def parity_failure(parity: dict | None) -> str | None:
    """A one-line reason when the parity check failed, else None.

    A variant that was not measurable (``"measurable": false``, too few detections) has not failed
    a comparison: its run is reported by the quality floor (:func:`floor_problem`), not here.
    """
    if not parity or parity.get("passed", True):
        return None
    bad = [
        f"{k} AP50 delta {v['delta_AP50']:+.3f}, AP delta {v['delta_AP']:+.3f} (bound {v.get('max_delta', 0):.3f})"
        for k, v in parity.items()
        if isinstance(v, dict) and not v.get("passed", True) and v.get("measurable") is not False
    ]
    if not bad:
        return None
    return "TFLite parity FAILED: " + "; ".join(bad) + " -- the exports are kept for inspection in export/"


def _unmeasurable(parity: dict | None) -> bool:
    """True when a TFLite variant of ``parity`` (parity.json) was not measurable."""
    return any(isinstance(v, dict) and v.get("measurable") is False for v in (parity or {}).values())


def floor_problem(metrics: dict[str, dict], floor) -> str | None:
    """One line when the test split's metrics are under the quality floor, else None (also when the
    test split was not evaluated).

    ``floor`` is the run's :class:`training.config.GateConfig`; the verdict is
    :func:`training.floors.check_floor`'s, the same the quality gate applies.
    """
    from training.floors import ADVICE, check_floor

    if "test" not in metrics or floor is None:
        return None
    check = check_floor(metrics["test"], floor)
    if check.passed:
        return None
    return "; ".join(check.reasons) + f": {ADVICE}"


def stage_seconds_from_manifest(manifest: dict) -> dict[str, float]:
    """Wall time per stage from ``run.json`` timestamps (stage end minus previous stage end)."""
    out: dict[str, float] = {}
    prev = manifest.get("created_at")
    for stage in STAGES:
        info = manifest.get("stages", {}).get(stage)
        if not info or not prev:
            continue
        try:
            out[stage] = (dt.datetime.fromisoformat(info["at"]) - dt.datetime.fromisoformat(prev)).total_seconds()
        except (KeyError, ValueError):
            pass
        prev = info.get("at", prev)
    return out


def print_summary(
    console,
    *,
    run_url: str,
    project: str,
    status: str = "complete",
    metrics: dict[str, dict],
    parity: dict | None,
    stage_seconds: dict[str, float],
    train_info: dict | None = None,
    log_path: str | None = None,
    floor=None,
) -> str | None:
    """Print the final summary of ``detops run``; return the parity failure line (None when parity
    did not fail; a model under the quality floor is not a failure of the run, the gate refuses it).

    The first line is the verdict: ``PROBLEM: <why>: train longer (train.steps) or check the labels``
    when the test metrics are under ``floor`` (the run's :class:`training.config.GateConfig`; None:
    its defaults; :func:`floor_problem`), then ``FAILED: TFLite parity ...`` when the parity check
    failed, else ``run complete`` (or, after ``--stage``, the run's status and the stages done).
    Then the run folder, the test metrics (all 12 COCO figures; the other splits as extra rows),
    per-class AP50 of every split, the parity lines, the wall time per stage (with training
    steps/s) and the next command.
    """
    from training.config import GateConfig

    failure = parity_failure(parity)
    problem = floor_problem(metrics, GateConfig() if floor is None else floor)
    wide = _wide(console)
    _print_verdict(console, status, problem, failure, parity, stage_seconds)
    console.print(f"run folder: {run_url}", **wide)
    order = [s for s in ("test", "val", "train") if s in metrics]
    if order:
        print_metrics({s: metrics[s] for s in order}, console)
    for line in parity_lines(parity or {}):
        console.print(line, **wide)
    parts = []
    for stage in STAGES:
        if stage in stage_seconds:
            extra = ""
            if stage == "train" and train_info:
                extra = f" ({train_info.get('steps_run', '?')} steps, {train_info.get('steps_per_s', 0):.2f} steps/s)"
            parts.append(f"{stage} {_fmt_seconds(stage_seconds[stage])}{extra}")
    if parts:
        total = sum(stage_seconds.get(s, 0.0) for s in STAGES)
        console.print("wall time: " + ", ".join(parts) + f"; total {_fmt_seconds(total)}", **wide)
    if log_path:
        console.print(f"full log: {log_path}", **wide)
    if problem or _unmeasurable(parity):
        console.print(
            f"next: train longer (detops run <config> --set train.steps=N) or check the labels "
            f"({run_url}/data/quality_report.txt); `detops gate` refuses this run",
            **wide,
        )
    elif failure:
        console.print(
            f"next: inspect {run_url}/export/parity.json; a run whose parity failed cannot pass `detops gate`",
            **wide,
        )
    elif status == "complete":
        console.print(f"next: detops register --run-dir {run_url} --name {project} --by <your name>", **wide)
    else:
        console.print(f"next: detops run --run-dir {run_url} (runs the stages not done yet)", **wide)
    return failure


def _print_verdict(
    console, status: str, problem: str | None, failure: str | None, parity: dict | None, stage_seconds: dict
) -> None:
    """The summary's first line(s): the floor problem, the parity failure, else the run's status."""
    wide = _wide(console)
    if problem:
        console.print(f"[bold red]PROBLEM:[/] {problem}", **wide)
    if failure:
        console.print(f"[bold red]FAILED:[/] {failure}", **wide)
    elif status == "complete" and problem:
        console.print(
            "run finished: every stage is complete (exit 0), but the model is under the quality floor "
            "(gate.min_ap50, gate.min_class_ap50 of the run config): `detops gate` refuses it",
            **wide,
        )
    elif status == "complete" and _unmeasurable(parity):
        console.print(
            "run finished: every stage is complete (exit 0), but the TFLite parity was not measurable "
            "(export.parity_min_detections): `detops gate` refuses it",
            **wide,
        )
    elif status == "complete":
        console.print("[bold green]run complete[/]: every stage finished and the TFLite exports passed parity", **wide)
    else:
        console.print(f"run {status}: stages done: {', '.join(s for s in STAGES if s in stage_seconds) or 'none'}", **wide)
