"""`train.ema`: Model Garden's moving average of the weights, and a final checkpoint that holds the averages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from training_fakes import make_voc_dataset, tiny_config_tree

from training.config import load_run_config
from training.experiment import build_experiment

ARGS = dict(num_classes=3, train_records="/r/train-*.tfrecord", val_records="/r/val-*.tfrecord")


def test_ema_sets_model_gardens_moving_average():
    p = build_experiment(**ARGS, ema=0.995)
    ema = p.trainer.optimizer_config.ema
    assert ema is not None and ema.average_decay == 0.995 and ema.trainable_weights_only
    assert build_experiment(**ARGS).trainer.optimizer_config.ema is None


@pytest.mark.parametrize("bad", ["0", "1", "1.5", "-0.1"])
def test_ema_decay_must_be_between_0_and_1(tmp_path: Path, bad: str):
    from training.errors import ConfigError

    tree = tiny_config_tree(tmp_path / "data", tmp_path / "store")
    with pytest.raises(ConfigError, match=r"train\.ema"):
        load_run_config(tree=tree, overrides=[f"train.ema={bad}"])


def _model_and_average(checkpoint: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(model variable, its EMA slot) value pairs stored in ``checkpoint``."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(checkpoint)
    slot = "/.OPTIMIZER_SLOT/optimizer/average/.ATTRIBUTES/VARIABLE_VALUE"
    pairs = []
    for key in reader.get_variable_to_shape_map():
        if key.endswith(slot):
            var = key[: -len(slot)] + "/.ATTRIBUTES/VARIABLE_VALUE"
            pairs.append((reader.get_tensor(var), reader.get_tensor(key)))
    return pairs


@pytest.mark.slow
def test_final_checkpoint_holds_the_averaged_weights(tmp_path: Path):
    """The last checkpoint's model weights are the EMA averages; an earlier one still holds raw weights
    that differ from their averages (so the comparison can tell the two apart)."""
    import tensorflow as tf

    from training import pipeline

    data = make_voc_dataset(tmp_path / "data", n=12)
    tree = tiny_config_tree(data, tmp_path / "store", steps=4)
    cfg = load_run_config(tree=tree, overrides=["train.ema=0.5", "train.learning_rate=0.05"])
    run = pipeline.prepare(cfg)
    pipeline.train(run)
    ckpt_dir = run.path("model_training", "checkpoints")
    state = tf.train.get_checkpoint_state(ckpt_dir)
    final, earlier = state.model_checkpoint_path, state.all_model_checkpoint_paths[-2]
    assert final.endswith("-4")
    pairs = _model_and_average(final)
    assert len(pairs) > 10
    assert all(np.array_equal(w, avg) for w, avg in pairs)
    assert any(not np.allclose(w, avg) for w, avg in _model_and_average(earlier))
