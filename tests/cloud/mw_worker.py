"""One training worker of the multi-worker test (run as a subprocess by test_multiworker.py).

Usage: ``python mw_worker.py RECORDS_DIR MODEL_DIR STEPS`` with ``TF_CONFIG`` or SageMaker's
``SM_HOSTS`` / ``SM_CURRENT_HOST`` in the environment. Builds the strategy with
:func:`training.distribute.strategy_from_env` (first, before any other TF op), trains the tiny
RetinaNet preset of :mod:`training.experiment` with Model Garden's task for STEPS steps on the
TFRecords, and prints one JSON line: ``{"replicas", "is_chief", "losses", "weights_sum", "weights_l2"}``.
"""

from __future__ import annotations

import json
import os
import sys


def main(records_dir: str, model_dir: str, steps: int) -> None:
    from training import distribute

    strategy = distribute.strategy_from_env(os.environ)  # must come before any other TF op

    import tensorflow as tf
    from official.core import task_factory

    from training.experiment import build_experiment

    params = build_experiment(
        preset="retinanet_mobilenetv2_fpn_tiny",
        num_classes=2,
        train_records=os.path.join(records_dir, "train-*.tfrecord"),
        val_records=os.path.join(records_dir, "train-*.tfrecord"),
        steps=steps,
        batch_size=4,  # global batch: 2 per replica
        overrides={"task.train_data.shuffle_buffer_size": 1, "task.train_data.seed": 7},
    )
    tf.keras.utils.set_random_seed(1)
    task = task_factory.get_task(params.task)
    with strategy.scope():
        model = task.build_model()
        optimizer = task.create_optimizer(params.trainer.optimizer_config, params.runtime)
        ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer)
    dataset = strategy.distribute_datasets_from_function(
        lambda ctx: task.build_inputs(params.task.train_data, ctx)
    )
    it = iter(dataset)

    @tf.function
    def train_step(inputs):
        logs = strategy.run(lambda x: task.train_step(x, model=model, optimizer=optimizer), args=(inputs,))
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, logs[task.loss], axis=None)

    losses = [float(train_step(next(it))) for _ in range(steps)]
    # Every worker saves (a collective op); only the chief's copy is the run's checkpoint.
    ckpt.save(os.path.join(distribute.worker_dir(model_dir, os.environ), "ckpt"))
    flat = tf.concat([tf.reshape(v, [-1]) for v in model.trainable_variables], axis=0)
    print(
        json.dumps(
            {
                "replicas": strategy.num_replicas_in_sync,
                "is_chief": distribute.is_chief(os.environ),
                "losses": losses,
                "weights_sum": float(tf.reduce_sum(flat)),
                "weights_l2": float(tf.norm(flat)),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
