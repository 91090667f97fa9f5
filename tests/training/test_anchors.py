"""Anchors fitted to the training boxes (training.anchors, ``train.anchors: fit``): known values, the
fit on boxes made from a known grid, and the prepared run's experiment."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from training_fakes import make_voc_dataset, tiny_config_tree

from training import pipeline
from training.anchors import anchor_shapes, best_iou, fit_anchors, input_box_sizes, kmeans_aspect_ratios
from training.config import RunConfig, load_run_config
from training.errors import ConfigError


def test_anchor_shapes_follow_model_gardens_grid():
    # level 3 (stride 8), anchor_size 3: 24 px; scale 2**(1/2) of two; ratio 4 (w/h) -> 48 x 12
    shapes = anchor_shapes(3.0, [1.0, 4.0], min_level=3, max_level=4, num_scales=2)
    assert shapes.shape == (2 * 2 * 2, 2)
    np.testing.assert_allclose(shapes[0], [24, 24])
    np.testing.assert_allclose(shapes[1], [48, 12])
    np.testing.assert_allclose(shapes[2], [24 * 2**0.5, 24 * 2**0.5])
    np.testing.assert_allclose(shapes[4], [48, 48])  # level 4


def test_best_iou_known_values():
    shapes = np.array([[24.0, 24.0], [48.0, 12.0]])
    np.testing.assert_allclose(
        best_iou(np.array([[24, 24], [12, 12], [48, 12], [24, 12]]), shapes), [1.0, 0.25, 1.0, 0.5]
    )


def test_input_box_sizes_scale_the_longer_side_to_the_input():
    coco = {
        "images": [{"id": 1, "width": 640, "height": 480}, {"id": 2, "width": 100, "height": 200}],
        "annotations": [
            {"id": 1, "image_id": 1, "bbox": [0, 0, 64, 32]},
            {"id": 2, "image_id": 2, "bbox": [5, 5, 50, 20]},
            {"id": 3, "image_id": 2, "bbox": [5, 5, 0, 20]},
        ],
    }  # zero width: left out
    np.testing.assert_allclose(input_box_sizes(coco, 320), [[32, 16], [80, 32]])
    coco["annotations"].append({"id": 4, "image_id": 9, "bbox": [0, 0, 1, 1]})
    with pytest.raises(ValueError, match="annotation 4 names image 9"):
        input_box_sizes(coco, 320)


def test_kmeans_finds_the_ratio_clusters():
    rng = np.random.default_rng(0)
    ratios = np.repeat([0.5, 1.0, 2.0], 100) * np.exp(rng.normal(0, 0.02, 300))
    wh = np.stack([30 * np.sqrt(ratios), 30 / np.sqrt(ratios)], axis=1)
    np.testing.assert_allclose(kmeans_aspect_ratios(wh, 3), [0.5, 1.0, 2.0], rtol=0.02)
    assert kmeans_aspect_ratios(np.array([[10.0, 10.0]] * 5), 3) == [1.0]  # one distinct ratio


@pytest.mark.parametrize("size", [1.5, 2.5, 4.0])
def test_fit_recovers_the_grid_the_boxes_came_from(size):
    """Boxes drawn from a grid of known size and ratios: the fit returns that grid (mean IoU 1)."""
    shapes = anchor_shapes(size, [0.5, 1.0, 2.0], 3, 5, 3)
    wh = shapes[np.random.default_rng(1).integers(0, len(shapes), 400)]
    fit = fit_anchors(wh, min_level=3, max_level=5, num_scales=3, preset_size=6.0, preset_ratios=[1.0, 2.0, 3.0])
    assert fit.anchor_size == size
    np.testing.assert_allclose(fit.aspect_ratios, [0.5, 1.0, 2.0], rtol=1e-3)
    assert fit.mean_iou == pytest.approx(1.0) and fit.recall == 1.0
    assert fit.preset_mean_iou < fit.mean_iou and fit.boxes == 400
    with pytest.raises(ValueError, match="no box"):
        fit_anchors(wh[:0], min_level=3, max_level=5, num_scales=3, preset_size=3.0, preset_ratios=[1.0])


@pytest.mark.parametrize(
    "override", [{"task.model.anchor.anchor_size": 2.0}, {"task": {"model": {"anchor": {"num_scales": 2}}}}]
)
def test_fit_and_an_anchor_override_exclude_each_other(override):
    tree = {"project": "p", "data": {"format": "voc", "path": "x"}, "train": {"anchors": "fit", "overrides": override}}
    with pytest.raises(
        ConfigError, match="train: .*anchors: fit sets the anchors; remove the override 'task.model.anchor"
    ):
        load_run_config(tree=json.loads(json.dumps(tree)))
    tree["train"]["anchors"] = "preset"
    assert load_run_config(tree=json.loads(json.dumps(tree))).train.overrides == override
    tree["train"] = {"anchors": "fit", "overrides": {"task.model.head.num_convs": 2}}
    assert load_run_config(tree=tree).train.anchors == "fit"


def test_prepare_writes_the_fitted_anchors_into_the_experiment(tmp_path, monkeypatch):
    monkeypatch.delenv("DETOPS_RUN_ID", raising=False)
    data = make_voc_dataset(tmp_path / "data", n=12)  # boxes 14-30 px in 96x80 images
    tree = tiny_config_tree(data, tmp_path / "store")
    tree["train"]["anchors"] = "fit"
    run = pipeline.prepare(RunConfig.model_validate(tree))
    fit = json.loads(Path(run.path("model_config", "anchors.json")).read_text())
    anchor = yaml.safe_load(Path(run.path("model_config", "experiment.yaml")).read_text())["task"]["model"]["anchor"]
    assert anchor["anchor_size"] == fit["anchor_size"] and anchor["aspect_ratios"] == fit["aspect_ratios"]
    # boxes of 14-30 px at 96 -> 64 px input: about 9-20 px, so the fit moves far from the preset's grid
    coco = json.loads(Path(run.path("data", "annotations", "train.json")).read_text())
    assert fit["boxes"] == len(coco["annotations"])
    assert fit["mean_iou"] > fit["preset_mean_iou"]
    params = pipeline.load_params(run)
    assert params.task.model.anchor.anchor_size == fit["anchor_size"]
