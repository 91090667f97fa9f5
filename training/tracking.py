"""Experiment tracking: log a finished run folder (parameters, metrics per split, artifacts) to MLflow.

The run folder is the source of truth (see docs/contracts.md); MLflow is an index over it that
``mlflow ui`` can browse. By default the tracking store is a local SQLite file with an artifact
folder beside it::

    <DETOPS_HOME or ~/.detops>/mlflow.db        (tracking + model registry)
    <DETOPS_HOME or ~/.detops>/mlartifacts/     (artifact root)

Any MLflow tracking URI works instead (``MLFLOW_TRACKING_URI``, or the ``tracking_uri`` argument):
an MLflow server, or Azure ML's workspace MLflow endpoint (``azureml://...``, needs the
``azureml-mlflow`` plugin). Browse the default store with::

    mlflow ui --backend-store-uri sqlite:///$HOME/.detops/mlflow.db

This module imports nothing from ``deployment`` (training never depends on deployment).
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from typing import Any

from training import storage
from training.errors import NotFoundError
from training.home import detops_home
from training.names import SPLITS
from training.settings import CommonSettings

#: Tag set on every MLflow run logged from a run folder; ``find_run`` looks runs up by it.
RUN_ID_TAG = "detops.run_id"
RUN_URL_TAG = "detops.run_url"
_MAX_PARAM_LEN = 6000  # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else ``sqlite:///<detops_home>/mlflow.db``."""
    env = CommonSettings.load().mlflow_tracking_uri
    if env:
        return env
    return f"sqlite:///{(detops_home() / 'mlflow.db').as_posix()}"


def default_artifact_root() -> str:
    """Artifact root used for experiments created on the default SQLite store: ``<home>/mlartifacts``."""
    return (detops_home() / "mlartifacts").as_uri()


def _client(tracking_uri: str | None):
    from mlflow.tracking import MlflowClient

    uri = tracking_uri or default_tracking_uri()
    return MlflowClient(tracking_uri=uri, registry_uri=uri), uri


def flatten(obj: Any, prefix: str = "") -> dict[str, str]:
    """Flatten a nested config into ``{"a.b.c": "value"}`` (lists indexed ``a.0``), values as strings.

    Values longer than MLflow's parameter limit (6000 characters) are truncated with ``...``.
    """
    out: dict[str, str] = {}
    if isinstance(obj, dict):
        if not obj and prefix:
            out[prefix] = "{}"
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (list, tuple)) and obj and any(isinstance(x, (dict, list, tuple)) for x in obj):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}.{i}"))
    else:
        s = str(obj) if not isinstance(obj, (list, tuple)) else "[" + ", ".join(map(str, obj)) + "]"
        out[prefix] = s if len(s) <= _MAX_PARAM_LEN else s[: _MAX_PARAM_LEN - 3] + "..."
    return out


def _metric_key(*parts: str) -> str:
    # MLflow keys allow alphanumerics, _ - . / and space.
    return "/".join(re.sub(r"[^A-Za-z0-9_\-. ]", "_", p) for p in parts)


def read_metrics(run_url: str) -> dict[str, float]:
    """Flat metrics of a run folder: ``{"test/AP50": 0.53, "test/per_class/RBC/AP": ..., ...}``.

    Reads ``evaluation/<split>/metrics.json`` for the splits present (COCO metrics in [0, 1], -1
    where undefined, as written by the pipeline). Non-numeric values are skipped; a malformed file
    raises :class:`training.errors.DataError` naming it.
    """
    metrics: dict[str, float] = {}
    for split in SPLITS:
        url = storage.join(run_url, "evaluation", split, "metrics.json")
        if not storage.exists(url):
            continue
        doc = storage.read_json_object(url, "a JSON object of COCO metrics")
        for key, value in doc.items():
            if key == "per_class" and isinstance(value, dict):
                for cls, per in value.items():
                    if isinstance(per, dict):
                        for mk, mv in per.items():
                            if isinstance(mv, (int, float)) and not isinstance(mv, bool) and math.isfinite(mv):
                                metrics[_metric_key(split, "per_class", str(cls), mk)] = float(mv)
            elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                metrics[_metric_key(split, key)] = float(value)
    return metrics


def read_manifest(run_url: str) -> dict[str, Any]:
    """``run.json`` of a run folder; :class:`NotFoundError` if absent, :class:`DataError` if malformed."""
    url = storage.join(run_url, "run.json")
    if not storage.exists(url):
        raise NotFoundError(f"{url}: no run manifest (is {run_url!r} a detops run folder?)")
    return storage.read_json_object(url)


def _artifact_paths(run_url: str) -> list[tuple[str, str]]:
    """(url, artifact sub-folder) pairs to log: metrics, reports, plots, the export folder."""
    pairs: list[tuple[str, str]] = [(storage.join(run_url, "run.json"), "")]
    for rel in ("data/quality_report.json", "data/split_report.json", "model_config/experiment.yaml"):
        pairs.append((storage.join(run_url, rel), rel.rsplit("/", 1)[0]))
    for split in SPLITS:
        pairs.append((storage.join(run_url, "evaluation", split), f"evaluation/{split}"))
    pairs.append((storage.join(run_url, "export"), "export"))
    return [(u, a) for u, a in pairs if storage.exists(u)]


def find_run(run_url: str, tracking_uri: str | None = None) -> str | None:
    """MLflow run id previously logged for this run folder (by its ``run.json`` id), or None."""
    client, _ = _client(tracking_uri)
    manifest = read_manifest(run_url)
    run_id = str(manifest.get("id") or run_url)
    exps = client.search_experiments()
    if not exps:
        return None
    runs = client.search_runs(
        [e.experiment_id for e in exps],
        filter_string=f"tags.`{RUN_ID_TAG}` = '{run_id.replace(chr(39), '')}'",
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def log_run(run_url: str, tracking_uri: str | None = None) -> str:
    """Log a run folder to MLflow and return the MLflow run id.

    - params: the resolved run config from ``run.json`` (``config``), flattened (``train.steps``);
    - metrics: ``<split>/<metric>`` from ``evaluation/<split>/metrics.json`` (e.g. ``test/AP50``),
      per class as ``<split>/per_class/<class>/AP``;
    - tags: run id and URL, status, code version, dataset sha256, library versions;
    - artifacts: ``run.json``, data reports, experiment config, ``evaluation/`` (metrics, plots)
      and ``export/`` (SavedModel, TFLite, parity.json).

    Idempotent: logging the same run folder again (same ``run.json`` id) updates the same MLflow
    run instead of creating another. The experiment is named after ``run.json``'s ``project``.

    Raises:
        NotFoundError: ``run.json`` is missing. DataError: a JSON file is malformed.
    """
    client, uri = _client(tracking_uri)
    manifest = read_manifest(run_url)
    project = str(manifest.get("project") or "detops")
    run_name = str(manifest.get("id") or run_url.rstrip("/").rsplit("/", 1)[-1])

    exp_id = _experiment_id(client, uri, project)
    existing = find_run(run_url, tracking_uri=uri)
    if existing:
        mlrun_id = existing
    else:
        mlrun_id = client.create_run(exp_id, run_name=run_name).info.run_id

    _log_values(client, mlrun_id, run_url, manifest, run_name, already_logged=bool(existing))
    _log_artifacts(client, mlrun_id, run_url)
    status = (
        "FINISHED"
        if manifest.get("status") == "complete"
        else ("FAILED" if manifest.get("status") == "failed" else "RUNNING")
    )
    if status != "RUNNING":  # a run still in progress stays open in MLflow
        client.set_terminated(mlrun_id, status=status)
    return mlrun_id


def _experiment_id(client, uri: str, project: str) -> str:
    """The MLflow experiment named ``project``, created (artifacts under the detops home on the
    default SQLite store) when missing."""
    exp = client.get_experiment_by_name(project)
    if exp is not None:
        return exp.experiment_id
    kwargs = {}
    if uri.startswith("sqlite:") and not CommonSettings.load().mlflow_tracking_uri:
        kwargs["artifact_location"] = default_artifact_root()
    return client.create_experiment(project, **kwargs)


def _log_values(client, mlrun_id: str, run_url: str, manifest: dict, run_name: str, already_logged: bool) -> None:
    """Tags, params (config keys not logged before) and metrics of a run folder, in MLflow batches."""
    inputs = manifest.get("inputs") or {}
    dataset = inputs.get("dataset") or {}
    tags = {
        RUN_ID_TAG: run_name,
        RUN_URL_TAG: run_url,
        "detops.status": str(manifest.get("status", "unknown")),
        "detops.code_version": str(manifest.get("code_version", "unknown")),
        "mlflow.source.git.commit": str(manifest.get("code_version", "unknown")),
        "detops.dataset_sha256": str(dataset.get("sha256", "")),
        "detops.dataset_path": str(dataset.get("path", "")),
    }
    for lib, ver in (manifest.get("versions") or {}).items():
        tags[f"detops.version.{lib}"] = str(ver)
    from mlflow.entities import Metric, Param, RunTag

    params = flatten(manifest.get("config") or {})
    already = client.get_run(mlrun_id).data.params if already_logged else {}
    new_params = [Param(k, v) for k, v in params.items() if k and k not in already]
    import time

    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, 0) for k, v in read_metrics(run_url).items()]
    tag_list = [RunTag(k, v) for k, v in tags.items()]
    for i in range(0, max(len(new_params), 1), 100):  # MLflow batch limit: 100 params per call
        client.log_batch(mlrun_id, params=new_params[i : i + 100], tags=tag_list if i == 0 else [])
    for i in range(0, len(metrics), 1000):
        client.log_batch(mlrun_id, metrics=metrics[i : i + 1000])


def _log_artifacts(client, mlrun_id: str, run_url: str) -> None:
    """Upload the run folder's reports, configs, evaluation and export (remote ones via a temp folder)."""
    for url, dest in _artifact_paths(run_url):
        fs, path = storage.filesystem(url)
        if storage.is_local(url):
            local = path
            if fs.isdir(path):
                client.log_artifacts(mlrun_id, local, artifact_path=dest or None)
            else:
                client.log_artifact(mlrun_id, local, artifact_path=dest or None)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                target = os.path.join(tmp, path.rstrip("/").rsplit("/", 1)[-1])
                fs.get(path, target, recursive=fs.isdir(path))
                if os.path.isdir(target):
                    client.log_artifacts(mlrun_id, target, artifact_path=dest or None)
                else:
                    client.log_artifact(mlrun_id, target, artifact_path=dest or None)
