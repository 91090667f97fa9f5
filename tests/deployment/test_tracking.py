"""training.tracking: a run folder logged to MLflow (params, metrics per split, artifacts)."""

from __future__ import annotations

import pytest

from training import tracking
from training.errors import DataError, NotFoundError


def test_flatten():
    assert tracking.flatten({"a": {"b": 1, "c": [1, 2]}, "d": [{"e": "x"}], "f": {}}) == {
        "a.b": "1",
        "a.c": "[1, 2]",
        "d.0.e": "x",
        "f": "{}",
    }
    assert tracking.flatten({"long": "x" * 7000})["long"].endswith("...")


def test_default_tracking_uri(monkeypatch, _isolated_home):
    assert tracking.default_tracking_uri() == f"sqlite:///{(_isolated_home / 'mlflow.db').as_posix()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.default_tracking_uri() == "http://127.0.0.1:5000"


def test_log_run_params_metrics_artifacts(make_run, _isolated_home):
    from mlflow.tracking import MlflowClient

    run = make_run(test_ap=0.3)
    rid = tracking.log_run(run)
    client = MlflowClient(tracking_uri=tracking.default_tracking_uri())
    r = client.get_run(rid)
    assert r.data.params["train.steps"] == "5"
    assert r.data.params["model.preset"] == "retinanet_mobilenetv2_fpn_320"
    assert r.data.metrics["test/AP"] == pytest.approx(0.3)
    assert r.data.metrics["test/AP50"] == pytest.approx(0.55)
    assert r.data.metrics["val/AP"] == pytest.approx(0.31)
    assert r.data.metrics["test/per_class/RBC/AP50"] == pytest.approx(0.55)
    assert "test/APs" in r.data.metrics  # -1 (undefined) is kept as logged by the evaluator
    assert r.data.tags["detops.code_version"] == "0123456789abcdef"
    assert r.data.tags["detops.dataset_sha256"] == "d" * 64
    assert r.info.status == "FINISHED"
    exp = client.get_experiment(r.info.experiment_id)
    assert exp.name == "detops-test"
    assert exp.artifact_location.startswith((_isolated_home / "mlartifacts").as_uri())
    paths = {a.path for a in client.list_artifacts(rid)}
    assert {"run.json", "evaluation", "export"} <= paths
    assert {a.path for a in client.list_artifacts(rid, "evaluation/test")} == {"evaluation/test/metrics.json"}
    assert "export/parity.json" in {a.path for a in client.list_artifacts(rid, "export")}
    # idempotent: the same run folder maps to the same MLflow run
    assert tracking.log_run(run) == rid
    assert tracking.find_run(run) == rid


def test_log_run_explicit_uri(make_run, tmp_path):
    uri = f"sqlite:///{(tmp_path / 'other store.db').as_posix()}"
    rid = tracking.log_run(make_run(), tracking_uri=uri)
    assert tracking.find_run(make_run(), tracking_uri=uri) is None  # a different run folder
    from mlflow.tracking import MlflowClient

    assert MlflowClient(tracking_uri=uri).get_run(rid).info.run_id == rid


def test_log_run_errors(tmp_path, make_run):
    with pytest.raises(NotFoundError, match="run.json"):
        tracking.log_run(str(tmp_path / "nothing here"))
    run = make_run()
    (tmp_path / "bad").mkdir()
    import pathlib

    pathlib.Path(run, "evaluation", "val", "metrics.json").write_text("{broken")
    with pytest.raises(DataError, match="val/metrics.json"):
        tracking.read_metrics(run)


def test_the_mlflow_message_is_printed_when_the_run_is_first_logged(make_run, _isolated_home):
    """`run_stages` logs after evaluate and again at finish (the export's metrics): one message."""
    import io

    from rich.console import Console

    from training.pipeline import _track
    from training.run import Run

    run = Run.open(make_run())
    run.manifest["config"]["tracking"] = {"enabled": True}
    buf = io.StringIO()
    console = Console(file=buf, soft_wrap=True)
    assert _track(run, console) and _track(run, console)
    rid = run.manifest["mlflow_run_id"]
    assert rid == tracking.find_run(run.local_dir)
    assert buf.getvalue().count(f"metrics logged to MLflow ({tracking.default_tracking_uri()}), run {rid}") == 1
