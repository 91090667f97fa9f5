"""benchmarks/serving_overload.py: the figures and aims computed from made-up responses, the missed ones listed."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("serving_overload")


CAPACITY = {"images_per_s": 50.0}


STOPPED = 1000.0  # perf_counter of the last arrival


def _run(responses, rss=(800.0, 820.0, 810.0), first_200_s=0.3, after=(200,) * 5) -> dict:
    return {"responses": list(responses), "rss_mib": list(rss), "sent": len(responses), "stopped": STOPPED,
            "recovery": {"first_200_s": first_200_s, "tries": 2, "after": list(after)}}


def _healthy():
    """10 s at 4x: 450 answered 200 in 0.5 s (400 while the load lasted), 1550 refused with 503 +
    Retry-After in 0.02 s."""
    return ([(200, 0.5, False, STOPPED - 1)] * 400 + [(200, 0.5, False, STOPPED + 1)] * 50
            + [(503, 0.02, True, STOPPED - 1)] * 1550)


def test_a_service_that_sheds_load_meets_every_aim(bench):
    over = bench.summarize(CAPACITY, _run(_healthy()), 790.0, seconds=10, factor=4)
    assert over["statuses"] == {"200": 450, "503": 1550}
    assert (over["goodput_images_per_s"], over["goodput_over_capacity"]) == (40.0, 0.8)
    assert (over["rss_mib_peak"], over["rss_mib_growth"], over["share_503"]) == (820.0, 30.0, 0.775)
    assert over["arrival_rate_per_s"] == 200.0 and over["p50_ms_503"] == 20.0
    result = {"aims": bench.aims(over, memory_growth_mib=256)}
    assert bench.missed_aims(result) == []


def test_each_failure_misses_its_aim(bench):
    responses = _healthy() + [(500, 0.1, False, STOPPED), ("failed: ClientOSError", 0.1, False, STOPPED),
                              (503, 0.01, False, STOPPED)]
    run = _run(responses, rss=(800.0, 1200.0), first_200_s=7.5)
    over = bench.summarize(CAPACITY, run, 790.0, seconds=10, factor=4)
    assert (over["other_5xx"], over["client_failures"], over["503_without_retry_after"]) == (1, 1, 1)
    result = {"aims": bench.aims(over, memory_growth_mib=256)}
    assert bench.missed_aims(result) == [
        "no_5xx_but_503", "every_503_has_retry_after", "memory_within_bound", "recovers_within_5s"
    ]


def test_recovery_needs_the_requests_after_the_first_200_to_succeed(bench):
    over = bench.summarize(CAPACITY, _run(_healthy(), after=(200, 503, 200, 200, 200)), 790.0, seconds=10, factor=4)
    assert bench.missed_aims({"aims": bench.aims(over, memory_growth_mib=256)}) == ["recovers_within_5s"]
