"""Loading one exported model version and running it on encoded images.

The SavedModel contract is docs/contracts.md: signature ``serving_default`` takes
``encoded_images`` (``tf.string [N]``, JPEG/PNG bytes of any sizes) and returns padded
``detection_boxes`` (normalized ``ymin, xmin, ymax, xmax``), ``detection_boxes_pixels``,
``detection_classes`` (1-based label-map ids), ``detection_class_names``, ``detection_scores``
(descending) and ``num_detections``; only the first ``num_detections[i]`` rows of image ``i`` are real.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from dataclasses import dataclass
from typing import Any, cast

from training import storage
from training.errors import ConfigError, NotFoundError

log = logging.getLogger("detops.serving")


class ImageDecodeError(ValueError):
    """The model could not decode one image (corrupt or truncated bytes): a client error (422)."""


@dataclass
class Detection:
    """One detection: ``box`` normalized ``[ymin, xmin, ymax, xmax]`` in [0, 1] of the input image,
    ``box_pixels`` the same in pixels, ``class_id`` 1-based label-map id, ``score`` in [0, 1]."""

    box: list[float]
    box_pixels: list[float]
    class_id: int
    class_name: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "box": self.box,
            "box_pixels": self.box_pixels,
            "class_id": self.class_id,
            "class_name": self.class_name,
            "score": self.score,
        }


def resolve_saved_model(model_dir: str) -> str:
    """Local folder of the SavedModel for ``model_dir``.

    ``model_dir`` may be the SavedModel itself or a run's ``export/`` folder holding ``saved_model/``;
    a remote URL (``az://``, ``s3://``) is copied once into ``<DETOPS_HOME>/models/<sha>/``.
    Raises :class:`NotFoundError` when no ``saved_model.pb`` is found.
    """
    url = model_dir.rstrip("/")
    url = url.removeprefix("file://")
    candidates = [url, storage.join(url, "saved_model")]
    for cand in candidates:
        if storage.exists(storage.join(cand, "saved_model.pb")):
            if storage.is_local(cand):
                return cand
            from deployment.registry.artifact import expected_under, verified_local_copy
            from training.home import detops_home

            local = detops_home() / "models" / hashlib.sha256(cand.encode()).hexdigest()[:16]
            return verified_local_copy(cand, str(local), _fetch_folder, expected_under(cand))
    if storage.is_local(url) and os.path.isdir(url):
        nested = find_nested_saved_model(url)
        if nested:
            return nested
    raise NotFoundError(f"no SavedModel (saved_model.pb) in {model_dir!r} or its saved_model/ folder")


def _fetch_folder(url: str, local: str) -> None:
    """Copy the folder ``url`` to ``local`` (through ``<local>.partial``, renamed when complete)."""
    import shutil

    fs, path = storage.filesystem(url)
    tmp = local + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    fs.get(path.rstrip("/") + "/", tmp, recursive=True)
    os.replace(tmp, local)


def find_nested_saved_model(root: str, max_depth: int = 3) -> str | None:
    """The one SavedModel folder at most ``max_depth`` levels under ``root``, or None.

    Azure ML mounts a registered folder *inside* ``$AZUREML_MODEL_DIR`` (``<dir>/<folder name>/...``,
    e.g. ``<dir>/export/saved_model/saved_model.pb``); SageMaker unpacks model.tar.gz into
    /opt/ml/model as packed. Raises :class:`ConfigError` when several SavedModels are found.
    """
    found = []
    base = root.rstrip("/").count("/")
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath.count("/") - base >= max_depth:
            dirnames[:] = []
        if "saved_model.pb" in filenames:
            found.append(dirpath)
            dirnames[:] = []
    if len(found) > 1:
        raise ConfigError(f"{root}: several SavedModels {sorted(found)}; set DETOPS_MODEL_DIR to one")
    return found[0] if found else None


def model_root(model_dir: str) -> str:
    """The export folder to load and verify for ``model_dir``: ``model_dir`` itself, or the folder nested
    inside it that holds the export, where the platform put the registered folder one level down.

    Azure ML mounts a registered folder *inside* ``$AZUREML_MODEL_DIR`` (``<dir>/export/saved_model/``,
    ``<dir>/export/detops-manifest.json``); the artifact manifest, ``parity.json`` and the TFLite files sit
    beside ``saved_model/`` there, so the digest check and the TFLite runtime must look in ``<dir>/export``,
    not in ``<dir>``. Returned unchanged: remote URLs, and local folders holding ``saved_model.pb``,
    ``saved_model/`` or a manifest at the top (a run's ``export/``, SageMaker's /opt/ml/model), or no
    nested SavedModel at all (the loader then names what is missing). Raises :class:`ConfigError` when
    several SavedModels are nested (:func:`find_nested_saved_model`).
    """
    from deployment.registry.artifact import MANIFEST_FILE

    url = model_dir.rstrip("/").removeprefix("file://")
    if not storage.is_local(model_dir) or not os.path.isdir(url):
        return model_dir
    if any(os.path.exists(os.path.join(url, name)) for name in ("saved_model.pb", "saved_model", MANIFEST_FILE)):
        return model_dir
    nested = find_nested_saved_model(url)
    if nested is None:
        return model_dir
    # <dir>/export/saved_model -> <dir>/export (the registered folder); a bare nested SavedModel as it is
    return os.path.dirname(nested) if os.path.basename(nested) == "saved_model" else nested


class Detector:
    """A loaded SavedModel that scores batches of encoded images.

    Safe to call from several threads at once (TensorFlow runs concurrent calls of a concrete
    function); the micro-batcher decides how many calls are in flight.
    """

    runtime = "savedmodel"

    def __init__(self, model_dir: str, name: str = "model", version: str = "unknown") -> None:
        import tensorflow as tf

        from deployment.registry.artifact import verify_model_dir

        self.artifact_sha256 = verify_model_dir(model_dir)  # changed files: refuse to load (never ready)
        self.path = resolve_saved_model(model_dir)
        self.name = name
        self.version = version
        self._tf = tf
        self._model = tf.saved_model.load(self.path)
        if "serving_default" not in self._model.signatures:
            raise ConfigError(f"{self.path}: SavedModel has no 'serving_default' signature (docs/contracts.md)")
        self._fn = self._model.signatures["serving_default"]
        self.ready = False

    def warmup(self) -> None:
        """Run one small image through the model (traces and allocates before the first request)."""
        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (64, 48), (120, 60, 30)).save(buf, format="JPEG")
        self.predict([buf.getvalue()])
        self.ready = True

    def close(self) -> None:
        """Nothing to release: TensorFlow owns the SavedModel's threads (the ModelRunner protocol)."""

    def _call(self, images: list[bytes]) -> dict[str, Any]:
        tf = self._tf
        out = self._fn(encoded_images=tf.constant(images, dtype=tf.string))
        return {k: v.numpy() for k, v in out.items()}

    def predict(self, images: list[bytes]) -> list[list[Detection] | ImageDecodeError]:
        """Detections for each encoded image, in input order.

        One SavedModel call for the whole batch; if TensorFlow rejects the batch (an image it cannot
        decode), each image is retried alone so that only the bad ones get an :class:`ImageDecodeError`
        (returned in their slot, not raised).
        """
        if not images:
            return []
        tf = self._tf
        try:
            return cast("list[list[Detection] | ImageDecodeError]", self._unpack(self._call(images), len(images)))
        except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
            if len(images) == 1:
                return [ImageDecodeError(f"the model could not decode the image: {str(e).splitlines()[0][:200]}")]
        results: list[list[Detection] | ImageDecodeError] = []
        for img in images:
            results.extend(self.predict([img]))
        return results

    @staticmethod
    def _unpack(out: dict[str, Any], n: int) -> list[list[Detection]]:
        results = []
        for i in range(n):
            k = int(out["num_detections"][i])
            dets = []
            for j in range(k):
                name = out["detection_class_names"][i][j]
                dets.append(
                    Detection(
                        box=[float(x) for x in out["detection_boxes"][i][j]],
                        box_pixels=[float(x) for x in out["detection_boxes_pixels"][i][j]],
                        class_id=int(out["detection_classes"][i][j]),
                        class_name=name.decode() if isinstance(name, bytes) else str(name),
                        score=float(out["detection_scores"][i][j]),
                    )
                )
            results.append(dets)
        return results
