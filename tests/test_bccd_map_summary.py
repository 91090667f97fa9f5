"""benchmarks/bccd_map.py's multi-seed summary: mean and spread (max - min) over per-seed results."""

from __future__ import annotations

from argparse import Namespace

import pytest


@pytest.fixture(scope="module")
def bccd_map(load_benchmark):
    return load_benchmark("bccd_map")


def _run(seed: int, ap50: float, ap: float, float_delta: float, int8_delta: float, passed: bool = True) -> dict:
    return {
        "seed": seed,
        "overrides": [f"seed={seed}", "train.learning_rate=0.04"],
        "run": f"file:///store/run-{seed}",
        "steps": 480, "image_size": 320, "batch_size": 8,
        "test_AP50": ap50, "test_AP": ap,
        "test_per_class_AP50": {"RBC": 0.8, "WBC": 0.9, "Platelets": 0.6},
        "tflite_parity": {
            "float": {"delta_AP50": float_delta, "passed": True},
            "int8": {"delta_AP50": int8_delta, "passed": passed},
        },
        "train_steps_per_s": 0.4, "seconds": {"total": 1800.0 + seed},
    }


def test_mean_and_spread_over_seeds(bccd_map):
    runs = {1: _run(1, 0.70, 0.35, 0.001, -0.01), 2: _run(2, 0.80, 0.40, -0.002, 0.02), 3: _run(3, 0.75, 0.45, 0.0, 0.0)}
    s = bccd_map.summarize(runs, Namespace(parallel=1))
    assert s["test_AP50"] == {"mean": 0.75, "spread": 0.1, "min": 0.7, "max": 0.8}
    assert s["test_AP"] == {"mean": 0.4, "spread": 0.1, "min": 0.35, "max": 0.45}
    assert s["int8_delta_AP50"]["spread"] == pytest.approx(0.03)
    assert s["run_wall_seconds"]["mean"] == 1802.0
    assert s["per_seed"][2]["parity_passed"] is True


def test_shared_overrides_leave_out_each_runs_seed(bccd_map):
    s = bccd_map.summarize({1: _run(1, 0.7, 0.3, 0, 0), 2: _run(2, 0.7, 0.3, 0, 0)}, Namespace(parallel=1))
    assert s["overrides"] == ["train.learning_rate=0.04"]
    assert s["seeds"] == [1, 2]


def test_a_failed_parity_is_reported_per_seed(bccd_map):
    s = bccd_map.summarize({1: _run(1, 0.7, 0.3, 0, -0.05, passed=False)}, Namespace(parallel=1))
    assert s["per_seed"][1]["parity_passed"] is False
