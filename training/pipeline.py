"""The pipeline's stage functions: prepare -> train -> evaluate -> export (and :func:`run_all`).

Each stage reads and writes one run folder through :class:`training.run.Run` (the run-folder
contract: layout, ``run.json``, stage status, publishing) and records itself as finished there.
Stages return their results; tables and summaries are printed by the CLI (:mod:`detops.cli_training`).
``console`` (anything with a ``print`` method, e.g. a rich Console) receives progress lines.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from training import storage
from training.config import RunConfig, load_run_config  # noqa: F401  (re-exported for the CLI)
from training.errors import DataError, NotFoundError
from training.names import SPLITS
from training.run import Run, has_manifest

# ----------------------------------------------------------------------------------------- prepare


def dataset_hash(records) -> str:
    """SHA-256 over the canonical records (image path, image bytes hash, boxes), order-independent."""
    h = hashlib.sha256()
    for r in sorted(records, key=lambda r: r.image):
        boxes = sorted((b.label, round(b.xmin, 3), round(b.ymin, 3), round(b.xmax, 3), round(b.ymax, 3)) for b in r.boxes)
        h.update(json.dumps([r.image, r.sha256, boxes]).encode())
    return h.hexdigest()


def prepare(cfg: RunConfig, run_dir: str | None = None, console=None) -> Run:
    """Ingest, validate, split and convert: the run's ``data/``, ``tf_records/`` and ``model_config/``.

    Creates a new run folder (at ``run_dir`` if given) and records the ``prepare`` stage in it.

    Raises:
      DataError: nothing left after validation, or an empty split. ConfigError: bad settings.
    """
    say = console.print if console else (lambda *a, **k: None)
    run = Run.create(cfg, run_dir)
    d = cfg.data
    say(f"[bold]prepare[/] {d.format} dataset {d.path} -> {run.url}")
    result = _ingest(cfg, run, say)
    clean = result.dataset
    sp = _split(cfg, clean, run, say)
    _convert(clean, sp, run)
    params = _write_experiment(cfg, run, num_classes=len(clean.classes))
    rep = result.report
    run.manifest["inputs"] = {
        "dataset": {"path": d.path, "format": d.format, "sha256": dataset_hash(clean.records)},
        "config_sha256": hashlib.sha256(json.dumps(run.manifest["config"], sort_keys=True).encode()).hexdigest(),
        "init_checkpoint": params.task.init_checkpoint,
    }
    run.manifest["classes"] = clean.classes
    run.stage_done(
        "prepare",
        images_in=rep.images_in, images_kept=rep.images_kept, boxes_in=rep.boxes_in, boxes_kept=rep.boxes_kept,
        splits={s: len(sp.splits[s]) for s in SPLITS},
    )
    return run


def _ingest(cfg: RunConfig, run: Run, say):
    """Read the dataset and validate it; writes ``data/quality_report.{json,txt}``.

    Returns the :class:`training.annotations.validate.ValidationResult`. Raises DataError when no
    image is left.
    """
    from training.annotations import read_dataset, validate

    d = cfg.data
    ds = read_dataset(d.format, d.path, images=d.images, classes=d.classes, class_from_filename=d.class_from_filename, **d.options)
    result = validate(ds, cfg.validation)
    os.makedirs(run.path("data", "annotations"), exist_ok=True)
    storage.write_json(run.path("data", "quality_report.json"), result.report.to_dict())
    summary = result.report.summary()
    Path(run.path("data", "quality_report.txt")).write_text(summary + "\n")
    say(summary)
    if not result.dataset.records:
        raise DataError(f"{d.path}: no valid image left after validation (see {run.url}/data/quality_report.json)")
    return result


def _split(cfg: RunConfig, clean, run: Run, say):
    """Split ``clean`` into train/val/test; writes ``data/split_report.{json,png}``.

    Returns the :class:`training.split.SplitResult`. Raises DataError when a split is empty.
    """
    from training.split import plot_split_report, split_dataset

    sp = split_dataset(clean, cfg.split.ratios, cfg.split.seed, predefined=cfg.split.predefined)
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
    """Build the Model Garden ExperimentConfig from ``cfg.train``; writes ``model_config/experiment.yaml``."""
    from training.experiment import build_experiment, experiment_to_yaml

    t = cfg.train
    params = build_experiment(
        preset=t.preset,
        num_classes=num_classes,
        train_records=run.path("tf_records", "train-*.tfrecord"),
        val_records=run.path("tf_records", "val-*.tfrecord"),
        val_annotation_file=run.path("data", "annotations", "val.json"),
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
    )
    os.makedirs(run.path("model_config"), exist_ok=True)
    Path(run.path("model_config", "experiment.yaml")).write_text(experiment_to_yaml(params))
    return params


def _pretrained() -> str:
    from training.pretrained import pretrained_backbone_checkpoint

    return pretrained_backbone_checkpoint()


# ------------------------------------------------------------------------------------------- train


def load_params(run: Run):
    """The run's Model Garden ExperimentConfig, with data paths re-pointed at this run's local folder."""
    from training.experiment import experiment_from_yaml

    params = experiment_from_yaml(Path(run.path("model_config", "experiment.yaml")).read_text())
    params.task.train_data.input_path = run.path("tf_records", "train-*.tfrecord")
    params.task.validation_data.input_path = run.path("tf_records", "val-*.tfrecord")
    params.task.annotation_file = run.path("data", "annotations", "val.json")
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
    result = train_model(
        params,
        checkpoint_dir=run.path("model_training", "checkpoints"),
        tensorboard_dir=run.path("model_training", "tensorboard"),
        printer=say,
    )
    run.stage_done("train", global_step=result.global_step, steps_run=result.steps_run,
                   seconds=round(result.seconds, 1), last_losses=result.losses)
    return result


# ---------------------------------------------------------------------------------------- evaluate


def load_detector(run: Run):
    """The run's model restored from its latest checkpoint.

    Returns:
      ``(params, model, module)``: the ExperimentConfig (:func:`load_params`), the Keras detection
      model, and a :class:`training.inference.DetectorModule` wrapping it with the run's classes.
    """
    from training.inference import DetectorModule, build_model, restore

    params = load_params(run)
    model = build_model(params)
    restore(model, run.path("model_training", "checkpoints"))
    return params, model, DetectorModule(params, model, run.manifest["classes"])


def evaluate(run: Run, splits: list[str] | None = None, console=None) -> dict[str, dict]:
    """COCO metrics of the latest checkpoint on each split; writes ``evaluation/<split>/``."""
    import tensorflow as tf

    from training.evaluate import evaluate_split

    _, _, module = load_detector(run)
    ckpt = tf.train.latest_checkpoint(run.path("model_training", "checkpoints"))
    out = {}
    for s in splits or list(SPLITS):
        if s not in SPLITS:
            raise NotFoundError(f"unknown split {s!r}; use one of {SPLITS}")
        out[s] = evaluate_split(
            module.detect_encoded,
            run.path("tf_records", f"{s}-*.tfrecord"),
            run.path("data", "annotations", f"{s}.json"),
            run.path("evaluation", s),
            extra={"checkpoint": os.path.basename(ckpt or "")},
        )
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
            say(f"TFLite {name} -> {path}: AP50 {m['AP50']:.3f} (SavedModel {sm_metrics['AP50']:.3f}), "
                f"{'passed' if parity[name]['passed'] else 'FAILED'}")
    parity["passed"] = all(v["passed"] for k, v in parity.items() if isinstance(v, dict) and "passed" in v)
    storage.write_json(os.path.join(out_dir, "parity.json"), parity)
    run.stage_done("export", parity_passed=parity["passed"])
    return parity


# --------------------------------------------------------------------------------------------- all


@dataclass
class RunResult:
    """The finished run and its metrics per split."""

    run: Run
    metrics: dict[str, dict]
    parity: dict


def run_all(cfg: RunConfig, run_dir: str | None = None, console=None) -> RunResult:
    """prepare -> train -> evaluate -> export (-> MLflow tracking) into one run folder.

    With ``run_dir`` naming an existing run, prepare is not repeated (the run must record it as
    finished, else DataError); train then resumes from the last checkpoint up to the configured
    steps, and evaluate and export run again. The run is marked ``failed`` if a stage raises,
    ``complete`` at the end.
    """
    if run_dir and has_manifest(run_dir):
        run = Run.open(run_dir)
    else:
        run = prepare(cfg, run_dir=run_dir, console=console)
    try:
        stages = run.manifest.get("stages", {})
        if "prepare" not in stages:
            raise DataError(f"{run.url}: the prepare stage did not finish; start a new run")
        train(run, console=console)
        metrics = evaluate(run, console=console)
        parity = export(run, console=console)
        if cfg.tracking.enabled:
            from training.tracking import log_run

            run.manifest["mlflow_run_id"] = log_run(run.local_dir, cfg.tracking.uri)
        run.finish("complete")
    except BaseException:
        run.finish("failed")
        raise
    return RunResult(run=run, metrics=metrics, parity=parity)
