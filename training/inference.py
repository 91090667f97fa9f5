"""One inference module for evaluation, export and serving: image in, detections out.

:class:`DetectorModule` wraps a Model Garden RetinaNet with the *same* preprocessing as Model
Garden's evaluation parser (``official.vision.serving.detection.DetectionModule``: ImageNet mean/std
normalization, aspect-preserving resize to the input size, zero padding to a multiple of
``2**max_level``) and turns the detections back into the input image's frame. Evaluation runs this
module on the checkpoint; export saves this very module as the SavedModel, so what was evaluated is
what is served.

Outputs (see docs/contracts.md), K = ``max_num_detections`` (padded):

* ``detection_boxes``: float32 ``[N, K, 4]``, normalized ``ymin, xmin, ymax, xmax`` in [0, 1];
* ``detection_boxes_pixels``: float32 ``[N, K, 4]``, the same in pixels of the input image;
* ``detection_classes``: int32 ``[N, K]``, 1-based label-map ids; ``detection_class_names``: string;
* ``detection_scores``: float32 ``[N, K]``, descending; ``num_detections``: int32 ``[N]``.
"""

from __future__ import annotations

import tensorflow as tf

from training.boxes import yxyx_to_xywh


def _padded_size(params) -> list[int]:
    from official.vision.ops import preprocess_ops

    size = list(params.task.model.input_size[:2])
    if params.task.train_data.parser.pad:
        return list(preprocess_ops.compute_padded_size(size, 2**params.task.model.max_level))
    return size


def build_anchors(params, batch: tf.Tensor | int | None = None) -> dict[str, tf.Tensor]:
    """Anchor boxes for the padded input size, per level ``str(level)`` -> ``[(N,) h, w, A*4]``."""
    from official.vision.ops import anchor

    m = params.task.model
    gen = anchor.build_anchor_generator(
        min_level=m.min_level,
        max_level=m.max_level,
        num_scales=m.anchor.num_scales,
        aspect_ratios=m.anchor.aspect_ratios,
        anchor_size=m.anchor.anchor_size,
    )
    boxes = gen(image_size=_padded_size(params))
    if batch is None:
        return boxes
    return {k: tf.tile(v[tf.newaxis], [batch, 1, 1, 1]) for k, v in boxes.items()}


def build_model(params, batch_size: int | None = None):
    """Build the RetinaNet Keras model of an ``ExperimentConfig`` (weights not loaded)."""
    import tf_keras
    from official.vision.modeling import factory

    from training.experiment import register_backbones

    register_backbones()
    input_specs = tf_keras.layers.InputSpec(shape=[batch_size, *_padded_size(params), 3])
    return factory.build_retinanet(input_specs=input_specs, model_config=params.task.model)


def restore(model, checkpoint: str) -> None:
    """Load a training checkpoint (``model_training/checkpoints/ckpt-N``) into ``model``.

    Raises:
      NotFoundError: no checkpoint at ``checkpoint`` (a file prefix or a folder).
    """
    from training.errors import NotFoundError

    path = checkpoint
    if tf.io.gfile.isdir(checkpoint):
        path = tf.train.latest_checkpoint(checkpoint)
    if not path:
        raise NotFoundError(f"no checkpoint in {checkpoint}")
    ckpt = tf.train.Checkpoint(model=model)
    ckpt.read(path).expect_partial().assert_existing_objects_matched()


class DetectorModule(tf.Module):
    """RetinaNet + preprocessing + postprocessing, with two serving signatures.

    Args:
      params: the run's Model Garden ``ExperimentConfig``.
      model: the RetinaNet Keras model (weights loaded).
      class_names: ordered class names; id ``i + 1`` is ``class_names[i]``.
    """

    def __init__(self, params, model, class_names: list[str]):
        super().__init__(name="detector")
        from official.vision.ops import preprocess_ops

        self.model = model
        self._params = params
        self._input_size = list(params.task.model.input_size[:2])
        self._padded = _padded_size(params)
        self._keep_aspect = params.task.train_data.parser.keep_aspect_ratio
        self._mean = preprocess_ops.MEAN_RGB
        self._std = preprocess_ops.STDDEV_RGB
        self.class_names = tf.constant([""] + list(class_names))

    def preprocess_one(self, image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """uint8 ``[H, W, 3]`` -> (normalized, resized, padded float32 image, ``image_info [4, 2]``).

        ``image_info`` rows: original (h, w), scaled (h, w), scale (y, x), offset (y, x), as in
        ``preprocess_ops.resize_and_crop_image``.
        """
        from official.vision.ops import preprocess_ops

        x = tf.cast(image, tf.float32)
        x = preprocess_ops.normalize_image(x, offset=self._mean, scale=self._std)
        x, info = preprocess_ops.resize_and_crop_image(
            x,
            self._input_size,
            padded_size=self._padded,
            aug_scale_min=1.0,
            aug_scale_max=1.0,
            keep_aspect_ratio=self._keep_aspect,
        )
        x.set_shape([*self._padded, 3])
        return x, info

    def run_preprocessed(self, images: tf.Tensor, image_info: tf.Tensor) -> dict[str, tf.Tensor]:
        """Run the model on preprocessed images ``[N, Hp, Wp, 3]`` and map boxes back to the inputs."""
        n = tf.shape(images)[0]
        out = self.model(
            images,
            image_shape=image_info[:, 1, :],
            anchor_boxes=build_anchors(self._params, n),
            training=False,
        )
        scale = tf.tile(image_info[:, 2:3, :], [1, 1, 2])  # [N, 1, 4] (sy, sx, sy, sx)
        pixels = out["detection_boxes"] / scale
        size = tf.tile(image_info[:, 0:1, :], [1, 1, 2])  # original (h, w, h, w)
        pixels = tf.minimum(tf.maximum(pixels, 0.0), size)
        classes = tf.cast(out["detection_classes"], tf.int32)
        return {
            "detection_boxes": pixels / tf.maximum(size, 1.0),
            "detection_boxes_pixels": pixels,
            "detection_classes": classes,
            "detection_class_names": tf.gather(self.class_names, tf.clip_by_value(classes, 0, len(self.class_names) - 1)),
            "detection_scores": out["detection_scores"],
            "num_detections": tf.cast(out["num_detections"], tf.int32),
        }

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    def detect_images(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """Detections for a batch of same-sized RGB images, uint8 ``[N, H, W, 3]``."""
        spec = (tf.TensorSpec([*self._padded, 3], tf.float32), tf.TensorSpec([4, 2], tf.float32))
        x, info = tf.map_fn(self.preprocess_one, images, fn_output_signature=spec)
        return self.run_preprocessed(x, info)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="encoded_images")])
    def detect_encoded(self, encoded_images: tf.Tensor) -> dict[str, tf.Tensor]:
        """Detections for a batch of encoded JPEG/PNG images, string ``[N]``, any sizes."""

        def one(data):
            img = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
            return self.preprocess_one(img)

        spec = (tf.TensorSpec([*self._padded, 3], tf.float32), tf.TensorSpec([4, 2], tf.float32))
        x, info = tf.map_fn(one, encoded_images, fn_output_signature=spec)
        return self.run_preprocessed(x, info)


def detections_to_coco(
    outputs: dict, image_ids: list[int], min_score: float = 0.0
) -> list[dict]:
    """Convert a batch of module outputs (numpy) into COCO result dicts.

    Returns one ``{"image_id", "category_id", "bbox": [x, y, w, h] (pixels), "score"}`` per
    detection, as ``pycocotools.coco.COCO.loadRes`` expects.
    """
    res = []
    boxes = outputs["detection_boxes_pixels"]
    for i, image_id in enumerate(image_ids):
        for k in range(int(outputs["num_detections"][i])):
            score = float(outputs["detection_scores"][i, k])
            if score < min_score:
                continue
            res.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(outputs["detection_classes"][i, k]),
                    "bbox": yxyx_to_xywh(boxes[i, k]).tolist(),
                    "score": score,
                }
            )
    return res


def padded_size(params) -> list[int]:
    """The model's input size after padding to a multiple of ``2**max_level``, ``[h, w]``."""
    return _padded_size(params)

