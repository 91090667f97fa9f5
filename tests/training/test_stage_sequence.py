"""The one stage sequence (training.pipeline.run_stages) and a run that travels between machines.

Stage bodies are replaced by recorders here (fast); the real stages run in the slow tests
(tests/training/test_pipeline_e2e.py, tests/cloud/test_cloud_entrypoints.py). The portability test
runs the real ``prepare``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from training_fakes import make_voc_dataset, tiny_config_tree

from training import pipeline
from training.config import RunConfig
from training.errors import ConfigError, DataError


@pytest.fixture
def fake_stages(monkeypatch, tmp_path):
    """Replace prepare/train/evaluate/export with recorders that write what the real ones record."""
    calls: list[str] = []
    state = {"trained_to": 0, "fail": None}

    def prepare(cfg, run_dir=None, console=None, run_id=None):
        calls.append("prepare")
        run = pipeline.Run.create(cfg, run_dir, run_id=run_id)
        run.stage_done("prepare")
        return run

    def train(run, steps=None, console=None):
        calls.append("train")
        if state["fail"] == "train":
            raise RuntimeError("CUDA_ERROR_OUT_OF_MEMORY")  # not a DetopsError
        target = steps or 4
        ran = target - state["trained_to"]
        state["trained_to"] = target
        run.stage_done("train", global_step=target, steps_run=ran)

        class R:
            steps_run = ran

        return R()

    def evaluate(run, splits=None, console=None):
        calls.append("evaluate")
        run.stage_done("evaluate")
        return {}

    def export(run, console=None):
        calls.append("export")
        run.stage_done("export")
        return {}

    class P:
        class trainer:
            train_steps = 4

    monkeypatch.setattr(pipeline, "prepare", prepare)
    monkeypatch.setattr(pipeline, "train", train)
    monkeypatch.setattr(pipeline, "evaluate", evaluate)
    monkeypatch.setattr(pipeline, "export", export)
    monkeypatch.setattr(pipeline, "load_params", lambda run: P)
    for var in ("DETOPS_RUN_ID", "DETOPS_RUN_URL", "TF_CONFIG", "SM_HOSTS", "SM_CURRENT_HOST"):
        monkeypatch.delenv(var, raising=False)
    return calls, state


def _cfg(tmp_path: Path) -> RunConfig:
    return RunConfig.model_validate({"project": "p", "datastore": str(tmp_path / "store"),
                                     "data": {"format": "voc", "path": str(tmp_path)}, "tracking": {"enabled": False}})


def _manifest(run) -> dict:
    return json.loads(Path(run.path("run.json")).read_text())


def test_all_stages_in_order_then_complete(fake_stages, tmp_path):
    calls, _ = fake_stages
    run = pipeline.run_stages(_cfg(tmp_path))
    assert calls == ["prepare", "train", "evaluate", "export"]
    assert _manifest(run)["status"] == "complete"


def test_one_stage_at_a_time_like_the_azure_ml_steps(fake_stages, tmp_path, monkeypatch):
    calls, _ = fake_stages
    monkeypatch.setenv("DETOPS_RUN_ID", "20261201T000000-abc123")
    run_dir = str(tmp_path / "mounted run")
    run = pipeline.run_stages(_cfg(tmp_path), run_dir, stages=["prepare"])
    assert run.id == "20261201T000000-abc123"  # the id the submitter chose, not a new one
    assert _manifest(run)["status"] == "running"
    for stage in ("train", "evaluate"):
        pipeline.run_stages(None, run_dir, stages=[stage])
        assert _manifest(run)["status"] == "running"
    pipeline.run_stages(None, run_dir, stages=["export"])
    assert calls == ["prepare", "train", "evaluate", "export"]
    assert _manifest(run)["status"] == "complete"  # the last stage finishes the run (no separate finish step)


def test_complete_stages_are_skipped_and_more_steps_resume(fake_stages, tmp_path):
    calls, _ = fake_stages
    run = pipeline.run_stages(_cfg(tmp_path))
    calls.clear()
    pipeline.run_stages(None, run.url)  # everything recorded complete: nothing runs again
    assert calls == []
    pipeline.run_stages(None, run.url, steps=8)  # more steps: train resumes, evaluate/export are stale
    assert calls == ["train", "evaluate", "export"]
    m = _manifest(run)
    assert m["stages"]["train"]["global_step"] == 8 and m["stages"]["stale"] == ["evaluate", "export"]
    assert m["status"] == "complete"


def test_any_exception_marks_the_run_failed(fake_stages, tmp_path):
    _, state = fake_stages
    state["fail"] = "train"
    with pytest.raises(RuntimeError, match="OUT_OF_MEMORY"):
        pipeline.run_stages(_cfg(tmp_path))
    (run_json,) = (tmp_path / "store" / "p" / "runs").glob("*/run.json")
    m = json.loads(run_json.read_text())
    assert m["status"] == "failed" and "train" not in m["stages"]


def test_only_the_chief_writes_run_json(fake_stages, tmp_path, monkeypatch):
    calls, _ = fake_stages
    run = pipeline.run_stages(_cfg(tmp_path), stages=["prepare"])
    before = Path(run.path("run.json")).read_text()
    cluster = {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    pipeline.run_stages(None, run.url)
    assert calls == ["prepare", "train"]  # a worker trains (a collective op) and stops there
    assert Path(run.path("run.json")).read_text() == before
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "chief", "index": 0}}))
    pipeline.run_stages(None, run.url)
    assert _manifest(run)["status"] == "complete"


def test_bad_stage_and_bad_run_id(fake_stages, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="unknown stage"):
        pipeline.run_stages(_cfg(tmp_path), stages=["deploy"])
    with pytest.raises(ConfigError, match="needs a run config"):
        pipeline.run_stages(None, str(tmp_path / "new"))
    monkeypatch.setenv("DETOPS_RUN_ID", "../../etc")
    with pytest.raises(ConfigError, match="DETOPS_RUN_ID"):
        pipeline.run_stages(_cfg(tmp_path))


def test_prepare_not_finished_is_refused(fake_stages, tmp_path):
    run = pipeline.Run.create(_cfg(tmp_path))
    with pytest.raises(DataError, match="prepare stage did not finish"):
        pipeline.run_stages(None, run.url, stages=["train"])


# ------------------------------------------------------------------------------------ portability


def outside_paths(tree, run_dir: str) -> list[str]:
    """Every string of a YAML tree that names a path outside ``run_dir``.

    Absolute paths (``/...``, ``~...``, ``C:\\...``) must lie inside the run folder; relative ones
    must not climb out of it (``..``). URLs (``s3://``, ``az://``) are not machine paths.
    """
    bad: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
        elif isinstance(node, str) and node and "://" not in node:
            looks_absolute = node.startswith(("/", "~", "\\")) or (len(node) > 2 and node[1] == ":" and node[2] in "\\/")
            if looks_absolute:
                if not os.path.realpath(os.path.expanduser(node)).startswith(os.path.realpath(run_dir) + os.sep):
                    bad.append(node)
            elif "/" in node and ".." in node.split("/"):
                bad.append(node)

    walk(tree)
    return bad


def test_outside_path_check_catches_the_old_layout(tmp_path):
    run = tmp_path / "run"
    old = {"task": {"init_checkpoint": "/root/.detops/pretrained/mobilenetv2/ckpt",
                    "train_data": {"input_path": str(run / "tf_records" / "train-*.tfrecord")}}}
    assert outside_paths(old, str(run)) == ["/root/.detops/pretrained/mobilenetv2/ckpt"]
    assert outside_paths({"a": "model_config/../../x"}, str(run)) == ["model_config/../../x"]
    assert outside_paths({"a": "s3://b/ckpt", "b": "model_config/init_checkpoint/ckpt"}, str(run)) == []


def _fake_checkpoint(folder: Path, name: str = "ckpt-7") -> str:
    folder.mkdir(parents=True)
    (folder / f"{name}.index").write_bytes(b"index bytes")
    (folder / f"{name}.data-00000-of-00001").write_bytes(b"weights")
    return str(folder / name)


@pytest.mark.parametrize("source", ["config", "preset"])
def test_prepared_experiment_names_no_path_outside_the_run(tmp_path, monkeypatch, source):
    """The backbone checkpoint is copied into the run; experiment.yaml holds run-relative paths only."""
    monkeypatch.delenv("DETOPS_RUN_ID", raising=False)
    data = make_voc_dataset(tmp_path / "data set", n=12)
    ckpt = _fake_checkpoint(tmp_path / "preparing machine home" / ".detops" / "pretrained")
    tree = tiny_config_tree(data, tmp_path / "store")
    if source == "config":
        tree["train"]["init_checkpoint"] = ckpt
    else:  # the preset's pretrained backbone from the cache of the preparing machine
        tree["train"].update(preset="retinanet_mobilenetv2_fpn_cpu", image_size=64)
        monkeypatch.setattr(pipeline, "_pretrained", lambda: ckpt)
    run = pipeline.prepare(RunConfig.model_validate(tree))
    exp = yaml.safe_load(Path(run.path("model_config", "experiment.yaml")).read_text())
    assert outside_paths(exp, run.local_dir) == []
    assert str(tmp_path) not in Path(run.path("model_config", "experiment.yaml")).read_text()
    assert exp["task"]["init_checkpoint"] == "model_config/init_checkpoint/ckpt-7"
    assert sorted(os.listdir(run.path("model_config", "init_checkpoint"))) == ["ckpt-7.data-00000-of-00001", "ckpt-7.index"]
    assert _manifest(run)["inputs"]["init_checkpoint"]["source"] == ckpt

    # moved to another machine: load_params points every path into the new folder
    moved = tmp_path / "other machine" / "run"
    moved.parent.mkdir()
    os.rename(run.local_dir, moved)
    params = pipeline.load_params(pipeline.Run.open(str(moved)))
    assert params.task.init_checkpoint == str(moved / "model_config" / "init_checkpoint" / "ckpt-7")
    assert Path(params.task.init_checkpoint + ".index").read_bytes() == b"index bytes"
    assert params.task.train_data.input_path == str(moved / "tf_records" / "train-*.tfrecord")
    assert params.task.annotation_file == str(moved / "data" / "annotations" / "val.json")


def test_missing_init_checkpoint_is_named(tmp_path, monkeypatch):
    from training.errors import NotFoundError

    data = make_voc_dataset(tmp_path / "data", n=12)
    tree = tiny_config_tree(data, tmp_path / "store")
    tree["train"]["init_checkpoint"] = str(tmp_path / "nope" / "ckpt-1")
    with pytest.raises(NotFoundError, match="ckpt-1.index not found"):
        pipeline.prepare(RunConfig.model_validate(tree))
