"""Choosing and loading the model runtime of the scoring service: SavedModel or TFLite.

Runtimes (setting ``DETOPS_RUNTIME``; the deployment spec's environment chooses it):

- ``savedmodel`` (default): ``export/saved_model`` through TensorFlow (:class:`~deployment.serving.model.Detector`),
  batched calls of ``serving_default``;
- ``tflite-float`` / ``tflite-int8``: ``export/model.tflite`` / ``export/model_int8.tflite`` through the
  TFLite interpreter with XNNPACK (:class:`~deployment.serving.tflite.TFLiteDetector`), one image per
  ``invoke``, one interpreter per model worker.

A TFLite runtime is served only when the run folder's ``export/parity.json`` says that variant passed
its parity check against the SavedModel (docs/contracts.md); a missing file or a failed verdict is a
:class:`~training.errors.ConfigError` at startup, never a silent fallback.

Threads: :func:`thread_plan` sizes model workers and per-worker threads from the cores the process
may use (:func:`training.cpus.available_cpus`: CPU affinity and the cgroup quota, as a container sees them).
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from training import storage
from training.cpus import available_cpus
from training.errors import ConfigError, NotFoundError

if TYPE_CHECKING:
    from deployment.serving.model import Detection, ImageDecodeError
    from deployment.serving.settings import ServingSettings

log = logging.getLogger("detops.serving")

Runtime = Literal["savedmodel", "tflite-float", "tflite-int8"]
RUNTIMES: tuple[str, ...] = ("savedmodel", "tflite-float", "tflite-int8")
TFLITE_FILES = {"tflite-float": "model.tflite", "tflite-int8": "model_int8.tflite"}
PARITY_KEYS = {"tflite-float": "float", "tflite-int8": "int8"}


class ModelRunner(Protocol):
    """What the service needs from a loaded model (SavedModel or TFLite)."""

    name: str
    version: str
    runtime: str
    ready: bool

    def warmup(self) -> None:
        """Run one small image (traces, allocates); sets ``ready``."""

    def predict(self, images: list[bytes]) -> list[list[Detection] | ImageDecodeError]:
        """Detections per encoded image, in order; an undecodable image gets an ImageDecodeError in its slot."""
        ...

    def close(self) -> None:
        """Release the runtime's own threads (called once at shutdown, after the last ``predict``)."""


@dataclass(frozen=True)
class ThreadPlan:
    """How the cores are shared: ``workers`` model calls in flight, each with ``intra_op`` threads;
    ``inter_op`` TensorFlow ops run side by side (SavedModel runtime only)."""

    cpus: int
    workers: int
    intra_op: int
    inter_op: int


def thread_plan(settings: ServingSettings) -> ThreadPlan:
    """Workers and threads from the settings; each left unset (None/0) is derived from the cores.

    SavedModel: one batch in flight per two cores (a batch already uses every intra-op thread; a second
    call in flight overlaps one call's decode and NMS with the other's convolutions), intra-op threads =
    cores, inter-op threads = 2. TFLite: one single-thread interpreter per core, the images of a batch
    spread over them (:class:`~deployment.serving.tflite.TFLiteDetector`); on 2 cores that scores 1.8x
    the images/s of one interpreter, where a second XNNPACK thread in one interpreter bought nothing.
    """
    cpus = available_cpus()
    if settings.runtime == "savedmodel":
        workers = settings.model_workers or max(1, cpus // 2)
        intra = settings.intra_op_threads or cpus
        inter = settings.inter_op_threads or 2
    else:
        workers = settings.model_workers or cpus
        intra = settings.intra_op_threads or max(1, cpus // workers)
        inter = settings.inter_op_threads or 1
    return ThreadPlan(cpus, workers, intra, inter)


def configure_tensorflow_threads(plan: ThreadPlan) -> bool:
    """Set TensorFlow's intra/inter-op pools; False (and a log line) when TensorFlow already started."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(plan.intra_op)
        tf.config.threading.set_inter_op_parallelism_threads(plan.inter_op)
    except RuntimeError:  # the runtime is initialized (tests, an embedding process): keep its pools
        log.info("TensorFlow already initialized; thread pools left as they are")
        return False
    return True


def export_file(model_dir: str, filename: str) -> str | None:
    """URL of ``filename`` in the export folder of ``model_dir`` (the export/ folder or its saved_model/)."""
    url = model_dir.rstrip("/").removeprefix("file://")
    for folder in (url, posixpath.dirname(url)):
        cand = storage.join(folder, filename)
        if storage.exists(cand):
            return cand
    return None


def _local_copy(url: str) -> str:
    """A local path of ``url`` (copied into ``<DETOPS_HOME>/models/<sha>/`` when remote, and checked
    against the model folder's manifest on every load: an edited cached file is fetched again)."""
    if storage.is_local(url):
        return url
    from deployment.registry.artifact import expected_under, verified_local_copy
    from training.home import detops_home

    parent, name = url.rstrip("/").rsplit("/", 1)
    files = expected_under(parent)
    expected = {name: files[name]} if files and name in files else None
    folder = detops_home() / "models" / hashlib.sha256(url.encode()).hexdigest()[:16]
    verified_local_copy(url, str(folder), _fetch_file, expected)
    return str(folder / name)


def _fetch_file(url: str, local: str) -> None:
    """Copy the object ``url`` into the new folder ``local`` (through ``<local>.partial``)."""
    import shutil

    tmp = local + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    with open(os.path.join(tmp, url.rstrip("/").rsplit("/", 1)[1]), "wb") as f:
        f.write(storage.read_bytes(url))
    os.replace(tmp, local)


def check_parity(model_dir: str, runtime: str) -> dict[str, Any]:
    """The parity verdict of ``runtime``'s TFLite model from the run's ``export/parity.json``.

    Returns that variant's entry (``passed``, ``delta_AP``, ``delta_AP50``...). Raises
    :class:`ConfigError` when the file is missing or unreadable, the variant is absent, or its
    ``passed`` is not true: a model whose TFLite parity failed cannot be served as TFLite.
    """
    path = export_file(model_dir, "parity.json")
    if path is None:
        raise ConfigError(
            f"runtime {runtime!r}: no export/parity.json next to {model_dir!r}; a TFLite model is served only "
            "after its parity check passed (re-run the export, or use DETOPS_RUNTIME=savedmodel)"
        )
    import json

    try:
        parity = json.loads(storage.read_bytes(path))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: unreadable parity verdict ({e})") from None
    key = PARITY_KEYS[runtime]
    entry = parity.get(key) if isinstance(parity, dict) else None
    if not isinstance(entry, dict):
        raise ConfigError(f"{path}: no {key!r} verdict; runtime {runtime!r} cannot be served")
    if entry.get("passed") is not True:
        raise ConfigError(
            f"{path}: TFLite {key} parity failed (delta AP {entry.get('delta_AP')}, delta AP50 "
            f"{entry.get('delta_AP50')}); runtime {runtime!r} refused, serve the SavedModel instead"
        )
    return entry


def load_model(settings: ServingSettings, plan: ThreadPlan | None = None) -> ModelRunner:
    """Load the model of ``settings.model_dir`` in ``settings.runtime`` (the one place a model is loaded).

    SavedModel: :class:`~deployment.serving.model.Detector` (which verifies the artifact digest).
    TFLite: the artifact digest (:func:`deployment.registry.artifact.verify_model_dir`) and the
    parity verdict (:func:`check_parity`) are checked first, then :class:`~deployment.serving.tflite.TFLiteDetector` with one
    interpreter per model worker. Raises :class:`ConfigError` (unknown runtime, failed parity) or
    :class:`NotFoundError` (no model file).
    """
    from deployment.serving.model import model_root

    plan = plan or thread_plan(settings)
    runtime = settings.runtime
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}; known: {', '.join(RUNTIMES)}")
    model_dir = model_root(settings.model_dir)  # Azure ML: the registered export/ nested in AZUREML_MODEL_DIR
    if runtime == "savedmodel":
        configure_tensorflow_threads(plan)
        from deployment.serving.model import Detector

        return Detector(model_dir, settings.model_name, settings.model_version)
    from deployment.registry.artifact import verify_model_dir

    verify_model_dir(model_dir)  # files changed since registration: refuse, as for the SavedModel
    check_parity(model_dir, runtime)
    model_url = export_file(model_dir, TFLITE_FILES[runtime])
    if model_url is None:
        raise NotFoundError(f"runtime {runtime!r}: no {TFLITE_FILES[runtime]} in {model_dir!r}")
    labels_url = export_file(model_dir, "label_map.pbtxt")
    if labels_url is None:
        raise NotFoundError(f"runtime {runtime!r}: no label_map.pbtxt next to {model_url!r}")
    # TF only decodes and resizes here, one op at a time per image: more TF threads spin beside the
    # interpreters' (measured: 0.78x instead of 0.9x the in-process throughput at concurrency 8).
    configure_tensorflow_threads(ThreadPlan(plan.cpus, plan.workers, 1, 1))
    from deployment.serving.tflite import TFLiteDetector
    from training.annotations.writers import read_label_map_items

    return TFLiteDetector(
        _local_copy(model_url),
        read_label_map_items(storage.read_bytes(labels_url).decode("utf-8")),
        name=settings.model_name,
        version=settings.model_version,
        runtime=runtime,
        interpreters=plan.workers,
        threads=plan.intra_op,
    )
