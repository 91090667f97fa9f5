"""The local pipeline: prepare -> train -> evaluate -> export, into one run folder.

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
datastore that folder *is* the run folder; with ``az://`` or ``s3://`` it is a staging folder that
is published through fsspec when a stage ends, ``run.json`` last, so a run is never marked complete
before all its artifacts are there.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import platform
import re
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from training import storage
from training.config import RunConfig, load_run_config  # noqa: F401  (re-exported for the CLI)
from training.errors import DataError, NotFoundError

SPLITS = ("train", "val", "test")
#: The pipeline's stages, in order (:func:`run_stages` runs them).
STAGES = ("prepare", "train", "evaluate", "export")
#: Where a run keeps the checkpoint its backbone starts from (travels with the run, see :func:`prepare`).
INIT_CHECKPOINT_DIR = ("model_config", "init_checkpoint")
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


def detops_home() -> Path:
    """``$DETOPS_HOME`` or ``~/.detops``: caches, staging folders, the default MLflow store."""
    from training.settings import CommonSettings

    return CommonSettings.load().detops_home()


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
        run_id = run_id or run_id_from_env() or f"{now.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
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
        with open(self.path("run.json"), "w") as f:
            json.dump(self.manifest, f, indent=2)

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


# ----------------------------------------------------------------------------------------- prepare


def dataset_hash(records) -> str:
    """SHA-256 over the canonical records (image path, image bytes hash, boxes), order-independent."""
    h = hashlib.sha256()
    for r in sorted(records, key=lambda r: r.image):
        boxes = sorted((b.label, round(b.xmin, 3), round(b.ymin, 3), round(b.xmax, 3), round(b.ymax, 3)) for b in r.boxes)
        h.update(json.dumps([r.image, r.sha256, boxes]).encode())
    return h.hexdigest()


def pinned_sha256(data) -> str | None:
    """The dataset version a run must use: ``DETOPS_DATASET_SHA256`` if set, else the config's ``data.sha256``."""
    from training.settings import CommonSettings

    return CommonSettings.load().dataset_sha256 or data.sha256


def check_dataset_pin(records, data, where: str) -> str:
    """Hash the records as read; raise :class:`DataError` with both hashes when they differ from the pin.

    Returns the hash (recorded in ``run.json`` as ``inputs.dataset.read_sha256``).
    """
    actual = dataset_hash(records)
    pinned = pinned_sha256(data)
    if pinned and pinned != actual:
        raise DataError(
            f"{where}: the dataset changed: its sha256 is {actual}, the run config pins {pinned} "
            "(data.sha256 / DETOPS_DATASET_SHA256); commit the new hash to train on this data"
        )
    return actual


def prepare(cfg: RunConfig, run_dir: str | None = None, console=None, run_id: str | None = None) -> Run:
    """Ingest, validate, split and convert: the run's ``data/``, ``tf_records/`` and ``model_config/``.

    Raises:
      DataError: nothing left after validation, or an empty split. ConfigError: bad settings.
    """
    from training.annotations import ValidationPolicy, label_map_pbtxt, read_dataset, to_coco, validate
    from training.annotations.record import Dataset
    from training.experiment import build_experiment, experiment_to_yaml
    from training.split import plot_split_report, split_dataset
    from training.tfrecord import write_split

    say = console.print if console else (lambda *a, **k: None)
    run = Run.create(cfg, run_dir, run_id=run_id)
    d = cfg.data
    say(f"[bold]prepare[/] {d.format} dataset {d.path} -> {run.url}")
    ds = read_dataset(d.format, d.path, images=d.images, classes=d.classes, class_from_filename=d.class_from_filename, **d.options)
    read_sha256 = check_dataset_pin(ds.records, d, where=str(d.path))
    v = cfg.validation
    result = validate(
        ds, ValidationPolicy(out_of_bounds=v.out_of_bounds, size_mismatch=v.size_mismatch, duplicates=v.duplicates, classes=v.classes)
    )
    clean = result.dataset
    os.makedirs(run.path("data", "annotations"), exist_ok=True)
    _write_json(run.path("data", "quality_report.json"), result.report.to_dict())
    summary = result.report.summary()
    Path(run.path("data", "quality_report.txt")).write_text(summary + "\n")
    say(summary)
    if not clean.records:
        raise DataError(f"{d.path}: no valid image left after validation (see {run.url}/data/quality_report.json)")
    check_not_empty(result.report, d.classes if isinstance(d.classes, list) else v.classes, d.path, run.url)

    sp = split_dataset(clean, cfg.split.ratios, cfg.split_seed, predefined=cfg.split.predefined)
    _write_json(run.path("data", "split_report.json"), sp.report)
    plot_split_report(sp.report, run.path("data", "split_report.png"))
    for s in SPLITS:
        st = sp.report["splits"][s]
        say(f"  {s:5s}: {st['images']} images, {st['boxes']} boxes {st['boxes_per_class']}")
        if not sp.splits[s]:
            raise DataError(f"the {s} split is empty; adjust split.ratios or the predefined files")

    os.makedirs(run.path("tf_records"), exist_ok=True)
    Path(run.path("tf_records", "label_map.pbtxt")).write_text(label_map_pbtxt(clean.classes))
    for s in SPLITS:
        sub = Dataset(root=clean.root, records=sp.splits[s], classes=clean.classes, format=clean.format)
        coco = to_coco(sub)
        _write_json(run.path("data", "annotations", f"{s}.json"), coco)
        ids = {im["file_name"]: im["id"] for im in coco["images"]}
        write_split(clean, sp.splits[s], s, run.path("tf_records"), ids)

    t = cfg.train
    # Paths in experiment.yaml are relative to the run folder (load_params re-points them), and the
    # init checkpoint is copied in: the run carries everything training needs to any machine.
    params = build_experiment(
        preset=t.preset,
        num_classes=len(clean.classes),
        train_records="tf_records/train-*.tfrecord",
        val_records="tf_records/val-*.tfrecord",
        val_annotation_file="data/annotations/val.json",
        steps=t.steps,
        batch_size=t.batch_size,
        image_size=t.image_size,
        learning_rate=t.learning_rate,
        warmup_steps=t.warmup_steps,
        checkpoint_interval=t.checkpoint_interval,
        init_checkpoint=None if (t.init_checkpoint or "").lower() in ("", "none") else t.init_checkpoint,
        overrides=t.overrides,
        where=f"train.overrides of {cfg.project}",
        pretrained_provider=None if (t.init_checkpoint or "").lower() == "none" else _pretrained,
        seed=cfg.seed,
    )
    os.makedirs(run.path("model_config"), exist_ok=True)
    source_checkpoint = params.task.init_checkpoint or None
    if source_checkpoint:
        params.task.init_checkpoint = bring_checkpoint(run, source_checkpoint)
    Path(run.path("model_config", "experiment.yaml")).write_text(experiment_to_yaml(params))
    rep = result.report
    run.manifest["inputs"] = {
        "dataset": {"path": d.path, "format": d.format, "sha256": dataset_hash(clean.records),
                    "read_sha256": read_sha256, "pinned_sha256": pinned_sha256(d)},
        "config_sha256": hashlib.sha256(json.dumps(run.manifest["config"], sort_keys=True).encode()).hexdigest(),
        "init_checkpoint": _checkpoint_record(run, source_checkpoint, params.task.init_checkpoint),
    }
    run.manifest["classes"] = clean.classes
    run.stage_done(
        "prepare",
        images_in=rep.images_in, images_kept=rep.images_kept, boxes_in=rep.boxes_in, boxes_kept=rep.boxes_kept,
        splits={s: len(sp.splits[s]) for s in SPLITS},
    )
    return run


def check_not_empty(report, classes: list[str] | None, source, run_url: str) -> None:
    """Raise ``DataError`` when no box survived validation or a requested class has no box left.

    ``report`` is the :class:`training.annotations.validate.QualityReport`; ``classes`` the
    classes the config asks for (``data.classes`` or ``validation.classes``), None for "any".
    """
    where = f"see {run_url}/data/quality_report.txt"
    if report.boxes_kept == 0:
        reasons = ", ".join(f"{code} {c['boxes']}" for code, c in sorted(report.by_reason().items()))
        detail = f"{report.boxes_in} boxes read, {report.boxes_rejected} rejected" + (f" ({reasons})" if reasons else "")
        if report.unparseable:
            detail += f"; {len(report.unparseable)} annotation entries could not be read (first: {report.unparseable[0]})"
        raise DataError(f"{source}: no box survived validation: {detail}; {where}")
    if classes:
        kept = {name for name, c in (report.per_class or {}).items() if c.get("boxes", 0) > 0}
        empty = [c for c in classes if c not in kept]
        if empty:
            raise DataError(f"{source}: no box of class {', '.join(map(repr, empty))} survived validation; {where}")


def bring_checkpoint(run: Run, prefix: str) -> str:
    """Copy a local TF checkpoint into the run (``model_config/init_checkpoint/``); return the new
    prefix, relative to the run folder (``model_config/init_checkpoint/ckpt``).

    ``prefix`` is a checkpoint prefix (``.../ckpt-7`` with ``ckpt-7.index`` and
    ``ckpt-7.data-*`` beside it) or a folder holding checkpoints (its newest ``.index`` is used).
    An ``az://`` / ``s3://`` / ``gs://`` prefix is readable from every machine and is returned
    unchanged (the SageMaker job gets it as its ``checkpoint`` channel).

    Raises:
      NotFoundError: no ``<prefix>.index`` (names the path).
    """
    if not storage.is_local(prefix):
        return prefix
    local = Path(prefix.removeprefix("file://")).expanduser()
    if local.is_dir():
        found = sorted(local.rglob("*.index"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise NotFoundError(f"init checkpoint {prefix}: folder holds no *.index checkpoint")
        local = found[-1].with_suffix("")
    index = local.with_name(local.name + ".index")
    if not index.is_file():
        raise NotFoundError(f"init checkpoint {prefix}: {index} not found (give a checkpoint prefix, e.g. .../ckpt-7)")
    dest = Path(run.path(*INIT_CHECKPOINT_DIR))
    dest.mkdir(parents=True, exist_ok=True)
    for f in [index, *sorted(local.parent.glob(local.name + ".data-*"))]:
        shutil.copy2(f, dest / f.name)
    return "/".join((*INIT_CHECKPOINT_DIR, local.name))


def _checkpoint_record(run: Run, source: str | None, prefix: str | None) -> dict | None:
    """``run.json``'s record of the init checkpoint: where it came from, where it is, its hash."""
    if not source:
        return None
    rec: dict = {"source": source, "prefix": prefix}
    if prefix and not os.path.isabs(prefix) and "://" not in prefix:
        h = hashlib.sha256()
        for f in sorted(Path(run.path(*INIT_CHECKPOINT_DIR)).iterdir()):
            h.update(f.name.encode())
            h.update(f.read_bytes())
        rec["sha256"] = h.hexdigest()
    return rec


def _pretrained() -> str:
    from training.pretrained import pretrained_backbone_checkpoint

    return pretrained_backbone_checkpoint()


def _write_json(path: str, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, default=str)


# ------------------------------------------------------------------------------------------- train


def load_params(run: Run):
    """The run's Model Garden ExperimentConfig, with its paths re-pointed at this run's local folder.

    Data paths always point into the run; ``task.init_checkpoint`` is resolved against the run
    folder when relative (as :func:`prepare` writes it); a URL stays as it is.
    """
    from training.experiment import experiment_from_yaml

    params = experiment_from_yaml(Path(run.path("model_config", "experiment.yaml")).read_text())
    params.task.train_data.input_path = run.path("tf_records", "train-*.tfrecord")
    params.task.validation_data.input_path = run.path("tf_records", "val-*.tfrecord")
    params.task.annotation_file = run.path("data", "annotations", "val.json")
    ckpt = params.task.init_checkpoint
    if ckpt and "://" not in ckpt and not os.path.isabs(ckpt):
        params.task.init_checkpoint = run.path(*ckpt.split("/"))
    return params


def train(run: Run, steps: int | None = None, console=None):
    """Train (or resume) the run's model; checkpoints in ``model_training/checkpoints``."""
    from training.train import train_model

    say = console.print if console else print
    params = load_params(run)
    if steps:
        params.trainer.train_steps = int(steps)
        lr = params.trainer.optimizer_config.learning_rate
        if lr.type == "cosine":
            lr.cosine.decay_steps = int(steps)
    on_progress = getattr(console, "train_progress", None)  # a progress bar (training.report.Reporter)
    result = train_model(
        params,
        checkpoint_dir=run.path("model_training", "checkpoints"),
        tensorboard_dir=run.path("model_training", "tensorboard"),
        printer=None if on_progress else say,
        on_progress=on_progress,
    )
    run.stage_done("train", global_step=result.global_step, steps_run=result.steps_run,
                   seconds=round(result.seconds, 1), last_losses=result.losses,
                   steps_per_s=round(result.steps_run / max(result.seconds, 1e-9), 3))
    return result


# ---------------------------------------------------------------------------------------- evaluate


def load_detector(run: Run):
    """A :class:`training.inference.DetectorModule` on the run's latest checkpoint."""
    from training.inference import DetectorModule, build_model, restore

    params = load_params(run)
    model = build_model(params)
    restore(model, run.path("model_training", "checkpoints"))
    return params, model, DetectorModule(params, model, run.manifest["classes"])


def evaluate(run: Run, splits: list[str] | None = None, console=None) -> dict[str, dict]:
    """COCO metrics of the latest checkpoint on each split; writes ``evaluation/<split>/``."""
    import tensorflow as tf

    from training.evaluate import evaluate_split

    say = console.print if console else functools.partial(print, flush=True)
    _, _, module = load_detector(run)
    ckpt = tf.train.latest_checkpoint(run.path("model_training", "checkpoints"))
    out = {}
    todo = splits or list(SPLITS)
    _advance(console, 0, total=len(todo))
    for s in todo:
        if s not in SPLITS:
            raise NotFoundError(f"unknown split {s!r}; use one of {SPLITS}")
        out[s] = evaluate_split(
            module.detect_encoded,
            run.path("tf_records", f"{s}-*.tfrecord"),
            run.path("data", "annotations", f"{s}.json"),
            run.path("evaluation", s),
            extra={"checkpoint": os.path.basename(ckpt or "")},
        )
        m = out[s]
        if hasattr(console, "advance"):  # a progress bar (training.report.Reporter)
            _advance(console, 1, info=f"{s} AP50 {m['AP50']:.3f}")
        else:
            # one line per split; SageMaker's MetricDefinitions parse it (training.backends.sagemaker)
            say(f"evaluation {s}: AP={m['AP']:.4f} AP50={m['AP50']:.4f} AP75={m['AP75']:.4f}")
    run.stage_done("evaluate", **{s: {"AP": m["AP"], "AP50": m["AP50"]} for s, m in out.items()})
    return out


# ------------------------------------------------------------------------------------------ export


def export(run: Run, console=None) -> dict:
    """SavedModel + TFLite (float, int8) + parity check on the test split; writes ``export/``."""
    import tensorflow as tf

    from training import export as ex
    from training.evaluate import evaluate_split

    say = console.print if console else print
    cfg = RunConfig.model_validate(run.manifest["config"])
    _advance(console, 0, total=1 + (1 + int(cfg.export.int8) if cfg.export.tflite else 0))
    params, model, module = load_detector(run)
    out_dir = run.path("export")
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    sm_dir = ex.save_saved_model(module, os.path.join(out_dir, "saved_model"))
    shutil.copy(run.path("tf_records", "label_map.pbtxt"), os.path.join(out_dir, "label_map.pbtxt"))
    say(f"SavedModel -> {sm_dir}")
    test = run.path("tf_records", "test-*.tfrecord")
    gt = run.path("data", "annotations", "test.json")
    loaded = tf.saved_model.load(sm_dir).signatures["serving_default"]
    sm_metrics = evaluate_split(lambda x: loaded(encoded_images=x), test, gt, os.path.join(out_dir, "parity", "saved_model"), draw=False)
    _advance(console, 1, info=f"SavedModel AP50 {sm_metrics['AP50']:.3f}")
    parity: dict = {"split": "test"}
    bounds = {"float": cfg.export.max_delta, "int8": cfg.export.max_delta_int8}
    if cfg.export.tflite:
        variants = [("float", None, "model.tflite")] + ([("int8", "int8", "model_int8.tflite")] if cfg.export.int8 else [])
        for name, quant, fname in variants:
            path = os.path.join(out_dir, fname)
            with open(path, "wb") as f:
                f.write(ex.convert_tflite(params, model, quant, cfg.export.calibration_steps))
            m = evaluate_split(ex.tflite_detector(path, module), test, gt, os.path.join(out_dir, "parity", name), draw=False)
            parity[name] = ex.parity_check(sm_metrics, m, bounds[name])
            parity[name]["max_delta"] = bounds[name]
            parity[name]["size_bytes"] = os.path.getsize(path)
            verdict = "passed" if parity[name]["passed"] else "FAILED"
            if hasattr(console, "advance"):  # the final summary prints the figures
                _advance(console, 1, info=f"TFLite {name} AP50 {m['AP50']:.3f} {verdict}")
            else:
                say(f"TFLite {name} -> {path}: AP50 {m['AP50']:.3f} (SavedModel {sm_metrics['AP50']:.3f}), {verdict}")
    parity["passed"] = all(v["passed"] for k, v in parity.items() if isinstance(v, dict) and "passed" in v)
    ex.write_json(os.path.join(out_dir, "parity.json"), parity)
    run.stage_done("export", parity_passed=parity["passed"])
    return parity


def _advance(console, amount: float, total: float | None = None, info: str | None = None) -> None:
    """Move the stage's progress bar when ``console`` has one (training.report.Reporter)."""
    advance = getattr(console, "advance", None)
    if advance is not None:
        advance(amount, total=total, info=info)


def _stage(console, name: str):
    """The progress bar context of a stage when ``console`` has one, else a no-op context."""
    import contextlib

    stage = getattr(console, "stage", None)
    return stage(name) if stage is not None else contextlib.nullcontext()


# --------------------------------------------------------------------------------------------- all


@dataclass
class RunResult:
    """The finished run and its metrics per split."""

    run: Run
    metrics: dict[str, dict]
    parity: dict


def run_stages(
    cfg: RunConfig | None = None,
    run_dir: str | None = None,
    *,
    run: Run | None = None,
    stages: tuple[str, ...] | list[str] = STAGES,
    steps: int | None = None,
    int8: bool | None = None,
    finish: bool = True,
    track: bool = True,
    console=None,
) -> Run:
    """THE stage sequence: prepare -> train -> evaluate -> export into one run folder.

    Every entry point calls this: ``detops run`` (:func:`run_all`), each Azure ML pipeline step
    (``detops run --run-dir ... --stage <stage>``) and the SageMaker container
    (:mod:`training.backends.sagemaker_container`).

    - ``run``: an opened run (the SageMaker container assembles one from its channels); else
      ``run_dir`` naming an existing run (``run.json`` there) opens it; otherwise ``prepare``
      creates it (``cfg`` required; the id is ``$DETOPS_RUN_ID`` when set).
    - Of ``stages`` (a subset of :data:`STAGES`, run in pipeline order), those ``run.json``
      records complete are skipped. ``train`` counts as complete when its recorded global step
      reaches the target (``steps``, else the experiment's ``trainer.train_steps``); when it
      trains again (resume with more steps), ``evaluate`` and ``export`` are recorded stale and
      run again.
    - ``evaluate`` logs the run to MLflow when tracking is enabled in the run's config and a
      tracking URI is known (``tracking.uri`` or ``$MLFLOW_TRACKING_URI``; Azure ML sets the
      workspace's in every job); again, with the export and the final status, when the run
      completes. ``track=False`` turns this off (the SageMaker container without a tracking URI).
    - Only the chief writes ``run.json``; a non-chief worker of a cluster runs ``train`` (a
      collective) and returns.
    - ``finish``: once all four stages are complete the run is marked ``complete``; any exception
      marks it ``failed`` (and is re-raised).

    Raises:
      ConfigError: unknown stage, or ``cfg`` missing for a new run. DataError: prepare did not
      finish. Anything a stage raises.
    """
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        from training.errors import ConfigError

        raise ConfigError(f"unknown stage(s) {unknown}; the stages are {list(STAGES)}")
    wanted = [s for s in STAGES if s in stages]
    if run is not None:
        pass
    elif run_dir and _has_manifest(run_dir):
        run = Run.open(run_dir)
    elif "prepare" in wanted:
        if cfg is None:
            from training.errors import ConfigError

            raise ConfigError("a new run needs a run config (detops run <config.yaml>)")
        with _stage(console, "prepare"):
            run = prepare(cfg, run_dir=run_dir, console=console)
    else:
        raise NotFoundError(f"no run at {run_dir} (run.json missing); run the prepare stage first")
    try:
        if not run.is_complete("prepare"):
            raise DataError(f"{run.url}: the prepare stage did not finish; start a new run")
        if int8 is not None:
            run.manifest["config"].setdefault("export", {})["int8"] = bool(int8)
        if "train" in wanted:
            target = steps or int(load_params(run).trainer.train_steps)
            done = run.manifest["stages"].get("train") or {}
            if not run.is_complete("train") or int(done.get("global_step", 0)) < target:
                with _stage(console, "train"):
                    result = train(run, steps=steps, console=console)
                if result.steps_run:
                    for later in ("evaluate", "export"):
                        if run.manifest["stages"].pop(later, None) is not None:
                            run.manifest["stages"].setdefault("stale", []).append(later)
                    run.save()
            if not is_chief():
                return run  # evaluate, export and run.json belong to the chief
        if "evaluate" in wanted and not run.is_complete("evaluate"):
            with _stage(console, "evaluate"):
                evaluate(run, console=console)
            if track:
                _track(run, console)
        if "export" in wanted and not run.is_complete("export"):
            with _stage(console, "export"):
                parity = export(run, console=console)
            # A failed parity check keeps the run complete (every artifact there, for inspection;
            # the quality gate refuses it, `register --force` stays possible) but it is not a
            # success: `detops run` leads its summary with the failure and exits ExitCode.EXPORT.
            run.manifest["checks"] = {"tflite_parity": bool(parity.get("passed", True))}
        if finish and all(run.is_complete(s) for s in STAGES):
            run.finish("complete")
            if track and _track(run, console):
                run.publish()
    except BaseException:
        run.finish("failed")
        raise
    return run


def _track(run: Run, console=None) -> bool:
    """Log the run to MLflow (idempotent per run id) when its config enables tracking; True if it did.

    The URI is ``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else the local SQLite store.
    """
    tracking = (run.manifest.get("config") or {}).get("tracking") or {}
    if not tracking.get("enabled", False) or not is_chief():
        return False
    from training.tracking import default_tracking_uri, log_run

    uri = tracking.get("uri") or default_tracking_uri()
    run.manifest["mlflow_run_id"] = log_run(run.local_dir, uri)
    run.save()
    if console is not None:
        console.print(f"metrics logged to MLflow ({uri}), run {run.manifest['mlflow_run_id']}")
    return True


def read_run_metrics(run: Run) -> dict[str, dict]:
    """``evaluation/<split>/metrics.json`` of the splits evaluated so far."""
    out = {}
    for s in SPLITS:
        p = run.path("evaluation", s, "metrics.json")
        if os.path.exists(p):
            with open(p) as f:
                out[s] = json.load(f)
    return out


def run_all(cfg: RunConfig, run_dir: str | None = None, console=None) -> RunResult:
    """prepare -> train -> evaluate -> export (-> MLflow tracking) into one run folder.

    :func:`run_stages` with every stage. With ``run_dir`` naming an existing run, finished stages
    are skipped and training resumes from the last checkpoint. The run is marked ``failed`` if a
    stage raises, ``complete`` at the end.
    """
    run = run_stages(cfg, run_dir, console=console)
    parity_path = run.path("export", "parity.json")
    parity = json.loads(Path(parity_path).read_text()) if os.path.exists(parity_path) else {}
    return RunResult(run=run, metrics=read_run_metrics(run), parity=parity)


def _has_manifest(url: str) -> bool:
    if storage.is_local(url):
        return os.path.exists(os.path.join(url.removeprefix("file://"), "run.json"))
    return storage.exists(storage.join(url, "run.json"))


def print_metrics(metrics: dict[str, dict], console) -> None:
    """Print COCO metrics per split (all 12 figures, never cut) and per-class AP50."""
    from training.report import print_metrics as _print

    _print(metrics, console)
