"""benchmarks/serving_latency.py: the aims computed from the measured figures, and the missed ones listed."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("serving_latency")


def _result(c8_images_per_s: float) -> dict:
    """Made-up figures for one runtime: best in-process 40 images/s at batch 8 (gain 2.0 over batch 1)."""
    ips = {1: 20.0, 4: 35.0, 8: 40.0, 16: 38.0}
    return {
        "in_process": {"savedmodel": {f"batch{b}": {"images_per_s": v, "p50_ms": 50.0, "p99_ms": 80.0} for b, v in ips.items()}},
        "service": {"savedmodel": {"c1": {"images_per_s": 18.0, "p50_ms": 54.0, "p99_ms": 90.0},
                                   "c8": {"images_per_s": c8_images_per_s}}},
        "ratios": {}, "aims": {},
    }


def test_all_aims_met_lists_nothing(bench):
    result = _result(c8_images_per_s=38.0)  # 0.95x the best in-process, 2.1x c1; c1 p50 1.08x
    bench._ratios(result, ["savedmodel"])
    assert result["ratios"]["savedmodel"]["best_batch_size"] == 8
    assert bench.missed_aims(result) == []


def test_a_slow_service_misses_its_throughput_aims(bench):
    result = _result(c8_images_per_s=24.0)  # 0.6x the best in-process, 1.33x c1 where the batch gain is 2.0
    bench._ratios(result, ["savedmodel"])
    assert bench.missed_aims(result) == [
        "savedmodel: c8_at_least_0.90x_best_in_process",
        "savedmodel: c8_at_least_1.5x_c1_where_batch_gain_1.6x",
    ]
