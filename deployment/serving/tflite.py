"""The TFLite runtime of the scoring service: ``export/model.tflite`` or ``model_int8.tflite`` with XNNPACK.

The TFLite model (training/export.py) takes one preprocessed image, float32 ``[1, Hp, Wp, 3]``:
ImageNet mean/std normalized, resized with its aspect ratio kept and zero-padded, exactly as
:meth:`training.inference.DetectorModule.preprocess_one` (the same Model Garden ops are used here,
so what ``export/parity.json`` measured is what is served). Its outputs ``detection_boxes``
(``[1, K, 4]`` ymin, xmin, ymax, xmax in pixels of the padded input), ``detection_classes``
(0-based foreground class index: label-map id - 1), ``detection_scores`` and ``num_detections`` are
mapped back to the input image like the SavedModel's (label-map ids, class names, scores descending),
so responses have the same shape on both runtimes. Only the first ``num_detections`` rows are read:
the op leaves the rest of its buffers undefined.

Threads: a pool of interpreters (an interpreter is not thread-safe), each with ``threads`` XNNPACK
threads; the images of one batch are scored side by side on them, each decoded and resized in the
thread that scores it (TensorFlow ops and ``invoke`` release the GIL), never on the event loop.
Measured on 2 cores (seed-1 BCCD export): two single-thread interpreters score 1.8x the images/s of
one, while one interpreter with two XNNPACK threads bought nothing (and LiteRT's NMS skips a class
with 2 threads and 3 classes: :func:`training.export.nms_safe_threads`).
"""

from __future__ import annotations

import io
import logging
import queue
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from deployment.serving.model import Detection, ImageDecodeError
from training.export import make_interpreter

log = logging.getLogger("detops.serving")


class TFLiteDetector:
    """A TFLite detection model behind the same ``predict`` as the SavedModel :class:`Detector`.

    Args:
        model_path: local ``.tflite`` file.
        labels: ``{label-map id: class name}``.
        name / version: the model version served (for logs and metrics).
        runtime: ``tflite-float`` or ``tflite-int8`` (reported in metrics).
        interpreters: interpreters in the pool (images scored side by side; default of the service:
            one per core, :func:`deployment.serving.runtime.thread_plan`).
        threads: XNNPACK threads per interpreter (1 instead when it would make LiteRT's NMS skip a
            class: :func:`training.export.nms_safe_threads`).
    """

    def __init__(
        self,
        model_path: str,
        labels: dict[int, str],
        name: str = "model",
        version: str = "unknown",
        runtime: str = "tflite-float",
        interpreters: int = 1,
        threads: int = 1,
    ) -> None:
        import tensorflow as tf

        self.path = model_path
        self.name = name
        self.version = version
        self.runtime = runtime
        self.labels = dict(labels)
        self.ready = False
        self._tf = tf
        self._pool: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(max(1, interpreters)):
            self._pool.put(make_interpreter(model_path, threads, len(self.labels)).get_signature_runner())
        runner = self._pool.get()
        shape = runner.get_input_details()["images"]["shape"]
        self._pool.put(runner)
        self.input_size = [int(shape[1]), int(shape[2])]
        self._preprocess = tf.function(self._preprocess_one, input_signature=[tf.TensorSpec([], tf.string)])
        n = max(1, interpreters)
        self._executor = ThreadPoolExecutor(n, thread_name_prefix="detops-tflite") if n > 1 else None

    def _preprocess_one(self, data):
        """Encoded bytes -> (float32 ``[Hp, Wp, 3]``, image_info ``[4, 2]``), as ``DetectorModule.preprocess_one``."""
        from official.vision.ops import preprocess_ops

        tf = self._tf
        img = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
        x = preprocess_ops.normalize_image(
            tf.cast(img, tf.float32), offset=preprocess_ops.MEAN_RGB, scale=preprocess_ops.STDDEV_RGB
        )
        x, info = preprocess_ops.resize_and_crop_image(
            x, self.input_size, padded_size=self.input_size, aug_scale_min=1.0, aug_scale_max=1.0
        )
        return x, info

    def warmup(self) -> None:
        """Run one small image through the model (traces the preprocessing, allocates the interpreters)."""
        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (64, 48), (120, 60, 30)).save(buf, format="JPEG")
        self.predict([buf.getvalue()])
        self.ready = True

    def predict(self, images: list[bytes]) -> list[list[Detection] | ImageDecodeError]:
        """Detections per encoded image, in order; an undecodable image gets an :class:`ImageDecodeError`.

        One ``invoke`` per image on a pooled interpreter. The images of a batch are spread over the
        interpreters (threads of this detector's executor: LiteRT's ``invoke`` and TensorFlow's
        decoding release the GIL), so a batch uses every interpreter - the batch gain of this runtime
        is its interpreters running side by side. A single image runs in the calling thread.
        """
        if len(images) == 1 or self._executor is None:
            return [self._predict_one(data) for data in images]
        return list(self._executor.map(self._predict_one, images))

    def _predict_one(self, data: bytes) -> list[Detection] | ImageDecodeError:
        tf = self._tf
        try:
            x, info = self._preprocess(tf.constant(data))
        except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
            return ImageDecodeError(f"the model could not decode the image: {str(e).splitlines()[0][:200]}")
        runner = self._pool.get()
        try:
            res = runner(images=x.numpy()[None])
        finally:
            self._pool.put(runner)
        return self._unpack(res, info.numpy())

    def close(self) -> None:
        """Stop the executor's threads (idle ones; nothing is cancelled)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    def _unpack(self, res: dict[str, np.ndarray], info: np.ndarray) -> list[Detection]:
        scale = np.tile(info[2], 2)
        size = np.tile(info[0], 2)
        k = int(np.asarray(res["num_detections"]).reshape(-1)[0])
        boxes = np.asarray(res["detection_boxes"])[0][:k]
        pixels = np.clip(boxes / scale, 0, size)
        norm = pixels / np.maximum(size, 1)
        classes = np.asarray(res["detection_classes"])[0][:k].astype(np.int64) + 1  # label-map ids
        scores = np.asarray(res["detection_scores"])[0][:k]
        order = np.argsort(-scores, kind="stable")  # contract: descending scores
        return [
            Detection(
                box=[float(v) for v in norm[j]],
                box_pixels=[float(v) for v in pixels[j]],
                class_id=int(classes[j]),
                class_name=self.labels.get(int(classes[j]), ""),
                score=float(scores[j]),
            )
            for j in order
        ]
