"""Serving latency and throughput on loopback, as ratios against the in-process SavedModel call.

What it measures, all in one run on the same images:

- reference: the SavedModel's ``serving_default`` called in this process, one image per call,
  from 1 thread and from 8 threads (p50/p99 latency in ms, throughput in images/s);
- service: ``python -m deployment.serving`` (uvicorn on 127.0.0.1, micro-batching on) receiving
  ``POST /invocations`` with the raw JPEG from 1 and from 8 concurrent clients, a fixed number of
  requests each (bounded load);
- ratios: service / reference for p50, p99 and throughput at each concurrency, and the service's
  throughput at 8 over that at 1 (the gain from request batching).

The reference and the service alternate in ``--rounds`` rounds at each concurrency, so that a change
in machine load (a shared machine) hits both sides of a ratio alike.

Aims (docs/serving.md): p50 at concurrency 1 within 1.10x of the in-process call; throughput at
concurrency 8 at least 1.5x that at concurrency 1.

Usage::

    python benchmarks/serving_latency.py --model-dir <run>/export        # a real export
    python benchmarks/serving_latency.py --fake                          # the test's fake SavedModel
    options: --requests 64 --images 8 --max-batch-size 8 --port 18480 --out result.json

Images: BCCD test images from ``$DETOPS_DATASETS/bccd`` (else ../shared/datasets).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _summary(latencies_s: list[float], wall_s: float) -> dict[str, float]:
    return {
        "requests": len(latencies_s),
        "p50_ms": round(_percentile(latencies_s, 0.50) * 1000, 2),
        "p99_ms": round(_percentile(latencies_s, 0.99) * 1000, 2),
        "mean_ms": round(statistics.fmean(latencies_s) * 1000, 2),
        "throughput_rps": round(len(latencies_s) / wall_s, 2),
    }


def load_images(n: int) -> list[bytes]:
    """``n`` BCCD test images (JPEG bytes), cycling if the split is smaller."""
    from training.settings import CommonSettings

    root = Path(CommonSettings.load().datasets or ROOT.parent / "shared" / "datasets") / "bccd" / "BCCD"
    ids = (root / "ImageSets" / "Main" / "test.txt").read_text().split()
    return [(root / "JPEGImages" / f"{ids[i % len(ids)]}.jpg").read_bytes() for i in range(n)]


def load_reference(model_dir: str):
    """The SavedModel's ``serving_default`` loaded in this process (the reference)."""
    import tensorflow as tf

    from deployment.serving.model import resolve_saved_model

    return tf.saved_model.load(resolve_saved_model(model_dir)).signatures["serving_default"]


def in_process(fn, images: list[bytes], requests: int, concurrency: int) -> tuple[list[float], float]:
    """Call ``fn`` (``serving_default``) on one image per call from ``concurrency`` threads, ``requests`` calls."""
    import tensorflow as tf

    for img in images[:2]:
        fn(encoded_images=tf.constant([img]))  # warm up
    lat: list[float] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def worker():
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t0 = time.perf_counter()
            fn(encoded_images=tf.constant([images[i % len(images)]]))
            dt = time.perf_counter() - t0
            with lock:
                lat.append(dt)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, time.perf_counter() - t0


async def _http_load(
    url: str, key: str, images: list[bytes], requests: int, concurrency: int
) -> tuple[list[float], float]:
    import httpx

    lat: list[float] = []
    next_i = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        headers = {"Content-Type": "image/jpeg", "X-API-Key": key}
        for img in images[:2]:  # warm up connections and the service
            (await client.post("/invocations", content=img, headers=headers)).raise_for_status()

        async def worker():
            for i in next_i:
                t0 = time.perf_counter()
                r = await client.post("/invocations", content=images[i % len(images)], headers=headers)
                dt = time.perf_counter() - t0
                r.raise_for_status()
                lat.append(dt)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return lat, wall


def start_service(model_dir: str, port: int, key: str, max_batch_size: int, workers: int = 1) -> subprocess.Popen:
    """Start ``python -m deployment.serving`` on 127.0.0.1:``port`` and wait for ``/readyz``."""
    import httpx

    env = dict(os.environ)
    env.update(
        DETOPS_API_KEY=key,
        DETOPS_MODEL_DIR=model_dir,
        DETOPS_MODEL_NAME="bench",
        DETOPS_MODEL_VERSION="0",
        DETOPS_MAX_BATCH_SIZE=str(max_batch_size),
        DETOPS_MODEL_WORKERS=str(workers),
        DETOPS_LOG_LEVEL="warning",
        PYTHONPATH=str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "deployment.serving", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"service exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise SystemExit("service not ready after 300 s")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model-dir", help="SavedModel or a run's export/ folder")
    src.add_argument("--fake", action="store_true", help="use deployment.testing's fake SavedModel")
    p.add_argument("--fake-work", type=int, default=4, help="convolutions per image in the fake model")
    p.add_argument("--requests", type=int, default=64, help="requests per measurement")
    p.add_argument("--rounds", type=int, default=4, help="alternating in-process/service rounds per concurrency")
    p.add_argument("--images", type=int, default=8, help="distinct BCCD test images")
    p.add_argument("--max-batch-size", type=int, default=8)
    p.add_argument("--model-workers", type=int, default=1, help="batches in flight in the service")
    p.add_argument("--port", type=int, default=18480)
    p.add_argument("--out", help="write the result JSON here too")
    args = p.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.fake:
        from deployment.testing import make_fake_saved_model

        model_dir = make_fake_saved_model(Path(tempfile.mkdtemp()) / "fake model", work=args.fake_work)
        model = f"fake SavedModel (deployment.testing, work={args.fake_work})"
    else:
        model_dir = args.model_dir
        model = model_dir
    images = load_images(args.images)
    key = os.urandom(18).hex()

    result: dict = {
        "model": model,
        "requests_per_measurement": args.requests,
        "rounds": args.rounds,
        "max_batch_size": args.max_batch_size,
        "model_workers": args.model_workers,
        "images": len(images),
        "cpu_count": os.cpu_count(),
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
        "in_process": {},
        "service": {},
        "ratios": {},
    }
    # The service starts first; then each concurrency is measured in-process and over HTTP back to
    # back, so that both sides of a ratio see the same machine load.
    proc = start_service(model_dir, args.port, key, args.max_batch_size, args.model_workers)
    try:
        fn = load_reference(model_dir)
        per_round = max(1, args.requests // args.rounds)
        for c in (1, 8):
            ref_lat, ref_wall, svc_lat, svc_wall = [], 0.0, [], 0.0
            for _ in range(args.rounds):  # alternate, so that load drift hits both sides alike
                lat, wall = in_process(fn, images, per_round, c)
                ref_lat += lat
                ref_wall += wall
                lat, wall = asyncio.run(_http_load(f"http://127.0.0.1:{args.port}", key, images, per_round, c))
                svc_lat += lat
                svc_wall += wall
            result["in_process"][f"c{c}"] = _summary(ref_lat, ref_wall)
            result["service"][f"c{c}"] = _summary(svc_lat, svc_wall)
    finally:
        proc.terminate()
        proc.wait(60)
    for c in ("c1", "c8"):
        s, r = result["service"][c], result["in_process"][c]
        result["ratios"][c] = {
            "p50": round(s["p50_ms"] / r["p50_ms"], 3),
            "p99": round(s["p99_ms"] / r["p99_ms"], 3),
            "throughput": round(s["throughput_rps"] / r["throughput_rps"], 3),
        }
    svc = result["service"]
    result["ratios"]["service_throughput_c8_over_c1"] = round(
        svc["c8"]["throughput_rps"] / svc["c1"]["throughput_rps"], 3
    )
    result["aims"] = {
        "p50_c1_within_1.10x": result["ratios"]["c1"]["p50"] <= 1.10,
        "throughput_c8_at_least_1.5x_c1": result["ratios"]["service_throughput_c8_over_c1"] >= 1.5,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
