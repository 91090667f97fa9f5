"""Issue 41: a model that detects nothing is not a finished success.

The parity check needs detections to mean anything, the quality floor (training.floors) names what is
wrong, and `detops run` leads its summary with it (exit 0: the run finished; `detops gate` refuses it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from training_fakes import tiny_config_tree

from detops.cli import main
from training.errors import ConfigError, ExitCode

CLASSES = ("nine", "ten", "jack")


def _gt() -> dict:
    """COCO ground truth: 2 images, one box of each class."""
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 100, "height": 100} for i in (1, 2)]
    cats = [{"id": k + 1, "name": n} for k, n in enumerate(CLASSES)]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 30], "area": 900, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [50, 50, 30, 30], "area": 900, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 3, "bbox": [20, 40, 40, 20], "area": 800, "iscrowd": 0},
    ]
    return {"images": images, "categories": cats, "annotations": anns}


def _no_detection_metrics() -> dict:
    """What the evaluation writes for a model that made no detection (training.evaluate.coco_metrics)."""
    from training.evaluate import coco_metrics

    metrics, _ = coco_metrics(_gt(), [])
    return metrics


# ------------------------------------------------------------------------------------------ parity


def test_parity_of_no_detections_is_not_measurable():
    from training.export import parity_check

    sm = _no_detection_metrics()
    p = parity_check(sm, _no_detection_metrics(), max_delta=0.01)
    assert p["delta_AP"] == 0.0 and p["delta_AP50"] == 0.0  # 0.000 "agrees" with 0.000 ...
    assert p["measurable"] is False and p["passed"] is False  # ... which says nothing
    assert (p["detections_savedmodel"], p["min_detections"]) == (0, 10)


def test_parity_needs_the_minimum_number_of_detections():
    from training.export import parity_check

    sm = {"AP": 0.5, "AP50": 0.8, "num_detections": 9}
    assert parity_check(sm, dict(sm), min_detections=10)["measurable"] is False
    ok = parity_check(dict(sm, num_detections=10), dict(sm), min_detections=10)
    assert ok["measurable"] is True and ok["passed"] is True
    far = parity_check(dict(sm, num_detections=500), dict(sm, AP50=0.7), min_detections=10)
    assert far["measurable"] is True and far["passed"] is False  # measurable, and off by 0.1


def test_parity_min_detections_is_a_run_config_setting_of_at_least_one(tmp_path):
    from training.config import load_run_config

    def tree():  # load_run_config applies --set to the tree it is given
        return tiny_config_tree(tmp_path, tmp_path / "store")

    assert load_run_config(tree=tree()).export.parity_min_detections == 10
    assert load_run_config(tree=tree(), overrides=["export.parity_min_detections=50"]).export.parity_min_detections == 50
    with pytest.raises(ConfigError, match="export.parity_min_detections"):
        load_run_config(tree=tree(), overrides=["export.parity_min_detections=0"])  # 0 vs 0 would be "measurable"


# ------------------------------------------------------------------------------------------- floor


def test_floor_fails_a_model_without_detections():
    from training.config import GateConfig
    from training.floors import check_floor

    check = check_floor(_no_detection_metrics(), GateConfig())
    assert not check.passed
    assert check.failed == ["detections", "gate.min_ap50", "gate.min_class_ap50"]
    assert check.reasons == ["the model made no detections on the test split"]  # the AP50 figures add nothing
    assert check.detections == 0 and check.ap50 == 0.0
    assert check.classes_below == {"nine": 0.0, "ten": 0.0, "jack": 0.0}


def test_floor_names_the_one_class_never_found():
    from training.config import GateConfig
    from training.floors import check_floor

    per_class = {"nine": {"AP": 0.5, "AP50": 0.9}, "ten": {"AP": 0.0, "AP50": 0.0}, "jack": {"AP": 0.4, "AP50": 0.8}}
    metrics = {"AP": 0.3, "AP50": 0.567, "num_detections": 300, "per_class": per_class}
    check = check_floor(metrics, GateConfig(min_ap50=0.2, min_class_ap50=0.05))
    assert check.failed == ["gate.min_class_ap50"]
    assert check.classes_below == {"ten": 0.0}
    assert check.reasons == ["test AP50 of 1 class(es) under the floor gate.min_class_ap50 0.050: ten 0.000"]


def test_floor_boundaries_and_classes_without_test_boxes():
    from training.config import GateConfig
    from training.floors import check_floor

    floor = GateConfig(min_ap50=0.3, min_class_ap50=0.1)
    at = {"AP50": 0.3, "num_detections": 40, "per_class": {"a": {"AP50": 0.1}, "absent": {"AP50": -1.0}}}
    assert check_floor(at, floor).passed  # at the floor passes; AP50 -1 (no test box of "absent") is not checked
    under = {"AP50": 0.299, "num_detections": 40, "per_class": {"a": {"AP50": 0.0999}}}
    check = check_floor(under, floor)
    assert check.failed == ["gate.min_ap50", "gate.min_class_ap50"]
    assert check.reasons[0] == "test AP50 0.299 is under the floor gate.min_ap50 0.300"
    assert check_floor({"AP50": -1.0, "per_class": {}}, floor).failed == ["gate.min_ap50"]  # undefined AP50


def test_gate_section_of_the_run_config(tmp_path):
    from training.config import load_run_config
    from training.floors import gate_config

    def tree():  # load_run_config applies --set to the tree it is given
        return tiny_config_tree(tmp_path, tmp_path / "store")

    cfg = load_run_config(tree=tree(), overrides=["gate.min_ap50=0.4", "gate.min_class_ap50=0.1"])
    assert (cfg.gate.min_ap50, cfg.gate.min_class_ap50) == (0.4, 0.1)
    with pytest.raises(ConfigError, match="unknown key 'gate.min_ap'. Did you mean 'min_ap50'"):
        load_run_config(tree=tree(), overrides=["gate.min_ap=0.4"])
    assert gate_config(json.loads(cfg.model_dump_json()), "run.json").min_ap50 == 0.4  # as run.json keeps it
    assert gate_config({}, "run.json") == load_run_config(tree=tree()).gate  # runs made before the section
    with pytest.raises(ConfigError, match=r"r/run.json: gate.min_ap50=1.5"):
        gate_config({"gate": {"min_ap50": 1.5}}, "r/run.json")


# ---------------------------------------------------------------------------------- the run summary


def _fake_run(tmp_path: Path, test_metrics: dict, parity: dict, config: dict | None = None):
    """A complete run folder with these test metrics and parity.json; returns the Run."""
    from training.pipeline import Run

    run_dir = tmp_path / "run"
    (run_dir / "export").mkdir(parents=True)
    manifest = {"id": "r1", "project": "cards", "created_at": "2026-01-01T00:00:00+00:00", "status": "complete",
                "stages": {s: {"status": "complete", "at": f"2026-01-01T00:0{i + 1}:00+00:00"}
                           for i, s in enumerate(("prepare", "train", "evaluate", "export"))}}
    if config is not None:
        manifest["config"] = config
    (run_dir / "export" / "parity.json").write_text(json.dumps(parity))
    for split in ("train", "val", "test"):
        (run_dir / "evaluation" / split).mkdir(parents=True)
        (run_dir / "evaluation" / split / "metrics.json").write_text(json.dumps(test_metrics))
    (run_dir / "run.json").write_text(json.dumps(manifest))
    return Run(url=str(run_dir), local_dir=str(run_dir), manifest=manifest)


def _detops_run(tmp_path, monkeypatch, capsys, run) -> tuple[int, list[str]]:
    from training import pipeline

    monkeypatch.setattr(pipeline, "run_stages", lambda cfg, run_dir=None, **kw: run)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config_tree(tmp_path, tmp_path / "store")))
    monkeypatch.setenv("DETOPS_HOME", str(tmp_path / "home"))
    code = main(["run", str(cfg)])
    return code, capsys.readouterr().out.strip().splitlines()


def _parity_of(sm: dict, tflite: dict) -> dict:
    from training.export import parity_check

    p = parity_check(sm, tflite)
    return {"split": "test", "float": {**p, "max_delta": 0.01}, "passed": p["passed"]}


def test_run_without_detections_leads_with_the_problem_and_exits_0(tmp_path, monkeypatch, capsys):
    m = _no_detection_metrics()
    code, lines = _detops_run(tmp_path, monkeypatch, capsys, _fake_run(tmp_path, m, _parity_of(m, m)))
    assert code == ExitCode.OK  # the run finished; the gate is the one that refuses it
    assert lines[0] == "PROBLEM: the model made no detections on the test split: train longer (train.steps) or check the labels"
    assert lines[1].startswith("run finished: every stage is complete (exit 0)") and "`detops gate` refuses" in lines[1]
    text = "\n".join(lines)
    assert "run complete" not in text and "passed parity" not in text
    assert "TFLite float: parity not measurable: the SavedModel made 0 detections" in text
    assert lines[-1].startswith("next: train longer") and "detops register" not in text


def test_run_under_the_floor_of_its_config_leads_with_it(tmp_path, monkeypatch, capsys):
    per_class = {n: {"AP": 0.3, "AP50": 0.6} for n in CLASSES}
    m = {**_no_detection_metrics(), "AP": 0.3, "AP50": 0.6, "num_detections": 400, "per_class": per_class}
    run = _fake_run(tmp_path, m, _parity_of(m, m), config={"gate": {"min_ap50": 0.7, "min_class_ap50": 0.05}})
    code, lines = _detops_run(tmp_path, monkeypatch, capsys, run)
    assert code == ExitCode.OK
    assert lines[0] == (
        "PROBLEM: test AP50 0.600 is under the floor gate.min_ap50 0.700: train longer (train.steps) or check the labels"
    )


def test_run_above_the_floor_is_complete(tmp_path, monkeypatch, capsys):
    per_class = {n: {"AP": 0.3, "AP50": 0.6} for n in CLASSES}
    m = {**_no_detection_metrics(), "AP": 0.3, "AP50": 0.6, "num_detections": 400, "per_class": per_class}
    code, lines = _detops_run(tmp_path, monkeypatch, capsys, _fake_run(tmp_path, m, _parity_of(m, m), config={}))
    assert code == ExitCode.OK
    assert lines[0].startswith("run complete: every stage finished and the TFLite exports passed parity")
    assert lines[-1].startswith("next: detops register --run-dir")
