"""Serving throughput and latency per runtime on loopback, as ratios against in-process calls.

What it measures, all in one run on the same images, for each runtime (``savedmodel``,
``tflite-float``, ``tflite-int8``; a TFLite runtime whose parity failed is skipped and says so):

- in-process: the runtime's own model class (:func:`deployment.serving.runtime.load_model` with the
  service's thread plan: SavedModel all cores for one call, TFLite one interpreter per core), in a
  child process per runtime (:class:`InProcessReference`), on batches of 1, 4, 8 and 16 images:
  images/s per batch size, the best of them (the
  compute limit of this machine) and the batch gain (best images/s over batch-1 images/s); p50/p99 of
  the single-image call;
- service: ``python -m deployment.serving`` with ``DETOPS_RUNTIME=<runtime>`` (uvicorn on 127.0.0.1,
  micro-batching on, workers and threads from the cores) receiving ``POST /invocations`` with the raw
  JPEG from 1 and from 8 concurrent aiohttp clients: images/s, p50/p99, and where the time went (the
  ``split``: client mean, the service's own request and model-call means from its ``/metrics``, and
  images per model call);
- ratios: service c8 over the best in-process batch throughput, service c8 over service c1, service
  c1 p50 over the in-process single call, and each TFLite runtime's c8 over the SavedModel's.

The measurements alternate in ``--rounds`` rounds (every runtime, in-process and service, in each
round), so that a change in machine load (a shared machine) hits both sides of a ratio alike; the
single in-process call and the c1 request alternate image by image (:func:`_single_pairs`).

Aims (issue 14, docs/serving.md): service c8 >= 0.90x the best in-process batch throughput; service
c8 >= 1.5x service c1 where the batch gain is at least 1.6x; service c1 p50 within 1.10x of the
in-process single call. The result JSON leads with ``aims_missed`` (``runtime: aim`` for each aim not
met); the exit code is 1 when any is missed.

Usage::

    python benchmarks/serving_latency.py --model-dir <run>/export        # a real export
    python benchmarks/serving_latency.py --fake                          # the test's fake SavedModel
    options: --runtimes savedmodel,tflite-float,tflite-int8 --requests 288 --rounds 6 --images 8
             --max-batch-size 8 --model-workers N --port 18480 --out result.json

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
        "images_per_s": round(len(latencies_s) / wall_s, 2),
    }


def load_images(n: int) -> list[bytes]:
    """``n`` BCCD test images (JPEG bytes), cycling if the split is smaller."""
    from training.settings import CommonSettings

    root = CommonSettings.load().datasets_root() / "bccd" / "BCCD"
    ids = (root / "ImageSets" / "Main" / "test.txt").read_text().split()
    return [(root / "JPEGImages" / f"{ids[i % len(ids)]}.jpg").read_bytes() for i in range(n)]


BATCH_SIZES = (1, 4, 8, 16)


def load_runner(model_dir: str, runtime: str):
    """The runtime's model class loaded in this process with the service's thread plan (the reference).

    SavedModel: one call at a time with every core as intra-op threads; TFLite: one single-thread
    interpreter per core, a batch spread over them (so batches of 4+ use every core), TensorFlow's
    pools (decoding and resizing only) at one thread each.
    """
    from deployment.serving.runtime import load_model
    from deployment.serving.settings import load_settings

    settings = load_settings(api_keys="x" * 16, model_dir=model_dir, runtime=runtime)
    runner = load_model(settings)
    runner.warmup()
    return runner


def _reference_main(conn, model_dir: str, runtime: str) -> None:
    """Child process of :class:`InProcessReference`: load the model, then time the batches it is sent.

    The spawned child inherits ``main()``'s environment (``TF_CPP_MIN_LOG_LEVEL`` included).
    """
    runner = load_runner(model_dir, runtime)
    conn.send("ready")
    while (batches := conn.recv()) is not None:
        lat = []
        for batch in batches:
            t0 = time.perf_counter()
            runner.predict(batch)
            lat.append(time.perf_counter() - t0)
        conn.send(lat)
    runner.close()


class InProcessReference:
    """The in-process reference of one runtime, in a child process of its own.

    TensorFlow's thread pools are set once per process, so the runtimes' references cannot share one:
    the first runtime loaded (the SavedModel: every core) would set them for the TFLite runtimes too,
    whose service runs its decoding and resizing on one thread (``load_model``'s plan). Each child
    loads its runtime as the service does (:func:`load_runner`); call latencies are measured in the
    child, so the pipe's cost is not in them.
    """

    def __init__(self, model_dir: str, runtime: str) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_reference_main, args=(child, model_dir, runtime), daemon=True)
        self._proc.start()
        if not self._conn.poll(600) or self._conn.recv() != "ready":
            raise SystemExit(f"{runtime} in-process reference did not load")

    def timed(self, batches: list[list[bytes]]) -> list[float]:
        """Seconds of ``predict`` for each batch, called one after another."""
        self._conn.send(batches)
        return self._conn.recv()

    def close(self) -> None:
        """Stop the child."""
        self._conn.send(None)
        self._proc.join(60)


def in_process_batches(
    ref: InProcessReference, images: list[bytes], per_size: int, sizes: tuple[int, ...] = BATCH_SIZES
) -> dict[int, tuple[list[float], float]]:
    """``per_size`` images through the reference's ``predict`` in batches of each size of ``sizes``.

    Returns ``{batch_size: (per-call latencies in s, wall time in s)}``; the wall time is the sum of
    the calls (they run one after another).
    """
    out = {}
    for bs in sizes:
        calls = max(1, per_size // bs)
        lat = ref.timed([[images[(c * bs + j) % len(images)] for j in range(bs)] for c in range(calls)])
        out[bs] = (lat, sum(lat))
    return out


async def _post_image(client, headers: dict[str, str], data: bytes) -> None:
    """One ``POST /invocations`` of a raw JPEG on ``client`` (an ``aiohttp.ClientSession``); raises on 4xx/5xx."""
    async with client.post("/invocations", data=data, headers=headers) as r:
        await r.read()
        r.raise_for_status()


async def _http_load(
    url: str, key: str, images: list[bytes], requests: int, concurrency: int
) -> tuple[list[float], float]:
    """``requests`` POSTs of raw JPEGs to ``url``/invocations from ``concurrency`` clients on keep-alive
    connections; returns (per-request latencies in s, wall time in s).

    The client is aiohttp: it shares the machine's cores with the service, and httpx spent about 5 ms of
    CPU per request here (measured against a raw-socket client on the same service: 81 vs 76 ms p50),
    which is the client's cost, not the service's. aiohttp costs about 2 ms.
    """
    import aiohttp

    lat: list[float] = []
    next_i = iter(range(requests))
    headers = {"Content-Type": "image/jpeg", "X-API-Key": key}
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(url, connector=conn, timeout=aiohttp.ClientTimeout(total=300)) as client:

        def post(i: int):
            return _post_image(client, headers, images[i % len(images)])

        await asyncio.gather(*(post(i) for i in range(concurrency)))  # open the connections, warm up

        async def worker():
            for i in next_i:
                t0 = time.perf_counter()
                await post(i)
                lat.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return lat, wall


async def _single_pairs(
    url: str, key: str, ref: InProcessReference, images: list[bytes], requests: int
) -> tuple[tuple[list[float], float], tuple[list[float], float]]:
    """``requests`` single images, each scored once in process and once by the service (c1), in pairs.

    The two calls of a pair run back to back (their order alternating), so that a change of the
    machine's speed - a shared machine drifts by 8-15% within seconds - hits both sides of the c1
    ratio alike. Returns ``((in-process latencies, wall), (service latencies, wall))`` in s; each
    side's wall time is the sum of its own calls (they run one at a time).
    """
    import aiohttp

    headers = {"Content-Type": "image/jpeg", "X-API-Key": key}
    own: list[float] = []
    svc: list[float] = []
    async with aiohttp.ClientSession(url, timeout=aiohttp.ClientTimeout(total=300)) as client:
        await _post_image(client, headers, images[0])  # open the connection
        for i in range(requests):
            data = images[i % len(images)]
            for side in (0, 1) if i % 2 == 0 else (1, 0):
                t0 = time.perf_counter()
                if side == 0:
                    own += ref.timed([[data]])  # blocks the loop: nothing else is in flight
                else:
                    await _post_image(client, headers, data)
                    svc.append(time.perf_counter() - t0)
    return (own, sum(own)), (svc, sum(svc))


def read_service_metrics(url: str, key: str) -> dict[str, float]:
    """Sums and counts of the service's own timings from ``GET /metrics`` (Prometheus text).

    Keys: ``model_s``/``model_calls`` (``detops_model_latency_seconds``: one model call per batch),
    ``request_s``/``requests`` (``detops_request_latency_seconds`` of ``/invocations``: from the app's
    first middleware to the response sent) and ``images``/``batches`` (``detops_batch_size``).
    """
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", headers={"X-API-Key": key}, timeout=30).text
    out = dict.fromkeys(("model_s", "model_calls", "request_s", "requests", "images", "batches"), 0.0)
    names = {
        "detops_model_latency_seconds": ("model_s", "model_calls"),
        "detops_request_latency_seconds": ("request_s", "requests"),
        "detops_batch_size": ("images", "batches"),
    }
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            base = sample.name.removesuffix("_sum").removesuffix("_count")
            if base not in names or sample.labels.get("route", "/invocations") != "/invocations":
                continue
            key_sum, key_count = names[base]
            if sample.name.endswith("_sum"):
                out[key_sum] += sample.value
            elif sample.name.endswith("_count"):
                out[key_count] += sample.value
    return out


def _split(d: dict[str, float], client_lat: list[float]) -> dict[str, float]:
    """Where a measurement's time went: client mean, the service's request and model-call means (ms),
    and mean images per model call, from the change ``d`` of :func:`read_service_metrics` over it."""

    def per(total: str, count: str, scale: float = 1000.0) -> float:
        return round(scale * d[total] / d[count], 2) if d[count] else float("nan")

    return {
        "client_mean_ms": round(1000 * statistics.fmean(client_lat), 2) if client_lat else float("nan"),
        "service_request_mean_ms": per("request_s", "requests"),
        "model_call_mean_ms": per("model_s", "model_calls"),
        "images_per_model_call": per("images", "batches", 1.0),
    }


def start_service(
    model_dir: str, port: int, key: str, max_batch_size: int, runtime: str = "savedmodel", workers: int | None = None
) -> subprocess.Popen:
    """Start ``python -m deployment.serving`` on 127.0.0.1:``port`` with ``runtime``; wait for ``/readyz``."""
    import httpx

    env = dict(os.environ)
    env.update(
        DETOPS_API_KEY=key,
        DETOPS_MODEL_DIR=model_dir,
        DETOPS_MODEL_NAME="bench",
        DETOPS_MODEL_VERSION="0",
        DETOPS_RUNTIME=runtime,
        DETOPS_MAX_BATCH_SIZE=str(max_batch_size),
        DETOPS_LOG_LEVEL="warning",
        PYTHONPATH=str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
    )
    if workers:
        env["DETOPS_MODEL_WORKERS"] = str(workers)
    proc = subprocess.Popen(
        [sys.executable, "-m", "deployment.serving", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{runtime} service exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise SystemExit(f"{runtime} service not ready after 600 s")


def usable_runtimes(model_dir: str, wanted: list[str]) -> tuple[list[str], dict[str, str]]:
    """The runtimes of ``wanted`` this export can serve, and why each other one is skipped."""
    from deployment.serving.runtime import TFLITE_FILES, check_parity, export_file
    from training.errors import DetopsError

    ok, skipped = [], {}
    for r in wanted:
        if r != "savedmodel":
            try:
                check_parity(model_dir, r)
                if export_file(model_dir, TFLITE_FILES[r]) is None:
                    raise FileNotFoundError(TFLITE_FILES[r])
            except (DetopsError, FileNotFoundError) as e:
                skipped[r] = str(e)
                continue
        ok.append(r)
    return ok, skipped


class _Acc:
    """Latencies and wall time accumulated over rounds."""

    def __init__(self) -> None:
        self.lat: list[float] = []
        self.wall = 0.0
        self.metrics: dict[str, float] = {}

    def add(self, lat: list[float], wall: float) -> None:
        self.lat += lat
        self.wall += wall

    def add_metrics(self, before: dict[str, float], after: dict[str, float]) -> None:
        """Accumulate the change of the service's metrics (:func:`read_service_metrics`) over a measurement."""
        for k in after:
            self.metrics[k] = self.metrics.get(k, 0.0) + after[k] - before[k]

    def summary(self, images_per_call: int = 1) -> dict[str, float]:
        s = _summary(self.lat, self.wall)
        s["images_per_s"] = round(len(self.lat) * images_per_call / self.wall, 2)
        return s


def _ratios(result: dict, runtimes: list[str]) -> None:
    for r in runtimes:
        ip, svc = result["in_process"][r], result["service"][r]
        best_bs = max(BATCH_SIZES, key=lambda b: ip[f"batch{b}"]["images_per_s"])
        best = ip[f"batch{best_bs}"]["images_per_s"]
        gain = best / ip["batch1"]["images_per_s"]
        c8_over_c1 = svc["c8"]["images_per_s"] / svc["c1"]["images_per_s"]
        result["ratios"][r] = {
            "best_batch_size": best_bs,
            "best_in_process_images_per_s": best,
            "in_process_batch_gain": round(gain, 3),
            "service_c8_over_best_in_process": round(svc["c8"]["images_per_s"] / best, 3),
            "service_c8_over_c1": round(c8_over_c1, 3),
            "service_c1_p50_over_in_process_single_call": round(svc["c1"]["p50_ms"] / ip["batch1"]["p50_ms"], 3),
            "service_c1_p99_over_in_process_single_call": round(svc["c1"]["p99_ms"] / ip["batch1"]["p99_ms"], 3),
        }
        rr = result["ratios"][r]
        result["aims"][r] = {
            "c8_at_least_0.90x_best_in_process": rr["service_c8_over_best_in_process"] >= 0.90,
            "c8_at_least_1.5x_c1_where_batch_gain_1.6x": (gain < 1.6) or c8_over_c1 >= 1.5,
            "p50_c1_within_1.10x": rr["service_c1_p50_over_in_process_single_call"] <= 1.10,
        }
    if "savedmodel" in runtimes:
        sm = result["service"]["savedmodel"]["c8"]["images_per_s"]
        for r in runtimes:
            if r != "savedmodel":
                result["ratios"][r]["service_c8_over_savedmodel_c8"] = round(
                    result["service"][r]["c8"]["images_per_s"] / sm, 3
                )


def missed_aims(result: dict) -> list[str]:
    """Each aim not met in ``result["aims"]`` (filled by :func:`_ratios`), as ``"<runtime>: <aim>"``."""
    return [f"{r}: {aim}" for r, aims in result["aims"].items() for aim, met in aims.items() if not met]


def _measure(args, model_dir: str, runtimes: list[str], images: list[bytes], key: str, result: dict) -> None:
    procs: dict = {}
    refs: dict[str, InProcessReference] = {}
    try:
        for i, r in enumerate(runtimes):  # every service up first; idle ones cost no CPU
            procs[r] = start_service(model_dir, args.port + i, key, args.max_batch_size, r, args.model_workers)
        refs.update({r: InProcessReference(model_dir, r) for r in runtimes})
        acc: dict = {r: {k: _Acc() for k in [*(f"batch{b}" for b in BATCH_SIZES), "c1", "c8"]} for r in runtimes}
        per_round = max(2, args.requests // args.rounds)
        for _ in range(args.rounds):  # alternate, so that load drift hits both sides alike
            for i, r in enumerate(runtimes):
                url = f"http://127.0.0.1:{args.port + i}"
                m0 = read_service_metrics(url, key)
                own, svc = asyncio.run(_single_pairs(url, key, refs[r], images, per_round))
                m1 = read_service_metrics(url, key)
                acc[r]["batch1"].add(*own)
                acc[r]["c1"].add(*svc)
                acc[r]["c1"].add_metrics(m0, m1)
                for bs, (lat, wall) in in_process_batches(refs[r], images, per_round, BATCH_SIZES[1:]).items():
                    acc[r][f"batch{bs}"].add(lat, wall)
                lat, wall = asyncio.run(_http_load(url, key, images, per_round, 8))
                m2 = read_service_metrics(url, key)
                acc[r]["c8"].add(lat, wall)
                acc[r]["c8"].add_metrics(m1, m2)
        for r in runtimes:
            result["in_process"][r] = {f"batch{b}": acc[r][f"batch{b}"].summary(b) for b in BATCH_SIZES}
            result["service"][r] = {c: acc[r][c].summary() for c in ("c1", "c8")}
            for c in ("c1", "c8"):
                result["service"][r][c]["split"] = _split(acc[r][c].metrics, acc[r][c].lat)
    finally:
        for ref in refs.values():
            ref.close()
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(60)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark (see the module docstring); print the result JSON and return it.

    The result's first key, ``aims_missed``, lists each aim not met as ``"<runtime>: <aim>"`` (empty
    when all are met); run as a script, the exit code is 1 when it is not empty."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model-dir", help="a run's export/ folder (or its saved_model/)")
    src.add_argument("--fake", action="store_true", help="use deployment.testing's fake SavedModel")
    p.add_argument("--fake-work", type=int, default=4, help="convolutions per image in the fake model")
    p.add_argument("--runtimes", default="savedmodel,tflite-float,tflite-int8", help="comma-separated")
    p.add_argument(
        "--requests", type=int, default=288, help="images per measurement over all rounds (steady state at c8)"
    )
    p.add_argument("--rounds", type=int, default=6, help="alternating rounds (48 images per measurement each)")
    p.add_argument("--images", type=int, default=8, help="distinct BCCD test images")
    p.add_argument("--max-batch-size", type=int, default=8)
    p.add_argument("--model-workers", type=int, default=None, help="batches in flight (default: from the cores)")
    p.add_argument("--port", type=int, default=18480, help="first port; one per runtime")
    p.add_argument("--out", help="write the result JSON here too")
    args = p.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.fake:
        from deployment.testing import make_fake_saved_model

        model_dir = make_fake_saved_model(Path(tempfile.mkdtemp()) / "fake model", work=args.fake_work)
        model = f"fake SavedModel (deployment.testing, work={args.fake_work})"
    else:
        model_dir = model = args.model_dir
    runtimes, skipped = usable_runtimes(model_dir, [r.strip() for r in args.runtimes.split(",") if r.strip()])
    images = load_images(args.images)
    from deployment.serving.runtime import available_cpus

    result: dict = {
        "model": model,
        "runtimes": runtimes,
        "skipped_runtimes": skipped,
        "images_per_measurement": args.requests,
        "rounds": args.rounds,
        "max_batch_size": args.max_batch_size,
        "model_workers": args.model_workers or "auto",
        "images": len(images),
        "cpus_available": available_cpus(),
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
        "in_process": {},
        "service": {},
        "ratios": {},
        "aims": {},
    }
    _measure(args, model_dir, runtimes, images, os.urandom(18).hex(), result)
    _ratios(result, runtimes)
    result["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    result = {"aims_missed": missed_aims(result), **result}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return result


if __name__ == "__main__":
    sys.exit(1 if main()["aims_missed"] else 0)
