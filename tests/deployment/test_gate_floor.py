"""Issue 41: the quality gate's absolute floor (with or without an Approved champion) and parity that
needs detections. Run folders are made up (deployment.testing.make_fake_run); their test metrics and
parity.json are rewritten with what the pipeline's own functions produce for the case at hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deployment.registry.approval import ApprovalService
from training.errors import ConfigError, GateError

CLASSES = ("RBC", "WBC", "Platelets")  # deployment.testing.DEFAULT_CLASSES


@pytest.fixture
def service(registry):
    return ApprovalService(registry)


def _gt() -> dict:
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 100, "height": 100} for i in (1, 2)]
    cats = [{"id": k + 1, "name": n} for k, n in enumerate(CLASSES)]
    anns = [{"id": k + 1, "image_id": 1 + k % 2, "category_id": k + 1, "bbox": [10 + 20 * k, 10, 20, 20],
             "area": 400, "iscrowd": 0} for k in range(3)]
    return {"images": images, "categories": cats, "annotations": anns}


def _no_detections() -> dict:
    """The test metrics of a model that found nothing, as training.evaluate.coco_metrics writes them."""
    from training.evaluate import coco_metrics

    return coco_metrics(_gt(), [])[0]


def _set_test_metrics(run: str, metrics: dict) -> None:
    (Path(run) / "evaluation" / "test" / "metrics.json").write_text(json.dumps(metrics))


def _metrics(ap: float, ap50: float, per_class_ap50: dict[str, float] | None = None, detections: int = 500) -> dict:
    per = per_class_ap50 or dict.fromkeys(CLASSES, ap50)
    return {"AP": ap, "AP50": ap50, "num_detections": detections,
            "per_class": {n: {"AP": ap, "AP50": v} for n, v in per.items()}}


def _approved(service, run, name):
    mv = service.register(run, name, by="alice")
    return service.approve(name, mv.version, by="bob", comment="baseline")


# ------------------------------------------------------------------------------------------- floor


def test_a_run_without_detections_fails_the_gate_with_no_champion(service, make_run, model_name):
    run = make_run()  # its parity.json says passed, as an export that compared 0.000 with 0.000 did
    _set_test_metrics(run, _no_detections())
    d = service.gate(run, model_name)
    assert d.baseline_version is None
    assert not d.passed
    assert d.floor["failed"][0] == "detections" and d.floor["detections"] == 0
    assert d.reasons[0].startswith("the model made no detections on the test split")
    assert d.reasons[0].endswith("train longer (train.steps) or check the labels")
    with pytest.raises(GateError, match="no detections on the test split"):
        service.register(run, model_name, by="alice")
    assert service.registry.list_versions(model_name) == []


def test_a_run_without_detections_fails_the_gate_with_a_champion(service, make_run, model_name):
    champion = make_run()
    _set_test_metrics(champion, _metrics(ap=0.005, ap50=0.30))  # a weak champion: the margin alone would pass 0.0
    base = _approved(service, champion, model_name)
    run = make_run()
    _set_test_metrics(run, _no_detections())
    d = service.gate(run, model_name, margin=0.01)
    assert d.baseline_version == base.version and d.candidate_AP == 0.0  # within the margin of 0.005 ...
    assert not any("margin" in r for r in d.reasons)
    assert not d.passed and "detections" in d.floor["failed"]  # ... and still refused: the floor holds


def test_one_class_never_found_fails_the_per_class_floor(service, make_run, model_name):
    run = make_run()
    _set_test_metrics(run, _metrics(ap=0.5, ap50=0.61, per_class_ap50={"RBC": 0.9, "WBC": 0.93, "Platelets": 0.0}))
    d = service.gate(run, model_name)
    assert not d.passed
    assert d.floor["failed"] == ["gate.min_class_ap50"] and d.floor["classes_below"] == {"Platelets": 0.0}
    assert "gate.min_class_ap50" in d.reasons[0] and "Platelets 0.000" in d.reasons[0]
    assert json.loads(json.dumps(d.to_dict()))["floor"]["failed"] == ["gate.min_class_ap50"]


def test_the_floor_comes_from_the_runs_config(service, make_run, model_name):
    run = make_run()
    _set_test_metrics(run, _metrics(ap=0.3, ap50=0.55))
    manifest_path = Path(run) / "run.json"
    manifest = json.loads(manifest_path.read_text())
    assert service.gate(run, model_name).passed  # defaults
    manifest["config"]["gate"] = {"min_ap50": 0.6, "min_class_ap50": 0.05}
    manifest_path.write_text(json.dumps(manifest))
    d = service.gate(run, model_name)
    assert not d.passed and d.floor["failed"] == ["gate.min_ap50"] and d.floor["min_ap50"] == 0.6
    assert "test AP50 0.550 is under the floor gate.min_ap50 0.600" in d.reasons[0]
    manifest["config"]["gate"] = {"min_ap50": 0.55}  # at the floor passes
    manifest_path.write_text(json.dumps(manifest))
    assert service.gate(run, model_name).passed
    manifest["config"]["gate"] = {"min_ap50": "high"}
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="run.json: gate.min_ap50='high'"):
        service.gate(run, model_name)


def test_gate_cli_exits_4_naming_the_floor(cli, registry, make_run, model_name, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri)
    run = make_run()
    _set_test_metrics(run, _no_detections())
    code, out = cli("gate", "--run-dir", run, "--name", model_name)
    assert code == 4
    assert '"failed": [' in out and '"detections"' in out and '"gate.min_ap50"' in out
    assert "quality gate failed: the model made no detections on the test split" in out
    assert "quality gate passed" not in out


# ------------------------------------------------------------------------------------------ parity


def _write_parity_from(run: str, savedmodel: dict, tflite: dict) -> None:
    """export/parity.json as the export stage writes it, from training.export.parity_check."""
    from training.export import parity_check

    doc: dict = {"split": "test"}
    for variant, bound in (("float", 0.01), ("int8", 0.03)):
        doc[variant] = {**parity_check(savedmodel, tflite, bound), "max_delta": bound}
    doc["passed"] = all(v["passed"] for k, v in doc.items() if isinstance(v, dict))
    (Path(run) / "export" / "parity.json").write_text(json.dumps(doc))


def test_parity_of_no_detections_is_not_measurable_and_fails_the_gate(service, make_run, model_name):
    run = make_run()
    _set_test_metrics(run, _metrics(ap=0.3, ap50=0.55))  # floor met: only the parity speaks here
    _write_parity_from(run, _no_detections(), _no_detections())
    d = service.gate(run, model_name)
    assert not d.passed
    assert d.parity_not_measurable == ["float", "int8"]
    assert d.reasons == [
        f"TFLite parity not measurable for {v!r}: the SavedModel made 0 detections on the test split, fewer than "
        "export.parity_min_detections 10 (export/parity.json)"
        for v in ("float", "int8")
    ]


def test_parity_with_enough_detections_passes_the_gate(service, make_run, model_name):
    run = make_run()
    m = _metrics(ap=0.3, ap50=0.55, detections=300)
    _set_test_metrics(run, m)
    _write_parity_from(run, m, dict(m))
    d = service.gate(run, model_name)
    assert d.passed and d.parity_not_measurable == [] and d.parity == {"float": True, "int8": True, "overall": True}
