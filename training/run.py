"""The run-folder contract: a run's manifest (``run.json``), its stages' status, and publishing.

Run layout (DESIGN.md, after seed 000), under ``<datastore>/<project>/runs/<YYYYmmddTHHMMSS>-<id>/``::

    run.json                                  manifest: inputs + hashes, versions, config, status
    data/annotations/{train,val,test}.json    COCO ground truth per split
    data/quality_report.{json,txt}, data/split_report.{json,png}
    tf_records/{split}-XXXXX-of-YYYYY.tfrecord, tf_records/label_map.pbtxt
    model_config/experiment.yaml              the resolved Model Garden ExperimentConfig
    model_training/checkpoints/, model_training/tensorboard/
    evaluation/{train,val,test}/metrics.json (+ pr_curves.png, per_class_ap.png, sample_*.png)
    export/saved_model/, export/model.tflite, export/model_int8.tflite, export/parity.json

Work happens in a local folder (TensorFlow writes checkpoints and TFRecords there). With a local
datastore that folder *is* the run folder; with ``az://`` or ``s3://`` it is a staging folder under
``$DETOPS_HOME/staging/<run id>`` that is published through fsspec when a stage ends, ``run.json``
last, so a run is never marked complete before all its artifacts are there.

``run.json`` keys: ``id``, ``project``, ``created_at`` (ISO 8601, UTC), ``url``, ``status``
(``running``, ``complete`` or ``failed``), ``stages`` (``{stage: {"status": "complete", "at": ...,
<the stage's figures>}}``), ``inputs``, ``versions``, ``code_version``, ``config`` (the resolved
:class:`training.config.RunConfig`), and after prepare ``classes``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from training import storage
from training.errors import NotFoundError
from training.home import detops_home
from training.names import STAGES

if TYPE_CHECKING:
    from training.config import RunConfig


def new_run_id(now: dt.datetime | None = None) -> str:
    """A new run id in the run layout's format, ``<YYYYmmddTHHMMSS>-<6 hex>`` (UTC; ``now`` for tests)."""
    now = now or dt.datetime.now(dt.UTC)
    return f"{now.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"


_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def run_id_from_env() -> str | None:
    """``$DETOPS_RUN_ID``: the run id a cloud job was submitted with (None when unset).

    The Azure ML pipeline steps and the SageMaker training job set it, so the run folder keeps the
    id the submitter printed instead of minting a new one.

    Raises:
      ConfigError: the value is not a run id (letters, digits, ``_ . -``; at most 128 characters).
    """
    from training.errors import ConfigError
    from training.settings import CommonSettings

    value = (CommonSettings.load().run_id or "").strip()
    if not value:
        return None
    if not _RUN_ID.match(value):
        raise ConfigError(f"DETOPS_RUN_ID {value!r} is not a run id (letters, digits, '_', '.', '-')")
    return value


def is_chief() -> bool:
    """True in the process that writes ``run.json`` and publishes (the only one, or the chief of a
    ``TF_CONFIG`` / SageMaker cluster: :func:`training.distribute.is_chief`)."""
    from training.distribute import is_chief as _is_chief

    return _is_chief(os.environ)


def code_version() -> str:
    """The git commit of the code (``DETOPS_CODE_VERSION`` wins), or ``"unknown"``."""
    from training.settings import CommonSettings

    pinned = CommonSettings.load().code_version
    if pinned:
        return pinned
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        if out.returncode == 0:
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5,
            ).stdout.strip()
            return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def versions() -> dict[str, str]:
    """Versions of Python and the packages that decide a model's behaviour."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("detops", "tensorflow", "tf-models-official", "tf-keras", "numpy", "pycocotools"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


@dataclass
class Run:
    """A run folder: ``url`` (final location) and ``local_dir`` (where the stages write).

    ``manifest`` mirrors ``run.json``. Use :meth:`create` for a new run and :meth:`open` for an
    existing one.
    """

    url: str
    local_dir: str
    manifest: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        """The run id, ``<YYYYmmddTHHMMSS>-<6 hex>``."""
        return self.manifest["id"]

    def path(self, *parts: str) -> str:
        """A local path inside the run folder."""
        return os.path.join(self.local_dir, *parts)

    @classmethod
    def create(cls, cfg: RunConfig, run_dir: str | None = None, run_id: str | None = None) -> Run:
        """Create a new run folder under ``<datastore>/<project>/runs/<id>`` (or at ``run_dir``).

        The id is ``run_id``, else ``$DETOPS_RUN_ID`` (set by the cloud jobs), else a new one.
        """
        from training.settings import CommonSettings

        now = dt.datetime.now(dt.UTC)
        run_id = run_id or run_id_from_env() or new_run_id(now)
        url = run_dir or storage.join(cfg.datastore, cfg.project, "runs", run_id)
        if storage.is_local(url):
            url = str(Path(url.removeprefix("file://")).resolve())
            local = url
        else:
            local = str(detops_home() / "staging" / run_id)
        os.makedirs(local, exist_ok=True)
        run = cls(url=url, local_dir=local)
        run.manifest = {
            "id": run_id,
            "project": cfg.project,
            "created_at": now.isoformat(),
            # the datastore URL a cloud job was given (e.g. azureml://...) rather than its mount path
            "url": CommonSettings.load().run_url or url,
            "status": "running",
            "stages": {},
            "inputs": {},
            "versions": versions(),
            "code_version": code_version(),
            "config": json.loads(cfg.model_dump_json()),
        }
        run.save()
        return run

    @classmethod
    def open(cls, url: str) -> Run:
        """Open an existing run (a remote one is downloaded to a staging folder first).

        Raises:
          NotFoundError: no ``run.json`` at ``url``.
        """
        if storage.is_local(url):
            local = str(Path(url.removeprefix("file://")).resolve())
            if not os.path.exists(os.path.join(local, "run.json")):
                raise NotFoundError(f"no run at {url} (run.json missing)")
            run = cls(url=local, local_dir=local)
        else:
            if not storage.exists(storage.join(url, "run.json")):
                raise NotFoundError(f"no run at {url} (run.json missing)")
            manifest = storage.read_json(storage.join(url, "run.json"))
            local = str(detops_home() / "staging" / manifest["id"])
            fs, path = storage.filesystem(url)
            os.makedirs(local, exist_ok=True)
            fs.get(path.rstrip("/") + "/", local, recursive=True)
            run = cls(url=url, local_dir=local)
        with open(run.path("run.json")) as f:
            run.manifest = json.load(f)
        return run

    def save(self) -> None:
        """Write ``run.json`` locally (the chief only: other workers of a cluster never write it)."""
        if not is_chief():
            return
        storage.write_json(self.path("run.json"), self.manifest)  # whole or not at all (temp file + rename)

    def is_complete(self, stage: str) -> bool:
        """True when ``run.json`` records ``stage`` as complete."""
        return (self.manifest.get("stages", {}).get(stage) or {}).get("status") == "complete"

    def stage_done(self, stage: str, **info) -> None:
        """Record a finished stage (and its figures) in the manifest; publish when remote."""
        self.manifest["stages"][stage] = {"status": "complete", "at": dt.datetime.now(dt.UTC).isoformat(), **info}
        self.save()
        self.publish()

    def finish(self, status: str = "complete") -> None:
        """Mark the run ``complete`` (or ``failed``) and publish it, ``run.json`` last."""
        self.manifest["status"] = status
        self.manifest["finished_at"] = dt.datetime.now(dt.UTC).isoformat()
        self.save()
        self.publish()

    def publish(self) -> None:
        """Upload the staging folder to ``url`` (no-op for a local datastore and for non-chief workers)."""
        if self.url != self.local_dir and is_chief():
            storage.publish_run(self.local_dir, self.url)

    def missing_stages(self, stages: tuple[str, ...] = STAGES) -> list[str]:
        """The ``stages`` (default: all, in order) that ``run.json`` does not record as finished."""
        done = self.manifest.get("stages", {})
        return [s for s in stages if s not in done]


def has_manifest(url: str) -> bool:
    """Whether ``url`` (local path or fsspec URL) holds a run folder (its ``run.json``)."""
    if storage.is_local(url):
        return os.path.exists(os.path.join(url.removeprefix("file://"), "run.json"))
    return storage.exists(storage.join(url, "run.json"))


__all__ = ["Run", "code_version", "has_manifest", "is_chief", "new_run_id", "run_id_from_env", "versions"]
