"""Presets -> Model Garden ExperimentConfig: derived values, overrides and their validation."""

from __future__ import annotations

import pytest

from training.errors import ConfigError, NotFoundError
from training.experiment import PRESETS, build_experiment, experiment_from_yaml, experiment_to_yaml

ARGS = dict(num_classes=3, train_records="/r/train-*.tfrecord", val_records="/r/val-*.tfrecord")


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_builds_and_fills_derived_values(preset):
    p = build_experiment(preset=preset, **ARGS, steps=50, batch_size=4, image_size=128, val_annotation_file="/a/val.json",
                         init_checkpoint="/ckpt/backbone")
    assert p.task.model.num_classes == 4  # 3 classes + background
    assert p.task.model.input_size == [128, 128, 3]
    assert p.trainer.train_steps == 50
    assert p.task.train_data.global_batch_size == 4
    assert p.task.train_data.input_path == "/r/train-*.tfrecord"
    assert p.task.annotation_file == "/a/val.json"
    assert p.task.init_checkpoint == "/ckpt/backbone" and p.task.init_checkpoint_modules == "backbone"
    lr = p.trainer.optimizer_config.learning_rate
    assert lr.type == "cosine" and lr.cosine.decay_steps == 50
    assert p.trainer.checkpoint_interval % p.trainer.steps_per_loop == 0


def test_gpu_preset_is_resnet_fpn():
    p = build_experiment(preset="retinanet_resnet50_fpn_gpu", **ARGS)
    assert p.task.model.backbone.type == "resnet" and p.task.model.backbone.resnet.model_id == 50
    assert p.task.model.decoder.type == "fpn"
    assert p.task.model.input_size[:2] == [640, 640]


def test_gpu_transfer_learning_preset_starts_from_the_pretrained_backbone():
    calls = []
    p = build_experiment(preset="retinanet_mobilenetv2_fpn_gpu", **ARGS,
                         pretrained_provider=lambda: calls.append(1) or "/cache/mnv2")
    assert calls == [1] and p.task.init_checkpoint == "/cache/mnv2" and p.task.init_checkpoint_modules == "backbone"
    assert p.task.model.backbone.mobilenet.model_id == "MobileNetV2Features"
    assert p.task.model.input_size[:2] == [640, 640] and p.task.model.max_level == 7
    assert p.task.model.norm_activation.use_sync_bn


def test_default_preset_uses_pretrained_provider():
    calls = []
    p = build_experiment(**ARGS, pretrained_provider=lambda: calls.append(1) or "/cache/mnv2")
    assert calls == [1] and p.task.init_checkpoint == "/cache/mnv2"
    assert p.task.model.backbone.mobilenet.model_id == "MobileNetV2Features"  # MobileNetV2 minus its unused 1x1 conv


def test_overrides_applied_dotted_and_nested():
    p = build_experiment(preset="retinanet_mobilenetv2_fpn_tiny", **ARGS,
                         overrides={"task.model.head.num_convs": 2, "task": {"losses": {"focal_loss_gamma": 2.0}}})
    assert p.task.model.head.num_convs == 2
    assert p.task.losses.focal_loss_gamma == 2.0


def test_unknown_override_key_suggests_near_match():
    with pytest.raises(ConfigError, match=r"unknown experiment key 'task.model.head.num_conv'.*'task.model.head.num_convs'"):
        build_experiment(preset="retinanet_mobilenetv2_fpn_tiny", **ARGS, overrides={"task.model.head.num_conv": 2})


def test_every_bad_override_is_reported_at_once():
    overrides = {"task.model.head.num_conv": 2, "task.losses.l2_weight_decay": "x", "task.freez_backbone": True}
    with pytest.raises(ConfigError) as e:
        build_experiment(preset="retinanet_mobilenetv2_fpn_tiny", **ARGS, overrides=overrides)
    lines = str(e.value).splitlines()
    assert len(lines) == 3, lines
    assert "Did you mean 'task.model.head.num_convs'?" in lines[0]
    assert "task.losses.l2_weight_decay must be a number" in lines[1]
    assert "Did you mean 'task.freeze_backbone'?" in lines[2]


def test_unknown_preset_lists_known():
    with pytest.raises(NotFoundError, match="retinanet_mobilenetv2_fpn_cpu"):
        build_experiment(preset="retinanet_mobilenet", **ARGS)


def test_bad_values_rejected():
    with pytest.raises(ConfigError, match="image_size >= 32"):
        build_experiment(preset="retinanet_mobilenetv2_fpn_tiny", **ARGS, image_size=8)


def test_yaml_round_trip():
    p = build_experiment(preset="retinanet_mobilenetv2_fpn_tiny", **ARGS, steps=9)
    q = experiment_from_yaml(experiment_to_yaml(p))
    assert q.as_dict() == p.as_dict()


def test_override_of_wrong_type_is_rejected():
    with pytest.raises(ConfigError, match=r"task.losses.l2_weight_decay must be a number"):
        build_experiment(preset="retinanet_mobilenetv2_fpn_tiny", **ARGS, overrides={"task.losses.l2_weight_decay": "1e-5"})
    with pytest.raises(ConfigError, match=r"must be true or false"):
        build_experiment(preset="retinanet_mobilenetv2_fpn_tiny", **ARGS, overrides={"task.freeze_backbone": "yes"})


def test_image_size_must_fit_the_feature_pyramid():
    with pytest.raises(ConfigError, match=r"image_size 160 must be a multiple of 64.*e.g. 128"):
        build_experiment(preset="retinanet_mobilenetv2_fpn_cpu", **ARGS, image_size=160, init_checkpoint="/x")
