"""Errors and exit codes shared by every detops command.

The CLI has one top-level handler (``detops.cli.main``): a :class:`DetopsError` is printed as one
line naming what went wrong and the process exits with its :class:`ExitCode`; a traceback is shown
only with ``--debug``.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Process exit codes of the ``detops`` console script."""

    OK = 0
    ERROR = 1  # unexpected failure (a bug): traceback with --debug
    USAGE = 2  # bad command line or configuration
    DATA = 3  # bad input data (annotations, images)
    GATE = 4  # a quality or approval gate refused the action
    NOT_FOUND = 5  # a run, model version or resource does not exist
    BACKEND = 6  # a cloud or server backend failed
    EXPORT = 7  # an export was written but failed its check (TFLite parity); the run folder is kept
    INTERRUPTED = 130  # Ctrl-C (SIGINT): 128 + 2, the shell convention


class DetopsError(Exception):
    """Base class for the errors detops reports to a user without a traceback."""

    exit_code: ExitCode = ExitCode.ERROR


class ConfigError(DetopsError, ValueError):
    """A configuration file, preset or override is invalid (names the key and the file)."""

    exit_code = ExitCode.USAGE


class DataError(DetopsError, ValueError):
    """Input data cannot be read at all (names the file and the record)."""

    exit_code = ExitCode.DATA


class GateError(DetopsError):
    """A quality gate or an approval state refused the requested action."""

    exit_code = ExitCode.GATE


class ExportError(DetopsError):
    """An export was written but failed its check (TFLite parity vs the SavedModel)."""

    exit_code = ExitCode.EXPORT


class NotFoundError(DetopsError, LookupError):
    """A named run, model version, preset or resource does not exist."""

    exit_code = ExitCode.NOT_FOUND


class BackendError(DetopsError):
    """A backend (cloud service, local server) failed or is unreachable."""

    exit_code = ExitCode.BACKEND


class AccessDeniedError(BackendError):
    """The cloud authenticated the caller but its role may not do this action (IAM / Azure RBAC):
    one line naming the action and the principal."""


def unknown_name_error(kind: str, name: str, known: list[str] | tuple[str, ...]) -> NotFoundError:
    """Build a :class:`NotFoundError` for an unknown registry name, listing what exists.

    A near match (``difflib``) is suggested first, as in ultralytics' config checks.
    """
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return NotFoundError(f"unknown {kind} {name!r}.{hint} Known: {', '.join(sorted(known))}.")
