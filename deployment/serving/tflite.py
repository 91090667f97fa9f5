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

Threads: one interpreter per model worker (an interpreter is not thread-safe), each with
``threads`` XNNPACK threads; decoding and resizing run in the calling worker thread (TensorFlow ops
release the GIL), never on the event loop.
"""

from __future__ import annotations

import io
import logging
import queue

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
        interpreters: interpreters in the pool (= model workers, batches in flight).
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
        """Detections per encoded image, in order (one ``invoke`` per image on one pooled interpreter).

        An image TensorFlow cannot decode gets an :class:`ImageDecodeError` in its slot.
        """
        tf = self._tf
        runner = self._pool.get()
        try:
            out: list[list[Detection] | ImageDecodeError] = []
            for data in images:
                try:
                    x, info = self._preprocess(tf.constant(data))
                except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
                    out.append(
                        ImageDecodeError(f"the model could not decode the image: {str(e).splitlines()[0][:200]}")
                    )
                    continue
                res = runner(images=x.numpy()[None])
                out.append(self._unpack(res, info.numpy()))
            return out
        finally:
            self._pool.put(runner)

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
