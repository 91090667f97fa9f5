"""Benchmark: the default preset's BCCD test mAP@0.5 and mAP@0.5:0.95, with its wall time.

Runs the whole local pipeline (``detops run configs/bccd.yaml``) on ../shared/datasets/bccd (found
through DETOPS_DATASETS) and prints, as JSON:

* ``test_AP50``, ``test_AP`` (COCO mAP@0.5 and mAP@[.5:.95] on the test split), per-class AP50;
* the wall time of each stage in seconds and the training speed in steps/s;
* ``train_time_ratio``: training wall time divided by a reference CPU workload (a fixed set of
  MobileNetV2 forward+backward passes at the same input size and batch) measured in the same run,
  before and after, so that figures from a shared, noisy machine can be compared.

With ``--seeds N`` it runs the pipeline N times with the run seeds ``--first-seed`` ..
``--first-seed + N - 1`` (each in its own process, ``--parallel`` at a time) and prints each run's
figures and, over the runs, the mean and spread (max - min) of test AP50 and AP, of the TFLite
parity deltas, of the training speed and of the whole run's wall time.

Usage::

    DETOPS_DATASETS=../shared/datasets .venv/bin/python benchmarks/bccd_map.py [--set train.steps=480 ...]
    .venv/bin/python benchmarks/bccd_map.py --seeds 3              # reproducibility: mean and spread
    .venv/bin/python benchmarks/bccd_map.py --from-json s1.json s2.json s3.json   # summarize single runs
    .venv/bin/python benchmarks/bccd_map.py --from-scratch    # same run without the pretrained backbone
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
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
    ap.add_argument("--seeds", type=int, default=0, help="run N seeds and print mean and spread (max - min)")
    ap.add_argument("--first-seed", type=int, default=1, help="seeds are first-seed .. first-seed + N - 1")
    ap.add_argument("--parallel", type=int, default=1, help="with --seeds: runs at a time (each its own process)")
    ap.add_argument("--no-reference", action="store_true", help="skip the reference CPU workload")
    ap.add_argument("--out", default=None, help="also write the JSON result to this file")
    ap.add_argument("--from-json", nargs="+", default=None, help="summarize single-seed results (--out files) instead of running")
    args = ap.parse_args()
    from training.settings import CommonSettings

    os.environ["DETOPS_DATASETS"] = str(CommonSettings.load().datasets_root())  # the seeds' processes inherit it
    if args.from_json:
        runs = {json.loads(Path(p).read_text())["seed"]: json.loads(Path(p).read_text()) for p in args.from_json}
        print(json.dumps(summarize(runs, args), indent=2))
        return 0
    if args.seeds:
        return multi_seed(args)

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

    ref_before = 0.0 if args.no_reference else reference_workload(size, batch)
    t_start = time.perf_counter()
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
    t_total = time.perf_counter() - t_start
    ref_after = 0.0 if args.no_reference else reference_workload(size, batch)
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
                    "export": round(t_export, 1), "total": round(t_total, 1)},
        "train_steps_per_s": round(tr.steps_run / max(tr.seconds, 1e-9), 3),
        "seed": cfg.seed,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    if not args.no_reference:
        result["reference_seconds"] = {"before": round(ref_before, 2), "after": round(ref_after, 2)}
        result["train_time_ratio"] = round(t_train / ref, 1)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0 if parity.get("passed", False) else 7


def _mean_spread(values: list[float]) -> dict:
    return {
        "mean": round(statistics.fmean(values), 4),
        "spread": round(max(values) - min(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


def multi_seed(args) -> int:
    """Run the pipeline once per seed, each in its own process; print per-seed figures, mean, spread."""
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    out_dir = Path(tempfile.mkdtemp(prefix="detops-seeds-"))
    procs: dict[int, tuple[subprocess.Popen, Path]] = {}
    pending = list(seeds)
    t0 = time.perf_counter()
    while pending or procs:
        while pending and len(procs) < max(1, args.parallel):
            seed = pending.pop(0)
            out = out_dir / f"seed{seed}.json"
            cmd = [sys.executable, __file__, "--config", args.config, "--no-reference", "--out", str(out),
                   "--set", f"seed={seed}", *sum((["--set", s] for s in args.sets), [])]
            if args.datastore:
                cmd += ["--datastore", args.datastore]
            if args.from_scratch:
                cmd.append("--from-scratch")
            log = open(out_dir / f"seed{seed}.log", "w")
            procs[seed] = (subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log), out)
            print(f"seed {seed}: started (log {out_dir / f'seed{seed}.log'})", file=sys.stderr)
        for seed, (proc, _out) in list(procs.items()):
            if proc.poll() is not None:
                print(f"seed {seed}: exit {proc.returncode}", file=sys.stderr)
                del procs[seed]
        time.sleep(5)
    runs = {s: json.loads((out_dir / f"seed{s}.json").read_text()) for s in seeds if (out_dir / f"seed{s}.json").exists()}
    if not runs:
        print(json.dumps({"error": "no run finished", "logs": str(out_dir)}))
        return 1
    summary = summarize(runs, args)
    summary["benchmark_wall_seconds"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(summary, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0 if len(runs) == len(seeds) and all(v["parity_passed"] for v in summary["per_seed"].values()) else 1


def summarize(runs: dict[int, dict], args) -> dict:
    """Per-seed figures and mean / spread over the seeds, from single-run results (``--out`` JSON)."""
    vals = list(runs.values())

    def col(f):
        return [f(r) for r in vals]

    summary = {
        "seeds": list(runs),
        "parallel": getattr(args, "parallel", None),
        # The settings every seed shares: each run's own ``seed=N`` is in ``per_seed``'s keys.
        "overrides": [o for o in vals[0].get("overrides", []) if not o.startswith("seed=")],
        "per_seed": {
            s: {
                "test_AP50": r["test_AP50"], "test_AP": r["test_AP"], "per_class_AP50": r["test_per_class_AP50"],
                "float_delta_AP50": r["tflite_parity"].get("float", {}).get("delta_AP50"),
                "int8_delta_AP50": r["tflite_parity"].get("int8", {}).get("delta_AP50"),
                "parity_passed": all(v.get("passed") for v in r["tflite_parity"].values()),
                "train_steps_per_s": r["train_steps_per_s"], "wall_seconds": r["seconds"]["total"],
                "load_average_1m": r.get("load_average_1m"), "run": r["run"],
            }
            for s, r in runs.items()
        },
        "test_AP50": _mean_spread(col(lambda r: r["test_AP50"])),
        "test_AP": _mean_spread(col(lambda r: r["test_AP"])),
        "float_delta_AP50": _mean_spread(col(lambda r: r["tflite_parity"]["float"]["delta_AP50"])),
        "int8_delta_AP50": _mean_spread(col(lambda r: r["tflite_parity"].get("int8", {}).get("delta_AP50", 0.0))),
        "train_steps_per_s": _mean_spread(col(lambda r: r["train_steps_per_s"])),
        "run_wall_seconds": _mean_spread(col(lambda r: r["seconds"]["total"])),
        "steps": vals[0]["steps"], "image_size": vals[0]["image_size"], "batch_size": vals[0]["batch_size"],
    }
    return summary


if __name__ == "__main__":
    raise SystemExit(main())
