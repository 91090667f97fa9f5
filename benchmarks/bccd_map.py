"""Benchmark: the default preset's BCCD test mAP@0.5 and mAP@0.5:0.95, with its wall time.

Runs the whole local pipeline (``detops run configs/bccd.yaml``) on ../shared/datasets/bccd (found
through DETOPS_DATASETS) and prints, as JSON:

* ``test_AP50``, ``test_AP`` (COCO mAP@0.5 and mAP@[.5:.95] on the test split), per-class AP50;
* the wall time of each stage in seconds and the training speed in steps/s;
* ``train_time_ratio``: training wall time divided by a reference CPU workload (a fixed set of
  MobileNetV2 forward+backward passes at the same input size and batch) measured in the same run,
  before and after, so that figures from a shared, noisy machine can be compared.

Usage::

    DETOPS_DATASETS=../shared/datasets .venv/bin/python benchmarks/bccd_map.py [--set train.steps=480 ...]
    .venv/bin/python benchmarks/bccd_map.py --from-scratch    # same run without the pretrained backbone
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def reference_workload(image_size: int, batch: int, steps: int = 10) -> float:
    """Seconds for ``steps`` MobileNetV2 train steps (Keras, random data) at ``image_size``, ``batch``."""
    import numpy as np
    import tensorflow as tf
    import tf_keras

    model = tf_keras.applications.MobileNetV2(input_shape=(image_size, image_size, 3), include_top=False, weights=None)
    opt = tf_keras.optimizers.SGD(0.01)
    x = tf.constant(np.random.default_rng(0).normal(size=(batch, image_size, image_size, 3)).astype("float32"))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True)))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

    step()  # trace
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "bccd.yaml"))
    ap.add_argument("--datastore", default=None, help="default: a temporary folder")
    ap.add_argument("--set", action="append", default=[], dest="sets", help="config override key=value")
    ap.add_argument("--from-scratch", action="store_true", help="no pretrained backbone (train.init_checkpoint=none)")
    args = ap.parse_args()
    os.environ.setdefault("DETOPS_DATASETS", str(ROOT.parent / "shared" / "datasets"))

    from rich.console import Console

    from training import pipeline
    from training.experiment import get_preset

    sets = list(args.sets) + (["train.init_checkpoint=none"] if args.from_scratch else [])
    datastore = args.datastore or tempfile.mkdtemp(prefix="detops-bench-")
    cfg = pipeline.load_run_config(args.config, overrides=sets, datastore=datastore)
    preset = get_preset(cfg.train.preset).defaults
    size = cfg.train.image_size or preset["image_size"]
    batch = cfg.train.batch_size or preset["batch_size"]
    console = Console(stderr=True)

    ref_before = reference_workload(size, batch)
    t0 = time.perf_counter()
    run = pipeline.prepare(cfg, console=console)
    t_prepare = time.perf_counter() - t0
    t0 = time.perf_counter()
    tr = pipeline.train(run, console=console)
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics = pipeline.evaluate(run, console=console)
    t_eval = time.perf_counter() - t0
    t0 = time.perf_counter()
    parity = pipeline.export(run, console=console)
    t_export = time.perf_counter() - t0
    run.finish("complete")
    ref_after = reference_workload(size, batch)
    ref = (ref_before + ref_after) / 2

    test = metrics["test"]
    result = {
        "config": args.config,
        "preset": cfg.train.preset,
        "pretrained": not args.from_scratch,
        "overrides": sets,
        "run": run.url,
        "steps": tr.global_step,
        "image_size": size,
        "batch_size": batch,
        "test_AP50": round(test["AP50"], 4),
        "test_AP": round(test["AP"], 4),
        "test_AP75": round(test["AP75"], 4),
        "test_APs": round(test["APs"], 4),
        "test_per_class_AP50": {k: round(v["AP50"], 4) for k, v in test["per_class"].items()},
        "val_AP50": round(metrics["val"]["AP50"], 4),
        "train_AP50": round(metrics["train"]["AP50"], 4),
        "tflite_parity": {k: v for k, v in parity.items() if isinstance(v, dict)},
        "seconds": {"prepare": round(t_prepare, 1), "train": round(t_train, 1), "evaluate": round(t_eval, 1),
                    "export": round(t_export, 1)},
        "train_steps_per_s": round(tr.steps_run / max(tr.seconds, 1e-9), 3),
        "reference_seconds": {"before": round(ref_before, 2), "after": round(ref_after, 2)},
        "train_time_ratio": round(t_train / ref, 1),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
