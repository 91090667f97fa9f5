"""The backend interface: submit the pipeline (prepare -> train -> evaluate -> export) somewhere.

Every backend runs the *same* stages through the *same* CLI (``detops prepare/train/evaluate/
export``, :mod:`detops.cli_training`) on the same run layout (docs/contracts.md); a backend only
decides where the processes run and where the run folder lives.
"""

from __future__ import annotations

import abc
import contextlib
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from training.names import STAGES as STAGES  # one definition, re-exported for the backends
from training.run import new_run_id as new_run_id  # one run-id format, re-exported for the backends


@dataclass
class Submission:
    """What a backend submitted (or, with ``dry_run``, would submit).

    ``status`` is ``"planned"`` for a dry run, else the backend's job state (``"Completed"``,
    ``"InProgress"``, ``"complete"`` ...); ``run_url`` is the run folder the job writes;
    ``specs`` maps a spec name to the file written under ``--out`` (job YAML / JSON);
    ``details`` holds backend facts (job ARN, studio URL, channels, resources).
    """

    backend: str
    name: str
    status: str
    run_url: str | None = None
    specs: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class SubmitOptions:
    """What ``detops submit`` asks of a backend: one typed object, passed whole to every backend.

    Attributes:
        config: run config YAML (configs/bccd.yaml); ``overrides`` are its ``--set key=value`` items.
        dry_run: build and validate everything, write the specs under ``out_dir``, create nothing
            and need no credentials.
        wait: block (streaming status) until the job ends; else return once submitted.
        out_dir: where spec files go (default: a temporary folder for a dry run).
        nodes: training machines (multi-worker ``tf.distribute``; 1 = one machine).
        console: a ``rich`` console for progress lines (optional).
        run_id: the run's id (default: a new one, :func:`training.run.new_run_id`); the cloud
            backends name the run folder and the job by it.
        preflight: a cloud backend first checks the GPU quota for the instance type and count
            (:mod:`training.cloud.quota`); False skips it (``--skip-preflight``). A dry run never
            calls the cloud, so it never checks.

    Raises:
        ConfigError: ``nodes`` below 1.
    """

    config: str | Path
    overrides: tuple[str, ...] | list[str] = ()
    dry_run: bool = False
    wait: bool = True
    out_dir: str | Path | None = None
    nodes: int = 1
    console: Any = None
    run_id: str | None = None
    preflight: bool = True

    def __post_init__(self) -> None:
        from training.errors import ConfigError

        object.__setattr__(self, "overrides", tuple(self.overrides or ()))
        if self.nodes < 1:
            raise ConfigError(f"nodes must be >= 1, got {self.nodes}")


class Backend(abc.ABC):
    """One place the pipeline can run."""

    #: Name used on the command line (``--backend``).
    name: str = ""

    @abc.abstractmethod
    def submit(self, options: SubmitOptions) -> Submission:
        """Run or submit the pipeline as ``options`` say (:class:`SubmitOptions`).

        Raises:
            ConfigError: invalid config or settings. BackendError: the service refused or failed.
            QuotaError: (cloud backends) the quota does not leave room for the job (exit code 4).
        """


#: Normalized cloud job states (:meth:`Backend.job_state`).
RUNNING, COMPLETED, FAILED = "running", "completed", "failed"


class JobControl:
    """Status, bounded wait and cancel of a submitted cloud job (mixed into the cloud backends).

    CI submits with ``--no-wait``; a later job, with a fresh OIDC login, calls :meth:`wait` with
    a budget under the token's and the job's lifetime (``detops wait``); cancelling the workflow
    runs :meth:`cancel` (``detops cancel``).
    """

    name: str = ""

    def job_state(self, job: str) -> tuple[str, str]:
        """``(RUNNING | COMPLETED | FAILED, the service's own status text)`` of job ``job``."""
        from training.errors import ConfigError

        raise ConfigError(f"backend {self.name!r} runs in the foreground: there is no cloud job to watch")

    def cancel(self, job: str) -> str:
        """Ask the service to stop job ``job``; return its status text after the request."""
        from training.errors import ConfigError

        raise ConfigError(f"backend {self.name!r} runs in the foreground: there is no cloud job to cancel")

    def wait(self, job: str, *, timeout_s: float, poll_s: float = 30.0, sleep: Any = None,
             clock: Any = None, console: Any = None) -> tuple[str, str]:
        """Poll until job ``job`` ends or ``timeout_s`` passed; return the last ``job_state``.

        ``timeout_s=0`` asks once. ``sleep``/``clock`` default to :mod:`time`'s (tests pass fakes).
        """
        import time

        sleep = sleep or time.sleep
        clock = clock or time.monotonic
        start = clock()
        last = None
        while True:
            state = self.job_state(job)
            if console is not None and state != last:
                console.print(f"{job}: {state[1]}")
            last = state
            if state[0] != RUNNING or clock() - start + poll_s > timeout_s:
                return state
            sleep(poll_s)


@contextlib.contextmanager
def placeholder_env(**defaults: str) -> Iterator[None]:
    """Temporarily set environment variables that are unset (to validate a config meant for a cloud
    job, whose ``${DETOPS_DATASETS}`` is only known inside the job)."""
    added = [k for k in defaults if k not in os.environ]
    for k in added:
        os.environ[k] = defaults[k]
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def out_folder(out_dir: str | Path | None, backend: str) -> Path:
    """``<out_dir>/<backend>`` (created), or a fresh temporary folder when ``out_dir`` is None."""
    import tempfile

    base = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="detops-submit-"))
    folder = base / backend
    folder.mkdir(parents=True, exist_ok=True)
    return folder
