"""The local rehearsal (scripts/rehearse.sh) of the train and release workflows.

Fast: the script calls the same `detops` commands as the workflows, with at least the options they
use, in the workflows' order, and every call matches the CLI. Slow: the script runs end to end (two
tiny runs on a drawn dataset made here, a local MLflow registry, the local deploy target on
127.0.0.1) and leaves the registry and the endpoint in the state the workflows promise.
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import subprocess
from pathlib import Path

import pytest
import yaml
from cicd_helpers import GITHUB_DIR, REPO, all_calls, check_call, cli_root, detops_calls, load_yaml
from PIL import Image, ImageDraw

SCRIPT = REPO / "scripts" / "rehearse.sh"


def _option_names(args: list[str]) -> set[str]:
    return {a.split("=", 1)[0] for a in args if a.startswith("--")}


@pytest.fixture(scope="module")
def root():
    return cli_root()


@pytest.fixture(scope="module")
def rehearsal_calls(root):
    calls = detops_calls(SCRIPT.read_text(), wrapped=True)
    return [(check_call(root, args), args) for args in calls]


def test_rehearsal_calls_match_the_cli(rehearsal_calls):
    problems = [f"detops {' '.join(args)} -> {p}" for (_, ps), args in rehearsal_calls for p in ps]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("workflow", ["train", "release"])
def test_rehearsal_runs_the_workflow_commands_with_their_options_in_order(root, rehearsal_calls, workflow):
    """Per job of the workflow, its `detops` calls appear in the rehearsal in the same order."""
    rehearsed = [(path, _option_names(args)) for (path, _), args in rehearsal_calls]
    position, job = 0, None
    calls = all_calls([GITHUB_DIR / f"{workflow}.yml"])
    assert calls
    workflow_doc = load_yaml(GITHUB_DIR / f"{workflow}.yml")
    for call in calls:
        if _only_on_cancel(workflow_doc, call.where):  # `detops cancel`: runs only when a person cancels
            continue
        if call.args[:1] == ["wait"]:  # the local backend's `submit --wait` is the wait; the cloud modes run the
            continue                   # workflows' own scripts, `detops wait` included (test_rehearsal_jobs.py)
        if call.where.split(".")[2] != job:  # "$.jobs.<job>.steps[i].run": each job is rehearsed in order
            position, job = 0, call.where.split(".")[2]
        path, _ = check_call(root, call.args)
        # the rehearsal's own --set makes the run tiny; its local backend submits with --wait (the cloud job's
        # --no-wait and `detops wait` are run as the workflows write them by the cloud modes)
        wanted = _option_names(call.args) - {"--set", "--no-wait"}
        matches = [i for i, (p, opts) in enumerate(rehearsed) if p == path and wanted <= opts]
        assert matches, f"the rehearsal never runs `detops {path}` with {sorted(wanted)} ({call})"
        later = [i for i in matches if i >= position]
        assert later, f"`detops {path}` comes too early in the rehearsal ({call})"
        position = later[0]


def _only_on_cancel(doc, where: str) -> bool:
    """True for a call in a GitHub step with ``if: ${{ cancelled() }}`` (``$.jobs.<job>.steps[i].run``)."""
    m = re.match(r"^\$\.jobs\.([^.]+)\.steps\[(\d+)\]", where)
    if not m:
        return False
    step = doc["jobs"][m.group(1)]["steps"][int(m.group(2))]
    return "cancelled()" in str(step.get("if", ""))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tiny_voc_dataset(root: Path, n: int = 24, size: tuple[int, int] = (96, 80)) -> Path:
    """Write ``n`` JPEGs of drawn "cells" (3 classes) with their Pascal VOC XML (pixel boxes)."""
    rng = random.Random(7)
    classes = {"RBC": (214, 120, 140), "WBC": (120, 70, 160), "Platelets": (200, 170, 60)}
    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations").mkdir(parents=True)
    w, h = size
    for i in range(n):
        im = Image.new("RGB", size, (238, 226, 214))
        draw = ImageDraw.Draw(im)
        objects = []
        for cls in rng.sample(sorted(classes), k=rng.randint(1, 3)):
            bw, bh = rng.randint(14, 30), rng.randint(14, 30)
            x0, y0 = rng.randint(0, w - bw - 1), rng.randint(0, h - bh - 1)
            draw.ellipse((x0, y0, x0 + bw, y0 + bh), fill=classes[cls])
            objects.append(
                f"<object><name>{cls}</name><difficult>0</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
                f"<xmax>{x0 + bw}</xmax><ymax>{y0 + bh}</ymax></bndbox></object>"
            )
        im.save(root / "JPEGImages" / f"cells_{i:03d}.jpg", quality=90)
        (root / "Annotations" / f"cells_{i:03d}.xml").write_text(
            f"<annotation><filename>cells_{i:03d}.jpg</filename><size><width>{w}</width><height>{h}</height>"
            f"<depth>3</depth></size>{''.join(objects)}</annotation>"
        )
    return root


@pytest.mark.slow
def test_rehearsal_end_to_end(tmp_path, monkeypatch):
    """scripts/rehearse.sh on a tiny drawn dataset (the script's default is configs/bccd.yaml, same commands)."""
    work = tmp_path / "rehearsal dir"
    data = _tiny_voc_dataset(tmp_path / "data set")
    config = tmp_path / "tiny rehearsal.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "project": "rehearsal",
                "datastore": "${DETOPS_DATASTORE}",
                "data": {"format": "voc", "path": str(data / "Annotations"), "images": str(data / "JPEGImages")},
                "split": {"ratios": [0.5, 0.25, 0.25], "seed": 1},
                "train": {"preset": "retinanet_mobilenetv2_fpn_tiny"},
            }
        )
    )
    port = _free_port()
    env = dict(os.environ, REHEARSAL_DIR=str(work), REHEARSAL_CONFIG=str(config), DETOPS_LOCAL_PORT=str(port))
    r = subprocess.run(
        ["bash", str(SCRIPT)], check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600
    )
    (tmp_path / "rehearsal.log").write_text(r.stdout + "\n--- stderr ---\n" + r.stderr)
    tail = r.stdout[-3000:] + "\n--- stderr ---\n" + r.stderr[-3000:]
    assert r.returncode == 0, tail
    assert "REHEARSAL PASSED: versions 1 and 2 registered and approved" in r.stdout, tail
    assert r.stdout.count("(refused as expected, exit code 4)") == 4, tail  # 2 candidates x (deploy, self-approval)
    assert "/invocations answered 401" in r.stdout + r.stderr, tail  # the injected fault, caught by the smoke test

    # The registry the workflows wrote: two Approved versions, registered by CI, approved by a person.
    monkeypatch.setenv("DETOPS_REGISTRY", "mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work}/mlflow.db")
    monkeypatch.setenv("DETOPS_HOME", str(work / "home"))
    from deployment.registry import get_registry

    versions = get_registry("mlflow").list_versions("rehearsal-detector")
    assert [(v.version, v.status.value) for v in versions] == [("1", "Approved"), ("2", "Approved")]
    for v in versions:
        actions = [(e.action, e.actor) for e in v.audit]
        assert ("register", "ci-rehearsal") in actions and ("approve", "reviewer@example.com") in actions
        assert ("approve", "ci-rehearsal") not in actions
        assert v.tags["gate.passed"] == "true"

    # The endpoint: 1 deployed, 2 deployed and rolled back to 1; stopped when the script ended.
    state = json.loads((work / "home" / "endpoints" / "local" / "rehearsal.json").read_text())
    assert state["history"] == ["1", "2", "1"] and state["model_version"] == "1"
    assert state["url"] == f"http://127.0.0.1:{port}"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
