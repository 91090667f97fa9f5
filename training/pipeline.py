"""The pipeline's stage functions: prepare -> train -> evaluate -> export, and :func:`run_stages`.

Each stage reads and writes one run folder through :class:`training.run.Run` (the run-folder
contract: layout, ``run.json``, stage status, publishing) and records itself as finished there.
Stages return their results; tables and summaries are printed by the CLI (:mod:`detops.cli_training`,
:mod:`training.report`). ``console`` (anything with a ``print`` method, e.g. a rich Console or a
:class:`training.report.Reporter`) receives progress lines.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from training import storage
from training.config import RunConfig, load_run_config  # noqa: F401  (re-exported for the CLI)
from training.errors import DataError, NotFoundError
from training.home import detops_home as detops_home  # re-exported for the CLI
from training.names import SPLITS as SPLITS
from training.names import STAGES as STAGES
from training.run import Run as Run
from training.run import has_manifest, is_chief

#: Where a run keeps the checkpoint its backbone starts from (travels with the run, see :func:`prepare`).
INIT_CHECKPOINT_DIR = ("model_config", "init_checkpoint")


# ----------------------------------------------------------------------------------------- prepare


def dataset_hash(records) -> str:
    """SHA-256 over the canonical records (image path, image bytes hash, boxes), order-independent."""
    h = hashlib.sha256()
    for r in sorted(records, key=lambda r: r.image):
        boxes = sorted((b.label, round(b.xmin, 3), round(b.ymin, 3), round(b.xmax, 3), round(b.ymax, 3)) for b in r.boxes)
        h.update(json.dumps([r.image, r.sha256, boxes]).encode())
    return h.hexdigest()


def read_config_dataset(data):
    """Read the dataset a run config's ``data:`` section names (local folders), as ``prepare`` reads it:
    :func:`training.annotations.read_dataset` with the section's format, paths, classes and options.
    ``dataset_hash(read_config_dataset(data).records)`` is the value ``data.sha256`` pins.

    Raises:
      DataError: unreadable annotations or a missing folder (the reader's message, naming the file).
    """
    from training.annotations import read_dataset

    d = data
    return read_dataset(d.format, d.path, images=d.images, classes=d.classes, class_from_filename=d.class_from_filename, **d.options)


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

    Creates a new run folder (at ``run_dir`` if given; id ``run_id``, else ``$DETOPS_RUN_ID``, else
    a new one) and records the ``prepare`` stage in it.

    Raises:
      DataError: the dataset differs from its pinned hash, nothing left after validation, or an
      empty split. ConfigError: bad settings.
    """
    say = console.print if console else (lambda *a, **k: None)
    run = Run.create(cfg, run_dir, run_id=run_id)
    d = cfg.data
    say(f"[bold]prepare[/] {d.format} dataset {d.path} -> {run.url}")
    with staged_data(cfg) as local_cfg:
        result, read_sha256 = _ingest(local_cfg, run, say)
        clean = result.dataset
        sp = _split(cfg, clean, run, say)
        _convert(clean, sp, run)
    params, source_checkpoint = _write_experiment(cfg, run, num_classes=len(clean.classes))
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


@contextlib.contextmanager
def staged_data(cfg: RunConfig) -> Iterator[RunConfig]:
    """``cfg`` with its dataset folders (``data.path``, ``data.images``) on this machine: a folder in cloud
    storage (``s3://``, ``az://``: the stack's datasets bucket, ``DETOPS_DATASETS``) is downloaded to a
    temporary folder for the duration (the annotation readers read local files only); local paths stay.

    Raises:
        DataError: a dataset URL names no folder.
    """
    import tempfile

    d = cfg.data
    if all(storage.is_local(str(p)) for p in _as_list(d.path) + _as_list(d.images)):
        yield cfg
        return
    urls = [str(p) for p in _as_list(d.path) + _as_list(d.images) if not storage.is_local(str(p))]
    common = os.path.commonpath([u.split("://", 1)[1] for u in urls])
    with tempfile.TemporaryDirectory(prefix="detops-data-") as tmp:
        # the folders keep their places under the URLs' common parent: the records' image paths (relative to
        # the dataset root), and so the dataset's pinned hash, stay those of a local copy of the same folders
        staged = {"path": _stage_folder(d.path, common, tmp), "images": _stage_folder(d.images, common, tmp)}
        yield cfg.model_copy(update={"data": d.model_copy(update=staged)})


def _stage_folder(value, common: str, tmp: str):
    """``value`` (a folder, a list of them, or None) with each cloud URL downloaded to its place under ``tmp``
    (its path relative to ``common``)."""
    if value is None or isinstance(value, list):
        return [_stage_folder(v, common, tmp) for v in value] if value else value
    if storage.is_local(value):
        return value
    local = os.path.join(tmp, os.path.relpath(value.split("://", 1)[1], common))
    if not os.path.isdir(local):
        try:
            storage.download_dir(value, local)
        except FileNotFoundError as e:
            raise DataError(f"dataset folder {value}: {e}") from e
    return local


def _as_list(value) -> list:
    return [] if value is None else list(value) if isinstance(value, list) else [value]


def _ingest(cfg: RunConfig, run: Run, say):
    """Read the dataset, check its pinned hash and validate it; writes ``data/quality_report.{json,txt}``.

    Returns ``(ValidationResult, sha256 of the records as read)``. Raises DataError when the data
    differs from its pin or when no image or no box (of a requested class) is left.
    """
    from training.annotations import validate

    d = cfg.data
    ds = read_config_dataset(d)
    read_sha256 = check_dataset_pin(ds.records, d, where=str(d.path))
    result = validate(ds, cfg.validation)
    os.makedirs(run.path("data", "annotations"), exist_ok=True)
    storage.write_json(run.path("data", "quality_report.json"), result.report.to_dict())
    summary = result.report.summary()
    Path(run.path("data", "quality_report.txt")).write_text(summary + "\n")
    say(summary)
    if not result.dataset.records:
        first = result.report.first_problem()
        named = f"; first: {first}" if first else ""
        raise DataError(
            f"{d.path}: no valid image left after validation{named} (see {run.url}/data/quality_report.json)"
        )
    check_not_empty(result.report, d.classes if isinstance(d.classes, list) else cfg.validation.classes, d.path, run.url)
    return result, read_sha256


def _split(cfg: RunConfig, clean, run: Run, say):
    """Split ``clean`` into train/val/test; writes ``data/split_report.{json,png}``.

    Returns the :class:`training.split.SplitResult`. Raises DataError when a split is empty.
    """
    from training.split import plot_split_report, split_dataset

    sp = split_dataset(clean, cfg.split.ratios, cfg.split_seed, predefined=cfg.split.predefined)
    storage.write_json(run.path("data", "split_report.json"), sp.report)
    plot_split_report(sp.report, run.path("data", "split_report.png"))
    for s in SPLITS:
        st = sp.report["splits"][s]
        say(f"  {s:5s}: {st['images']} images, {st['boxes']} boxes {st['boxes_per_class']}")
        if not sp.splits[s]:
            raise DataError(f"the {s} split is empty; adjust split.ratios or the predefined files")
    return sp


def _convert(clean, sp, run: Run) -> None:
    """Write ``tf_records/label_map.pbtxt``, and per split its COCO JSON and TFRecord shards."""
    from training.annotations import label_map_pbtxt, to_coco
    from training.annotations.record import Dataset
    from training.tfrecord import write_split

    os.makedirs(run.path("tf_records"), exist_ok=True)
    Path(run.path("tf_records", "label_map.pbtxt")).write_text(label_map_pbtxt(clean.classes))
    for s in SPLITS:
        sub = Dataset(root=clean.root, records=sp.splits[s], classes=clean.classes, format=clean.format)
        coco = to_coco(sub)
        storage.write_json(run.path("data", "annotations", f"{s}.json"), coco)
        ids = {im["file_name"]: im["id"] for im in coco["images"]}
        write_split(clean, sp.splits[s], s, run.path("tf_records"), ids)


def _write_experiment(cfg: RunConfig, run: Run, num_classes: int):
    """Build the Model Garden ExperimentConfig from ``cfg.train``; writes ``model_config/experiment.yaml``.

    Paths in experiment.yaml are relative to the run folder (:func:`load_params` re-points them), and
    the init checkpoint is copied in: the run carries everything training needs to any machine.
    Returns ``(params, the init checkpoint's source or None)``.
    """
    from training.experiment import build_experiment, experiment_to_yaml

    t = cfg.train
    params = build_experiment(
        preset=t.preset,
        num_classes=num_classes,
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
        ema=t.ema,
    )
    os.makedirs(run.path("model_config"), exist_ok=True)
    if t.anchors == "fit":
        _fit_anchors(params, run)
    source_checkpoint = params.task.init_checkpoint or None
    if source_checkpoint:
        params.task.init_checkpoint = bring_checkpoint(run, source_checkpoint)
    Path(run.path("model_config", "experiment.yaml")).write_text(experiment_to_yaml(params))
    return params, source_checkpoint


def _fit_anchors(params, run: Run) -> None:
    """Set ``params``' anchor size and aspect ratios from the training split's boxes
    (:func:`training.anchors.fit_anchors`); write the fit and its score to ``model_config/anchors.json``."""
    from training.anchors import fit_anchors, input_box_sizes

    m = params.task.model
    wh = input_box_sizes(storage.read_json(run.path("data", "annotations", "train.json")), max(m.input_size[:2]))
    fit = fit_anchors(
        wh,
        min_level=m.min_level,
        max_level=m.max_level,
        num_scales=m.anchor.num_scales,
        preset_size=m.anchor.anchor_size,
        preset_ratios=list(m.anchor.aspect_ratios),
        seed=int(params.task.train_data.seed or 0),
    )
    params.override({"task": {"model": {"anchor": {"anchor_size": fit.anchor_size, "aspect_ratios": fit.aspect_ratios}}}})
    storage.write_json(run.path("model_config", "anchors.json"), fit.as_dict())


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
        printer=say,
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
        with ex.tflite_graph(params, model) as graph_dir:  # traced and saved once for both variants
            for name, quant, fname in variants:
                path = os.path.join(out_dir, fname)
                with open(path, "wb") as f:
                    f.write(ex.convert_tflite(params, graph_dir, quant, cfg.export.calibration_steps))
                m = evaluate_split(ex.tflite_detector(path, module), test, gt, os.path.join(out_dir, "parity", name), draw=False)
                parity[name] = ex.parity_check(sm_metrics, m, bounds[name], cfg.export.parity_min_detections)
                parity[name]["max_delta"] = bounds[name]
                parity[name]["size_bytes"] = os.path.getsize(path)
                verdict = "passed" if parity[name]["passed"] else "FAILED"
                if parity[name].get("measurable") is False:
                    verdict = f"not measurable ({parity[name]['detections_savedmodel']} SavedModel detections)"
                if hasattr(console, "advance"):  # the final summary prints the figures
                    _advance(console, 1, info=f"TFLite {name} AP50 {m['AP50']:.3f} {verdict}")
                else:
                    say(f"TFLite {name} -> {path}: AP50 {m['AP50']:.3f} (SavedModel {sm_metrics['AP50']:.3f}), {verdict}")
    parity["passed"] = all(v["passed"] for k, v in parity.items() if isinstance(v, dict) and "passed" in v)
    storage.write_json(os.path.join(out_dir, "parity.json"), parity)
    from training.manifest import compute_manifest, manifest_digest

    # the files just evaluated for parity: registration refuses an export/ that differs from them
    run.stage_done("export", parity_passed=parity["passed"], artifact_sha256=manifest_digest(compute_manifest(out_dir)))
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
    run = run if run is not None else _open_or_prepare(cfg, run_dir, "prepare" in wanted, console)
    try:
        if not run.is_complete("prepare"):
            raise DataError(f"{run.url}: the prepare stage did not finish; start a new run")
        if int8 is not None:
            run.manifest["config"].setdefault("export", {})["int8"] = bool(int8)
        if "train" in wanted:
            _train_to_target(run, steps, console)
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
            # success: `detops run` leads its summary with the failure and exits ExitCode.EXPORT. A
            # check that was not measurable (too few detections, export.parity_min_detections) is
            # recorded false too; the run exits 0 and its summary leads with the model's problem.
            run.manifest["checks"] = {"tflite_parity": bool(parity.get("passed", True))}
        if finish and all(run.is_complete(s) for s in STAGES):
            run.finish("complete")
            if track and _track(run, console):
                run.publish()
    except BaseException:
        run.finish("failed")
        raise
    return run


def _open_or_prepare(cfg: RunConfig | None, run_dir: str | None, may_prepare: bool, console) -> Run:
    """The run at ``run_dir`` when it has a ``run.json``; else a new run made by :func:`prepare`.

    Raises:
      ConfigError: a new run is needed but ``cfg`` is None. NotFoundError: no run there and the
      prepare stage was not asked for.
    """
    if run_dir and has_manifest(run_dir):
        return Run.open(run_dir)
    if not may_prepare:
        raise NotFoundError(f"no run at {run_dir} (run.json missing); run the prepare stage first")
    if cfg is None:
        from training.errors import ConfigError

        raise ConfigError("a new run needs a run config (detops run <config.yaml>)")
    with _stage(console, "prepare"):
        return prepare(cfg, run_dir=run_dir, console=console)


def _train_to_target(run: Run, steps: int | None, console) -> None:
    """Train unless ``run.json`` records training complete up to the target step (``steps``, else
    the experiment's ``trainer.train_steps``); when steps ran, evaluate and export become stale."""
    target = steps or int(load_params(run).trainer.train_steps)
    done = run.manifest["stages"].get("train") or {}
    if run.is_complete("train") and int(done.get("global_step", 0)) >= target:
        return
    with _stage(console, "train"):
        result = train(run, steps=steps, console=console)
    if result.steps_run:
        for later in ("evaluate", "export"):
            if run.manifest["stages"].pop(later, None) is not None:
                run.manifest["stages"].setdefault("stale", []).append(later)
        run.save()


def _track(run: Run, console=None) -> bool:
    """Log the run to MLflow (idempotent per run id) when its config enables tracking; True if it did.

    The URI is ``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else the local SQLite store. The
    message naming the MLflow run is printed when the run is first logged; later calls (the export's
    metrics at finish) update the same MLflow run quietly.
    """
    tracking = (run.manifest.get("config") or {}).get("tracking") or {}
    if not tracking.get("enabled", False) or not is_chief():
        return False
    from training.tracking import default_tracking_uri, log_run

    uri = tracking.get("uri") or default_tracking_uri()
    known = run.manifest.get("mlflow_run_id")
    run.manifest["mlflow_run_id"] = log_run(run.local_dir, uri)
    run.save()
    if console is not None and run.manifest["mlflow_run_id"] != known:
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
