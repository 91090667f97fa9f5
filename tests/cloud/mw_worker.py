"""One training worker of the multi-worker test (run as a subprocess by test_multiworker.py).

Usage: ``python mw_worker.py RECORDS_DIR MODEL_DIR STEPS`` with ``TF_CONFIG`` or SageMaker's
``SM_HOSTS`` / ``SM_CURRENT_HOST`` in the environment. Builds the strategy with
:func:`training.distribute.strategy_from_env` (first, before any other TF op), then trains the
tiny RetinaNet preset of :mod:`training.experiment` with the project's trainer
(:func:`training.train.train_model`, Model Garden's Orbit runner) for STEPS steps, and prints one
JSON line: ``{"replicas", "is_chief", "global_step", "steps_run", "losses"}``.
"""

from __future__ import annotations

import json
import os
import sys


def main(records_dir: str, model_dir: str, steps: int) -> None:
    from training import distribute

    strategy = distribute.strategy_from_env(os.environ)  # must come before any other TF op

    from training.experiment import build_experiment
    from training.train import train_model

    pattern = os.path.join(records_dir, "train-*.tfrecord")
    params = build_experiment(
        preset="retinanet_mobilenetv2_fpn_tiny",
        num_classes=2,
        train_records=pattern,
        val_records=pattern,
        steps=steps,
        batch_size=4,  # global batch: 2 per replica
        checkpoint_interval=steps,
        overrides={"task.train_data.shuffle_buffer_size": 1, "task.train_data.seed": 7},
    )
    result = train_model(params, model_dir, strategy=strategy, printer=lambda line: print(line, file=sys.stderr))
    print(
        json.dumps(
            {
                "replicas": strategy.num_replicas_in_sync,
                "is_chief": distribute.is_chief(os.environ),
                "global_step": result.global_step,
                "steps_run": result.steps_run,
                "losses": result.losses,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
