"""Issue 13: one seed for a run, the parity verdict's exit code, the prepare summary, empty datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from training_fakes import make_voc_dataset, tiny_config_tree

from detops.cli import main
from training.errors import ExitCode

# ------------------------------------------------------------------------------------------ seed


def test_one_seed_feeds_the_split_unless_the_split_sets_its_own(tmp_path):
    from training.config import load_run_config

    tree = tiny_config_tree(tmp_path, tmp_path / "store")
    del tree["split"]["seed"]
    cfg = load_run_config(tree=dict(tree, seed=7))
    assert cfg.seed == 7 and cfg.split_seed == 7
    cfg = load_run_config(tree=dict(tree, seed=7, split={"ratios": [0.5, 0.25, 0.25], "seed": 3}))
    assert cfg.split_seed == 3
    assert load_run_config(tree=tree).seed == 42  # a default seed: every run is seeded


def test_the_seed_reaches_the_input_reader():
    from training.experiment import build_experiment

    params = build_experiment(
        preset="retinanet_mobilenetv2_fpn_tiny", num_classes=2, train_records="t-*", val_records="v-*", seed=11
    )
    assert params.task.train_data.seed == 11 and params.task.validation_data.seed == 11


def test_the_detection_backbone_has_no_unused_level_6_conv():
    """The last 1x1 conv (1280) of MobileNetV2 fed only an endpoint the FPN ignored."""
    from training.experiment import build_experiment
    from training.inference import build_model

    params = build_experiment(
        preset="retinanet_mobilenetv2_fpn_tiny", num_classes=2, train_records="t-*", val_records="v-*"
    )
    model = build_model(params)
    outputs = model.backbone.output_specs
    assert sorted(outputs) == ["2", "3", "4", "5"]
    import tensorflow as tf

    x = tf.zeros([1, 64, 64, 3])
    with tf.GradientTape() as tape:
        feats = model.decoder(model.backbone(x, training=True), training=True)
        loss = sum(tf.reduce_sum(v) for v in tf.nest.flatten(model.head(feats, training=True)[:2]))
    grads = tape.gradient(loss, model.backbone.trainable_variables)
    unused = [v.name for v, g in zip(model.backbone.trainable_variables, grads) if g is None]
    assert not unused, unused


def _train_tiny(tmp_path: Path, name: str, seed: int):
    """Prepare a fake dataset and train the tiny preset 3 steps with ``seed``; return its weights."""
    from training import pipeline
    from training.inference import build_model, restore

    data = tmp_path / "data"
    if not data.exists():
        make_voc_dataset(data, n=12)
    tree = tiny_config_tree(data, tmp_path / name, steps=3)
    tree["seed"] = seed
    del tree["split"]["seed"]
    run = pipeline.prepare(pipeline.load_run_config(tree=tree))
    pipeline.train(run, console=None)
    params = pipeline.load_params(run)
    model = build_model(params)
    restore(model, run.path("model_training", "checkpoints"))
    return [w.copy() for w in model.get_weights()], json.loads(Path(run.path("data", "split_report.json")).read_text())


@pytest.mark.slow
def test_same_seed_trains_the_same_weights_and_another_seed_does_not(tmp_path):
    import numpy as np

    w1, split1 = _train_tiny(tmp_path, "a", seed=5)
    w2, split2 = _train_tiny(tmp_path, "b", seed=5)
    w3, _ = _train_tiny(tmp_path, "c", seed=6)
    assert split1["splits"] == split2["splits"]
    assert all(np.array_equal(a, b) for a, b in zip(w1, w2)), "same seed, different weights"
    assert not all(np.array_equal(a, c) for a, c in zip(w1, w3)), "another seed, same weights"


# ---------------------------------------------------------------------------------------- parity


def _fake_result(tmp_path: Path, passed: bool):
    from training.pipeline import Run, RunResult

    run_dir = tmp_path / "run"
    (run_dir / "export").mkdir(parents=True)
    m = {"AP": 0.4, "AP50": 0.7, "per_class": {"cell": {"AP": 0.4, "AP50": 0.7}}}
    m.update({k: 0.5 for k in ("AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")})
    variant = {"AP_savedmodel": 0.4, "AP_tflite": 0.4 if passed else 0.33, "delta_AP": 0.0 if passed else -0.07,
               "AP50_savedmodel": 0.7, "AP50_tflite": 0.7 if passed else 0.64, "delta_AP50": 0.0 if passed else -0.06,
               "passed": passed, "max_delta": 0.01}
    parity = {"split": "test", "float": variant, "passed": passed}
    manifest = {"id": "r1", "created_at": "2026-01-01T00:00:00+00:00", "status": "complete",
                "stages": {s: {"status": "complete", "at": f"2026-01-01T00:0{i + 1}:00+00:00"}
                           for i, s in enumerate(("prepare", "train", "evaluate", "export"))}}
    manifest["stages"]["train"].update(steps_run=10, steps_per_s=0.5)
    manifest["project"] = "tiny"
    run = Run(url=str(run_dir), local_dir=str(run_dir), manifest=manifest)
    (run_dir / "export" / "parity.json").write_text(json.dumps(parity))
    for split in ("train", "val", "test"):
        (run_dir / "evaluation" / split).mkdir(parents=True)
        (run_dir / "evaluation" / split / "metrics.json").write_text(json.dumps(m))
    return RunResult(run=run, metrics={"test": m, "val": m, "train": m}, parity=parity)


@pytest.mark.parametrize("passed", [True, False])
def test_run_exit_code_and_first_summary_line_follow_the_parity_verdict(tmp_path, monkeypatch, capsys, passed):
    from training import pipeline

    monkeypatch.setattr(pipeline, "run_stages", lambda cfg, run_dir=None, **kw: _fake_result(tmp_path, passed).run)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config_tree(tmp_path, tmp_path / "store")))
    monkeypatch.setenv("DETOPS_HOME", str(tmp_path / "home"))
    if passed:
        assert main(["run", str(cfg)]) == ExitCode.OK
    else:
        with pytest.raises(SystemExit) as e:
            main(["run", str(cfg)])
        assert e.value.code == ExitCode.EXPORT
    out = capsys.readouterr().out.strip().splitlines()
    first = out[0]
    assert first.startswith("FAILED: TFLite parity") if not passed else first.startswith("run complete")
    text = "\n".join(out)
    for name in ("AP", "AP50", "AR100", "ARs", "ARm", "ARl"):
        assert f" {name} " in text or f"{name} " in text
    assert "cell 0.700" in text
    assert "wall time: prepare 1m00s, train 1m00s (10 steps, 0.50 steps/s)" in text
    assert ("detops register --run-dir" in text) == passed
    # the log of the run goes into the run folder
    assert (tmp_path / "run" / "logs" / "detops.log").exists()


def test_tables_are_not_cut_when_the_output_is_not_a_terminal(tmp_path):
    import io

    from rich.console import Console

    from training.report import print_metrics

    buf = io.StringIO()
    console = Console(file=buf, width=80, force_terminal=False)
    print_metrics({"test": _fake_result(tmp_path, True).metrics["test"]}, console)
    text = buf.getvalue()
    assert "…" not in text and "ARl" in text and "AR100" in text


def test_export_command_exits_with_the_export_code_when_parity_fails(tmp_path, monkeypatch):
    from training import pipeline

    fake = _fake_result(tmp_path, False)
    monkeypatch.setattr(pipeline.Run, "open", classmethod(lambda cls, url: fake.run))
    monkeypatch.setattr(pipeline, "export", lambda run, console=None: fake.parity)
    with pytest.raises(SystemExit) as e:
        main(["export", "--run-dir", str(tmp_path / "run")])
    assert e.value.code == ExitCode.EXPORT


# --------------------------------------------------------------------------------------- prepare


def _bbox_label_tool(root: Path, n: int = 3) -> Path:
    """The original BBox-Label-Tool layout: ``Labels/*.txt`` rows of 4 numbers, ``Images/*.jpg``."""
    from PIL import Image

    (root / "Labels").mkdir(parents=True)
    (root / "Images").mkdir()
    for i in range(n):
        Image.new("RGB", (64, 48), (i * 40, 90, 200)).save(root / "Images" / f"dog {i}.jpg")
        (root / "Labels" / f"dog {i}.txt").write_text("2\n4 4 30 30\n20 10 60 40\n")
    return root


def _bbox_config(tmp_path: Path, classes: list[str]) -> Path:
    data = _bbox_label_tool(tmp_path / "bbox data")
    tree = tiny_config_tree(data, tmp_path / "store")
    tree["data"] = {"format": "bbox_txt", "path": str(data / "Labels"), "images": str(data / "Images"),
                    "classes": classes}
    tree["split"] = {"ratios": [0.34, 0.33, 0.33]}
    cfg = tmp_path / "bbox.yaml"
    cfg.write_text(yaml.safe_dump(tree))
    return cfg


def test_no_surviving_box_is_a_data_error(tmp_path, capsys):
    """Label-less rows with two classes cannot be labelled: every box is rejected -> exit 3."""
    cfg = _bbox_config(tmp_path, ["dog", "cat"])
    with pytest.raises(SystemExit) as e:
        main(["prepare", str(cfg)])
    assert e.value.code == ExitCode.DATA
    captured = capsys.readouterr()
    assert "no box survived validation: 0 boxes read, 0 rejected; 6 annotation entries could not be read" in captured.err
    assert "no label (5th field)" in captured.err
    assert "unparseable annotation entries (not in the counts above): 6" in captured.out  # the quality summary


def test_a_requested_class_without_boxes_is_a_data_error(tmp_path, capsys):
    from training.annotations.validate import QualityReport
    from training.errors import DataError
    from training.pipeline import check_not_empty

    report = QualityReport(root="r", format="voc", policy={})
    report.boxes_in = report.boxes_kept = 4
    report.per_class = {"RBC": {"boxes": 4, "images": 2}, "WBC": {"boxes": 0, "images": 0}}
    with pytest.raises(DataError, match="no box of class 'WBC'"):
        check_not_empty(report, ["RBC", "WBC"], "data", "run")
    check_not_empty(report, ["RBC"], "data", "run")


def test_single_class_labels_label_less_rows_and_prepare_prints_the_summary(tmp_path, capsys):
    cfg = _bbox_config(tmp_path, ["dog"])
    assert main(["prepare", str(cfg)]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "images: 3 in = 3 kept + 0 rejected" in out
    assert "boxes:  6 in = 6 kept + 0 rejected" in out
    assert "per class (kept): dog 6 boxes/3 images" in out


# ------------------------------------------------------------------------------ the quiet main job


@pytest.mark.slow
def test_detops_run_prints_no_log_line_and_ends_with_the_summary(tmp_path):
    """`detops run` as a user starts it: TensorFlow / absl / warnings go to the run's log file only."""
    import os
    import re
    import subprocess
    import sys

    data = make_voc_dataset(tmp_path / "data", n=12)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config_tree(data, tmp_path / "store", steps=2)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "PYTHONWARNINGS"))}
    env["DETOPS_HOME"] = str(tmp_path / "home")
    proc = subprocess.run([sys.executable, "-m", "detops.cli", "run", str(cfg)], env=env, capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    assert proc.returncode == ExitCode.OK, text[-3000:]
    noise = re.compile(
        r"(^[IWEF]\d{4} |tensorflow|absl|Warning|WARNING|oneDNN|cuda|XLA"
        r"|^train \||steps/sec:|np\.float32|restoring or initializing|saved checkpoint to|…)",  # Orbit's prints; cut cells
        re.MULTILINE,
    )
    assert not noise.findall(text), [ln for ln in text.splitlines() if noise.search(ln)][:10]
    assert proc.stdout.lstrip().startswith("prepare")
    lines = proc.stdout.strip().splitlines()
    # two steps of the tiny model learn nothing: the summary leads with that, the run still exits 0
    assert any(ln.startswith("PROBLEM: ") and ln.endswith("train longer (train.steps) or check the labels")
               for ln in lines), lines
    assert "run complete" not in proc.stdout
    assert lines[-1].startswith("next: train longer")
    run = next((tmp_path / "store" / "tiny" / "runs").iterdir())
    log = (run / "logs" / "detops.log").read_text()
    assert log.strip(), "the log file is empty"


def test_a_stage_bar_outside_a_terminal_is_whole_and_keeps_its_stream(capsys):
    """Outside a terminal the finished bar is printed once, uncut (rich cuts at 80 columns), on the
    stdout of the stage's start even when code in the stage points sys.stdout elsewhere (Orbit)."""
    import contextlib
    import io

    from rich.console import Console

    from training.report import Reporter

    reporter = Reporter(Console(soft_wrap=True))
    elsewhere = io.StringIO()
    info = "loss 0.848  1.19 steps/s  " + "x" * 60
    with reporter.stage("train"), contextlib.redirect_stdout(elsewhere):
        print("train | step: 10 | steps/sec: 0.5")  # a library's print inside the stage
        reporter.train_progress(480, 480, 0.848, 1.19)
        reporter.advance(0, info=info)
    with reporter.stage("prepare"):  # no total: ends as done, not as a spinner frame
        pass
    out = capsys.readouterr().out
    assert "480/480" in out and info in out and "…" not in out, out
    assert "steps/sec" not in out and "480/480" not in elsewhere.getvalue()
    assert "done prepare" in out and "done train" in out, out


def test_a_stray_print_in_a_stage_goes_to_stderr_and_the_bar_to_stdout(capsys):
    """During a stage stdout belongs to the bars: a library's print (Orbit's) goes to stderr, which
    is the run's log file under quiet_logs; after the stage print works as before."""
    from rich.console import Console

    from training.report import Reporter

    reporter = Reporter(Console(soft_wrap=True))
    with reporter.stage("train"):
        print("train | step: 10 | steps/sec: 0.5")
        reporter.print("a message of the run")
        reporter.train_progress(2, 2, 0.9, 1.0)
    print("after the stage")
    captured = capsys.readouterr()
    assert "steps/sec: 0.5" in captured.err and "steps/sec" not in captured.out, captured
    assert "a message of the run" in captured.out and "done train" in captured.out, captured.out
    assert "2/2" in captured.out and captured.out.rstrip().endswith("after the stage"), captured.out
