"""The scoring service at 4x its capacity on loopback: only 503s beyond it, bounded memory, quick recovery.

What it does, in one run (issue 33):

1. starts ``python -m deployment.serving`` (default settings: ``DETOPS_MAX_CONCURRENT_REQUESTS=32``,
   ``DETOPS_MAX_QUEUED_IMAGES=64``) on 127.0.0.1 with the tests' fake SavedModel (``--fake``, the
   default) or a real export (``--model-dir``);
2. **capacity**, the reference: ``POST /invocations`` of raw BCCD JPEGs from 8 concurrent aiohttp
   clients (closed loop, as ``serving_latency.py``'s c8): images/s, p50/p99, and the service's RSS;
3. **overload**: requests arriving open-loop at ``--factor`` (4) times that capacity for ``--seconds``
   (60), each sent at its scheduled time on a connection of its own if none is idle (no client pool to
   hold arrivals back) whatever the earlier ones became: status counts, whether every
   503 carried ``Retry-After``, client-side failures (connection errors, timeouts), latencies of the 200s
   and the 503s, goodput (200s per second over capacity), and the service's RSS sampled every 0.25 s
   from ``/proc/<pid>/status``;
4. **recovery**: from the last scheduled arrival, single requests one after another on a connection of
   their own until one is answered 200; then 5 more, which must all be 200.

Aims (the result's ``aims``; ``aims_missed`` lists those not met and the exit code is 1 when any is):

- ``no_5xx_but_503``: no response >= 500 other than 503, and no client-side failure;
- ``every_503_has_retry_after``;
- ``memory_within_bound``: the service's peak RSS during the overload at most ``--memory-growth-mib``
  (256) MiB above its RSS at the end of the capacity phase. The bound is the app's own: at most 32
  requests admitted, each with a body of at most 16 MiB (here 25-160 KB JPEGs), at most 64 images
  queued and 100 MiB of decoded pixels per request;
- ``recovers_within_5s``: the first 200 after the load stopped came within 5 s, and the 5 after it too.

Usage::

    python benchmarks/serving_overload.py                      # the fake SavedModel (work=4), 60 s at 4x
    python benchmarks/serving_overload.py --model-dir <run>/export --runtime tflite-float
    options: --seconds 60 --factor 4 --capacity-requests 160 --port 18490 --out result.json

Images: BCCD test images from ``$DETOPS_DATASETS/bccd`` (else ../shared/datasets).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving_latency import _http_load, _percentile, _summary, load_images, start_service  # noqa: E402

RECOVERY_AIM_S = 5.0
AFTER_RECOVERY = 5  # requests after the first 200 that must all be 200


def rss_mib(pid: int) -> float:
    """Resident set size of process ``pid`` in MiB (``VmRSS`` of ``/proc/<pid>/status``; Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for process {pid}")


async def _sample_rss(pid: int, samples: list[float], stop: asyncio.Event, every_s: float = 0.25) -> None:
    while not stop.is_set():
        samples.append(rss_mib(pid))
        try:
            await asyncio.wait_for(stop.wait(), every_s)
        except TimeoutError:
            pass


async def _one(client, headers: dict[str, str], data: bytes, out: list[tuple]) -> None:
    """One request; appends ``(status or "failed: <error>", seconds, has Retry-After, perf_counter at
    the end)`` to ``out``."""
    t0 = time.perf_counter()
    try:
        async with client.post("/invocations", data=data, headers=headers) as r:
            await r.read()
            t1 = time.perf_counter()
            out.append((r.status, t1 - t0, "Retry-After" in r.headers, t1))
    except Exception as e:  # noqa: BLE001 - a client-side failure is a measured outcome, not a crash
        t1 = time.perf_counter()
        out.append((f"failed: {type(e).__name__}", t1 - t0, False, t1))


async def overload(url: str, key: str, images: list[bytes], rate: float, seconds: float, pid: int) -> dict:
    """Open-loop arrivals at ``rate`` requests/s for ``seconds``, then the recovery probe.

    Returns ``{"responses": [(status, s, retry_after, end)], "rss_mib": [...], "sent", "stopped" (the
    perf_counter of the last arrival), "recovery": {...}}``.
    """
    import aiohttp

    headers = {"Content-Type": "image/jpeg", "X-API-Key": key}
    responses: list[tuple] = []
    rss: list[float] = []
    stop_sampling = asyncio.Event()
    # No connection limit: a pool would hold arrivals back in the client (a closed loop in disguise).
    timeout = aiohttp.ClientTimeout(total=300)
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(url, connector=conn, timeout=timeout) as client:
        sampler = asyncio.create_task(_sample_rss(pid, rss, stop_sampling))
        loop = asyncio.get_running_loop()
        tasks, n, t0 = [], 0, loop.time()
        while n / rate < seconds:
            delay = t0 + n / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_one(client, headers, images[n % len(images)], responses)))
            n += 1
        stopped, stopped_clock = loop.time(), time.perf_counter()
        async with aiohttp.ClientSession(url, timeout=timeout) as probe:  # its own connection
            recovery = await _recover(probe, headers, images[0], stopped)
        await asyncio.gather(*tasks)
        stop_sampling.set()
        await sampler
    return {"responses": responses, "rss_mib": rss, "sent": n, "stopped": stopped_clock, "recovery": recovery}


async def _recover(client, headers: dict[str, str], data: bytes, stopped: float) -> dict:
    """Single requests from ``stopped`` until one is 200, then :data:`AFTER_RECOVERY` more."""
    loop = asyncio.get_running_loop()
    tries: list[tuple] = []
    while True:
        await _one(client, headers, data, tries)
        if tries[-1][0] == 200:
            break
        await asyncio.sleep(0.05)
    first_200_s = loop.time() - stopped
    after: list[tuple] = []
    for _ in range(AFTER_RECOVERY):
        await _one(client, headers, data, after)
    return {"first_200_s": round(first_200_s, 3), "tries": len(tries), "after": [r[0] for r in after]}


def summarize(capacity: dict, run: dict, rss_at_capacity: float, seconds: float, factor: float) -> dict:
    """The overload figures from the raw ``run`` of :func:`overload` (``capacity`` is the reference)."""
    statuses = Counter(str(r[0]) for r in run["responses"])
    ok = [r[1] for r in run["responses"] if r[0] == 200]
    busy = [r[1] for r in run["responses"] if r[0] == 503]
    ok_in_time = sum(1 for r in run["responses"] if r[0] == 200 and r[3] <= run["stopped"])
    peak = max(run["rss_mib"]) if run["rss_mib"] else float("nan")
    return {
        "arrival_rate_per_s": round(factor * capacity["images_per_s"], 2),
        "sent": run["sent"],
        "statuses": dict(sorted(statuses.items())),
        "share_503": round(len(busy) / max(1, run["sent"]), 3),
        "503_without_retry_after": sum(1 for r in run["responses"] if r[0] == 503 and not r[2]),
        "other_5xx": sum(n for s, n in statuses.items() if s.isdigit() and int(s) >= 500 and s != "503"),
        "client_failures": sum(n for s, n in statuses.items() if s.startswith("failed")),
        # 200s answered while the load lasted (those answered after it count in "statuses" only)
        "goodput_images_per_s": round(ok_in_time / seconds, 2),
        "goodput_over_capacity": round(ok_in_time / seconds / capacity["images_per_s"], 3),
        "p50_ms_200": round(_percentile(ok, 0.5) * 1000, 1),
        "p99_ms_200": round(_percentile(ok, 0.99) * 1000, 1),
        "p50_ms_503": round(_percentile(busy, 0.5) * 1000, 1),
        "p99_ms_503": round(_percentile(busy, 0.99) * 1000, 1),
        "rss_mib_at_capacity": round(rss_at_capacity, 1),
        "rss_mib_peak": round(peak, 1),
        "rss_mib_growth": round(peak - rss_at_capacity, 1),
        "rss_mib_last": round(run["rss_mib"][-1], 1) if run["rss_mib"] else float("nan"),
        "recovery": run["recovery"],
    }


def aims(over: dict, memory_growth_mib: float) -> dict[str, bool]:
    """The verdicts of the module docstring's aims from the :func:`summarize` figures."""
    rec = over["recovery"]
    return {
        "no_5xx_but_503": over["other_5xx"] == 0 and over["client_failures"] == 0,
        "every_503_has_retry_after": over["503_without_retry_after"] == 0,
        "memory_within_bound": over["rss_mib_growth"] <= memory_growth_mib,
        "recovers_within_5s": rec["first_200_s"] <= RECOVERY_AIM_S and rec["after"] == [200] * AFTER_RECOVERY,
    }


def missed_aims(result: dict) -> list[str]:
    """Each aim of ``result["aims"]`` not met."""
    return [aim for aim, met in result["aims"].items() if not met]


def _measure(args, model_dir: str, images: list[bytes], key: str) -> tuple[dict, dict, float]:
    proc = start_service(model_dir, args.port, key, args.max_batch_size, args.runtime)
    try:
        url = f"http://127.0.0.1:{args.port}"
        lat, wall = asyncio.run(_http_load(url, key, images, args.capacity_requests, 8))
        capacity = _summary(lat, wall)
        rss_at_capacity = rss_mib(proc.pid)
        rate = args.factor * capacity["images_per_s"]
        run = asyncio.run(overload(url, key, images, rate, args.seconds, proc.pid))
    finally:
        proc.terminate()
        proc.wait(60)
    return capacity, run, rss_at_capacity


def main(argv: list[str] | None = None) -> dict:
    """Run the load test (see the module docstring); print the result JSON and return it."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-dir", help="a run's export/ folder (default: the tests' fake SavedModel)")
    p.add_argument("--fake-work", type=int, default=4, help="convolutions per image in the fake model")
    p.add_argument("--runtime", default="savedmodel")
    p.add_argument("--seconds", type=float, default=60.0, help="length of the overload")
    p.add_argument("--factor", type=float, default=4.0, help="arrival rate over the measured capacity")
    p.add_argument("--capacity-requests", type=int, default=160, help="requests of the capacity measurement")
    p.add_argument("--images", type=int, default=8, help="distinct BCCD test images")
    p.add_argument("--max-batch-size", type=int, default=8)
    p.add_argument("--memory-growth-mib", type=float, default=256.0, help="the memory aim's bound")
    p.add_argument("--port", type=int, default=18490)
    p.add_argument("--out", help="write the result JSON here too")
    args = p.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.model_dir:
        model_dir = model = args.model_dir
    else:
        from deployment.testing import make_fake_saved_model

        model_dir = make_fake_saved_model(Path(tempfile.mkdtemp()) / "fake model", work=args.fake_work)
        model = f"fake SavedModel (deployment.testing, work={args.fake_work})"
    images = load_images(args.images)
    load_start = os.getloadavg()[0]
    capacity, run, rss_at_capacity = _measure(args, model_dir, images, os.urandom(18).hex())
    over = summarize(capacity, run, rss_at_capacity, args.seconds, args.factor)
    result = {
        "model": model,
        "runtime": args.runtime,
        "seconds": args.seconds,
        "factor": args.factor,
        "memory_growth_bound_mib": args.memory_growth_mib,
        "load_average_1m_at_start": round(load_start, 2),
        "capacity": capacity,
        "overload": over,
        "aims": aims(over, args.memory_growth_mib),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
    }
    result = {"aims_missed": missed_aims(result), **result}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return result


if __name__ == "__main__":
    sys.exit(1 if main()["aims_missed"] else 0)
