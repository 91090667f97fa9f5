"""Errors and exit codes shared by every detops command.

The CLI has one top-level handler (``detops.cli.main``): a :class:`DetopsError` is printed as one
line naming what went wrong and the process exits with its :class:`ExitCode`; a traceback is shown
only with ``--debug``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


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
    CONFLICT = 8  # someone else changed the state first (an approval decided meanwhile): look again, re-run
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


class ConflictError(DetopsError):
    """Another writer changed the state between our read and our write (compare-and-set lost):
    names what changed and who won; nothing was written."""

    exit_code = ExitCode.CONFLICT


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


#: botocore error codes of an IAM refusal (training.cloud.aws.aws_error names the principal and action).
AWS_DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError"}


def access_denied(e: BaseException, what: str) -> AccessDeniedError | None:
    """``e`` as :class:`AccessDeniedError` when it is a cloud's refusal that no adapter translated (an azure-core
    HTTP 403 such as Blob's ``AuthorizationPermissionMismatch``; a botocore ``ClientError`` with an
    :data:`AWS_DENIED` code or HTTP 403): "access denied: the identity in use may not <what> (<code>: <the
    cloud's first line>)". None for any other error. (Adapter calls use ``aws_error`` / ``azure_error``, which
    also name the principal.)"""
    response = getattr(e, "response", None)
    response = response if isinstance(response, dict) else {}
    aws_code = (response.get("Error") or {}).get("Code")
    aws_status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    if getattr(e, "status_code", None) != 403 and aws_code not in AWS_DENIED and aws_status != 403:
        return None
    code = getattr(e, "error_code", None) or aws_code or "HTTP 403"
    first = (str(getattr(e, "message", None) or e).splitlines() or [""])[0]
    return AccessDeniedError(f"access denied: the identity in use may not {what} ({code}: {first})")


def near_match(name: str, known: Iterable[str]) -> str | None:
    """The closest of ``known`` to ``name`` (``difflib``, cutoff 0.6), or None.

    The near-match suggestion of every "unknown ..." error (as in ultralytics' config checks).
    """
    import difflib

    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1)
    return close[0] if close else None


def did_you_mean(name: str, known: Iterable[str], prefix: str = "") -> str:
    """``" Did you mean '<prefix><match>'?"`` for the near match of ``name`` in ``known``, else ``""``."""
    close = near_match(name, known)
    return f" Did you mean {prefix + close!r}?" if close else ""


def unknown_name_error(kind: str, name: str, known: Iterable[str]) -> NotFoundError:
    """Build a :class:`NotFoundError` for an unknown registry name, listing what exists.

    A near match (``difflib``) is suggested first, as in ultralytics' config checks.
    """
    known = list(known)
    return NotFoundError(f"unknown {kind} {name!r}.{did_you_mean(name, known)} Known: {', '.join(sorted(known))}.")


@dataclass(frozen=True)
class Problem:
    """One error of a pydantic ``ValidationError``, resolved against the model that raised it.

    ``loc``: the key path (``("train", "step")``); ``type``/``msg``: pydantic's error type and
    message; ``input``: the offending value; ``known``: for an unknown key (``type ==
    "extra_forbidden"``), the field names at that level, and ``suggestion`` their near match.
    """

    loc: tuple[str, ...]
    type: str
    msg: str
    input: Any = None
    known: tuple[str, ...] = ()
    suggestion: str | None = None

    @property
    def key(self) -> str:
        """The dotted key path (``train.step``)."""
        return ".".join(self.loc)


def validation_problems(error: Any, model: Any) -> list[Problem]:
    """Every error of a pydantic ``ValidationError`` raised by ``model`` (a ``BaseModel`` class).

    For an unknown key the fields known at its level (walking nested models, also inside
    ``X | None``) and a near match are filled in, so each caller formats all problems at once.
    """
    problems = []
    for err in error.errors():
        loc = tuple(str(p) for p in err["loc"])
        known: tuple[str, ...] = ()
        suggestion = None
        if err["type"] == "extra_forbidden":
            known = tuple(_fields_at(model, loc[:-1]))
            suggestion = near_match(loc[-1], known)
        problems.append(Problem(loc, err["type"], err["msg"], err.get("input"), known, suggestion))
    return problems


def _fields_at(model: Any, path: tuple[str, ...]) -> list[str]:
    """Field names of the (nested) pydantic model reached from ``model`` by ``path``."""
    for part in path:
        field = model.model_fields.get(part)
        ann = getattr(field, "annotation", None)
        nested = [c for c in getattr(ann, "__args__", (ann,)) if isinstance(c, type) and hasattr(c, "model_fields")]
        if not nested:
            break
        model = nested[0]
    return list(model.model_fields)
