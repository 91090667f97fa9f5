"""The ``detops`` console script: a thin CLI over the ``training`` and ``deployment`` libraries.

Commands are grouped by concern, each group in its own module, mounted here. One top-level error
handler turns a :class:`training.errors.DetopsError` into a one-line message and its exit code;
tracebacks only with ``--debug`` (or ``DETOPS_DEBUG=1``).
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import typer
from rich.console import Console

from training.errors import DetopsError, ExitCode, access_denied

app = typer.Typer(
    name="detops",
    help="TensorFlow object detection, from labelled images to an approved, monitored endpoint.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True, soft_wrap=True)  # one line per error, whatever the terminal width
_state = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors.")) -> None:
    """detops: prepare, train, evaluate, export, register, approve, deploy."""
    from training.settings import CommonSettings

    _state["debug"] = debug or CommonSettings.load().debug


def _mount() -> None:
    """Join each command group's Typer app onto the root app (its commands stay top-level)."""
    from detops import cli_training

    app.add_typer(cli_training.app)
    for mod in ("detops.cli_deploy", "detops.cli_cloud", "detops.cli_settings", "detops.cli_ci", "detops.cli_dataset"):
        try:
            module = __import__(mod, fromlist=["app"])
        except ModuleNotFoundError as e:  # group not installed in this environment (optional extra)
            if e.name and e.name.startswith("detops"):
                continue
            raise
        app.add_typer(module.app)


_mount()


def _interrupted() -> NoReturn:
    err.print("interrupted")
    sys.exit(int(ExitCode.INTERRUPTED))


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return (and exit with) an :class:`ExitCode`.

    MLflow logs INFO lines to stderr by itself (e.g. "Creating initial MLflow database tables..." on
    a new store); the console script shows its warnings only, unless ``MLFLOW_LOGGING_LEVEL`` is
    set (MLflow's own setting, read when mlflow is imported).
    """
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    try:
        rc = app(args=argv, standalone_mode=False)
        # Outside standalone mode typer returns an explicit exit's code instead of exiting; it turns
        # Ctrl-C into exit code 130.
        if isinstance(rc, int) and not isinstance(rc, bool) and rc != 0:
            if rc == ExitCode.INTERRUPTED:
                _interrupted()
            sys.exit(rc)
        return ExitCode.OK
    except DetopsError as e:
        if _state["debug"]:
            err.print_exception()
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        sys.exit(int(e.exit_code))
    except KeyboardInterrupt:
        _interrupted()
    except typer.Abort:
        err.print("aborted")
        sys.exit(int(ExitCode.ERROR))
    except Exception as e:
        # Usage errors: typer 0.29 bundles its own click, so match click's exception shapes, not classes.
        if type(e).__name__ == "Exit" and hasattr(e, "exit_code"):
            sys.exit(e.exit_code)
        if hasattr(e, "show") and hasattr(e, "exit_code"):
            e.show()
            sys.exit(int(ExitCode.USAGE))
        if _state["debug"]:
            raise
        # a cloud's refusal from a call no adapter wrapped: one line, not an "unexpected error"
        denied = access_denied(e, "do this")
        if denied is not None:
            err.print(f"[bold red]error:[/] {denied}", highlight=False)
            sys.exit(int(denied.exit_code))
        err.print(f"[bold red]unexpected error:[/] {type(e).__name__}: {e} (run with --debug for the traceback)")
        sys.exit(int(ExitCode.ERROR))

if __name__ == "__main__":  # pragma: no cover
    main()
