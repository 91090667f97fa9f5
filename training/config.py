"""The run configuration (``detops run <config.yaml>``): typed, validated, with env-var expansion.

Example (configs/bccd.yaml)::

    project: bccd
    datastore: runs                      # local folder (default), az://container/path or s3://bucket/path
    data:
      format: voc
      path: ${DETOPS_DATASETS}/bccd/BCCD  # ${VAR} and ${VAR:-default} are expanded from the environment
    seed: 42                             # seeds the split, shuffling, augmentation, initializers
    split: {ratios: [0.7, 0.15, 0.15]}
    train: {preset: retinanet_mobilenetv2_fpn_cpu, steps: 600}

Unknown keys are rejected with a near-match suggestion ("did you mean"), as in ultralytics' config
checks; ``--set section.key=value`` overrides any key (the value is parsed as YAML).
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from training.errors import ConfigError, validation_problems


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    """Where the labelled images are and how to read them (see ``training.annotations.read_dataset``)."""

    format: str = "voc"
    path: str | list[str]
    images: str | list[str] | None = None
    classes: list[str] | str | None = None
    class_from_filename: bool | str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    #: Pinned version of the dataset: SHA-256 of its records as read (``training.pipeline.dataset_hash``),
    #: so a data change is a commit of this value; ``prepare`` refuses a dataset that differs.
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")


_IN_RUN_CONFIG: ContextVar[bool] = ContextVar("detops_in_run_config", default=False)


class ValidationPolicy(_Strict):
    """What annotation validation does with problems it finds: the ``validation:`` section of a run
    config, and the policy :func:`training.annotations.validate` applies (one model for both; the
    rules are in :mod:`training.annotations.validate`'s docstring).

    ``out_of_bounds``: ``"clip"`` (default; the clipped boxes are counted) or ``"reject"``.
    ``classes``: the allowed class names, in label-map order; ``None`` allows every label.
    ``size_mismatch``: ``"reject"`` (default: a different size usually means another or a resized
    image, so the boxes would be off) or ``"trust_image"`` (keep, use the real size, clip boxes).
    ``duplicates``: ``"reject"`` (default; the later copy by record order) or ``"keep"`` (report only).
    ``workers``: threads decoding images (I/O- and zlib/libjpeg-bound; Pillow releases the GIL), >= 1.
    ``max_image_bytes``: the largest image file read (default 64 MiB: a 12-megapixel photo is 3-8 MB as
    JPEG, 20-36 MB as PNG); a larger file is rejected as ``too_large`` without being read, so one huge
    or hostile file cannot exhaust memory (``workers`` files are read at a time).

    Built directly (``ValidationPolicy(out_of_bounds="reject")``), a bad value raises
    :class:`ConfigError` naming the field; inside a run config it is reported with the other keys.
    """

    out_of_bounds: Literal["clip", "reject"] = "clip"
    classes: list[str] | None = None
    size_mismatch: Literal["reject", "trust_image"] = "reject"
    duplicates: Literal["reject", "keep"] = "reject"
    workers: int = Field(default=8, ge=1)
    max_image_bytes: int = Field(default=64 * 1024 * 1024, gt=0)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            if _IN_RUN_CONFIG.get():  # let the run config report it with its other problems
                raise
            raise ConfigError(
                "validation policy: "
                + "; ".join(f"{p.key}={p.input!r}: {p.msg}" for p in validation_problems(e, ValidationPolicy))
            ) from None


#: The run config's name for :class:`ValidationPolicy` (the same model).
ValidationConfig = ValidationPolicy


class SplitConfig(_Strict):
    """Stratified split ratios, or predefined split files (Pascal VOC ImageSets).

    ``seed`` overrides the run's ``seed`` for the split only (default: the run's ``seed``).
    """

    ratios: tuple[float, float, float] = (0.7, 0.15, 0.15)
    seed: int | None = None
    predefined: dict[str, str] | None = None

    @field_validator("ratios")
    @classmethod
    def _sum_to_one(cls, v):
        if any(x < 0 for x in v) or abs(sum(v) - 1.0) > 1e-6:
            raise ValueError("ratios must be three non-negative fractions summing to 1")
        return v


class TrainConfig(_Strict):
    """Training: preset (training.experiment.PRESETS) and what overrides its defaults.

    ``anchors``: ``"preset"`` keeps the preset's anchor grid; ``"fit"`` fits its size and aspect ratios
    to the training split's boxes at ``image_size`` (:mod:`training.anchors`; the fit and its score
    go to ``model_config/anchors.json``). ``fit`` and an ``overrides`` key under
    ``task.model.anchor`` exclude each other.

    ``ema``: the decay of an exponential moving average of the trainable weights (Model Garden's
    ``trainer.optimizer_config.ema``, warmed up as ``min(ema, (1 + step) / (10 + step))``); the
    final checkpoint holds the averaged weights, so evaluation, export and serving use them.
    ``None`` (default) trains without it.
    """

    preset: str = "retinanet_mobilenetv2_fpn_cpu"
    steps: int | None = Field(default=None, ge=1)
    batch_size: int | None = Field(default=None, ge=1)
    image_size: int | None = Field(default=None, ge=32)
    learning_rate: float | None = Field(default=None, gt=0)
    warmup_steps: int | None = Field(default=None, ge=0)
    checkpoint_interval: int | None = Field(default=None, ge=1)
    init_checkpoint: str | None = None  # a checkpoint prefix; "none" disables the preset's pretrained backbone
    anchors: Literal["preset", "fit"] = "preset"
    ema: float | None = Field(default=None, gt=0, lt=1)
    overrides: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _fit_or_override(self):
        if self.anchors == "fit":
            from training.tracking import flatten  # nested and/or dotted keys -> dotted leaf keys

            clash = [k for k in flatten(self.overrides) if k.startswith("task.model.anchor.") or k == "task.model.anchor"]
            if clash:
                raise ValueError(f"anchors: fit sets the anchors; remove the override {clash[0]!r} or use anchors: preset")
        return self


class ExportConfig(_Strict):
    """Export: TFLite variants and the parity threshold (AP points, absolute)."""

    tflite: bool = True
    int8: bool = True
    max_delta: float = Field(default=0.01, ge=0)  # float TFLite vs SavedModel, |delta| of AP and AP50
    # Post-training int8 quantization usually costs 1-3 AP points; its own bound.
    max_delta_int8: float = Field(default=0.03, ge=0)
    calibration_steps: int = Field(default=100, ge=1)
    # Fewer SavedModel detections than this on the test split: parity is "not measurable" (a model
    # that finds nothing "agrees" with its TFLite copy at 0.000 AP); the quality gate refuses it.
    # Measured: 0 for the cards at 120 steps, 614 at 240, 734 at 480 (57 test images); BCCD 5373.
    parity_min_detections: int = Field(default=10, ge=1)


class GateConfig(_Strict):
    """The quality gate's absolute floor (:mod:`training.floors`), checked on the test split whether or
    not an Approved version exists to compare with (``detops gate``, ``register``; the run summary).

    ``min_ap50``: the lowest test AP50 (COCO AP at IoU 0.50, in [0, 1]) a candidate may have.
    ``min_class_ap50``: the lowest test AP50 of any one class (classes without a test box are not
    checked), so a model that never finds one class fails. A candidate at the floor passes.

    The defaults (0.2, 0.05) are far below what a model that learnt something reaches and far above
    one that did not. Measured here (configs/bccd.yaml and configs/pinochle_cards.yaml, seed 42):
    the cards at 120 steps made 0 test detections (AP50 0.000 in every class); at 240 steps test
    AP50 0.415 (weakest class 0.330); at the default 480 steps 0.543 (weakest 0.336); BCCD's
    default 0.912 (weakest class RBC 0.848).
    """

    min_ap50: float = Field(default=0.2, ge=0, le=1)
    min_class_ap50: float = Field(default=0.05, ge=0, le=1)


class TrackingConfig(_Strict):
    """MLflow tracking: on by default; ``uri`` None = MLFLOW_TRACKING_URI or the local SQLite store."""

    enabled: bool = True
    uri: str | None = None


class RunConfig(_Strict):
    """A whole run: project name, datastore root and each stage's settings."""

    project: str = Field(default="detops", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    datastore: str = "runs"
    # One seed for every random source of a run: the split, tf.data shuffling, augmentation,
    # weight initializers, int8 calibration (see training.train.seed_everything).
    seed: int = Field(default=42, ge=0, lt=2**31)
    data: DataConfig
    validation: ValidationPolicy = Field(default_factory=ValidationPolicy)
    split: SplitConfig = Field(default_factory=SplitConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @property
    def split_seed(self) -> int:
        """The split's seed: ``split.seed`` when set, else the run's ``seed``."""
        return self.seed if self.split.seed is None else self.split.seed


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: Any, where: str) -> Any:
    """Expand ``${VAR}`` / ``${VAR:-default}`` in every string of a YAML tree.

    Raises:
      ConfigError: a ``${VAR}`` without default whose variable is not set (names it and the file).
    """
    if isinstance(value, str):

        def sub(m: re.Match) -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(f"{where}: environment variable {name} is not set (used as ${{{name}}})")

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: expand_env(v, where) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, where) for v in value]
    return value


def apply_set(tree: dict, assignment: str) -> None:
    """Apply one ``--set a.b.c=value`` to a YAML tree in place (value parsed as YAML).

    Raises:
      ConfigError: no ``=`` in ``assignment``.
    """
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected key=value, e.g. train.steps=50")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    if parts[:2] == ["train", "overrides"] and len(parts) > 2:
        # Experiment overrides keep their dotted Model Garden key as one key.
        parts = [*parts[:2], ".".join(parts[2:])]
    node = tree
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[parts[-1]] = parse_value(raw)


def parse_value(raw: str) -> Any:
    """Parse a ``--set`` value as YAML, also reading ``1e-5`` as a float (YAML 1.1 wants ``1.0e-5``)."""
    value = yaml.safe_load(raw)
    if isinstance(value, str):
        try:
            return float(value) if re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", value.strip()) else value
        except ValueError:
            return value
    return value


def _explain(e: ValidationError, where: str) -> ConfigError:
    """Every pydantic error as one line naming the key; an unknown key gets its near match.

    All bad keys are reported at once (as ultralytics does), one per line, each prefixed by ``where``.
    """
    lines = []
    for p in validation_problems(e, RunConfig):
        if p.type == "extra_forbidden":
            hint = f" Did you mean {p.suggestion!r}?" if p.suggestion else ""
            lines.append(f"{where}: unknown key {p.key!r}.{hint} Known here: {', '.join(p.known)}.")
        else:
            lines.append(f"{where}: {p.key}: {p.msg}")
    return ConfigError("\n".join(lines))


def load_run_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    datastore: str | None = None,
    tree: dict | None = None,
) -> RunConfig:
    """Read, expand, override and validate a run config.

    Args:
      path: the YAML file (or None with ``tree``).
      overrides: ``--set key=value`` strings, applied in order after reading.
      datastore: overrides ``datastore`` (the CLI's ``--datastore``).

    Raises:
      ConfigError: unreadable file, unknown key (with a suggestion), bad value, unset ${VAR}.
    """
    where = str(path) if path else "run config"
    if tree is None:
        if path is None:
            raise TypeError("load_run_config needs a path or a tree")
        try:
            tree = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{where}: not valid YAML: {e}") from e
    if not isinstance(tree, dict):
        raise ConfigError(f"{where}: the top level must be a mapping")
    for a in overrides or []:
        apply_set(tree, a)
    if datastore:
        tree["datastore"] = datastore
    tree = expand_env(tree, where)
    token = _IN_RUN_CONFIG.set(True)
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as e:
        raise _explain(e, where) from None
    finally:
        _IN_RUN_CONFIG.reset(token)
