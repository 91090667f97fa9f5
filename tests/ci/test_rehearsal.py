"""The local rehearsal (scripts/rehearse.sh) of the train and release workflows.

Fast: the script calls the same `detops` commands as the workflows, with at least the options they
use, in the workflows' order, and every call matches the CLI. Slow: the script runs end to end on
BCCD (two tiny runs, a local MLflow registry, the local deploy target on 127.0.0.1) and leaves the
registry and the endpoint in the state the workflows promise.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
from cicd_helpers import GITHUB_DIR, REPO, all_calls, check_call, cli_root, detops_calls

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
    for call in calls:
        if call.where.split(".")[2] != job:  # "$.jobs.<job>.steps[i].run": each job is rehearsed in order
            position, job = 0, call.where.split(".")[2]
        path, _ = check_call(root, call.args)
        wanted = _option_names(call.args) - {"--set"}  # the rehearsal's own --set makes the run tiny
        matches = [i for i, (p, opts) in enumerate(rehearsed) if p == path and wanted <= opts]
        assert matches, f"the rehearsal never runs `detops {path}` with {sorted(wanted)} ({call})"
        later = [i for i in matches if i >= position]
        assert later, f"`detops {path}` comes too early in the rehearsal ({call})"
        position = later[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_rehearsal_end_to_end(shared_datasets, tmp_path, monkeypatch):
    work = tmp_path / "rehearsal dir"
    port = _free_port()
    env = dict(os.environ, REHEARSAL_DIR=str(work), DETOPS_DATASETS=str(shared_datasets), DETOPS_LOCAL_PORT=str(port))
    r = subprocess.run(
        ["bash", str(SCRIPT)], check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600
    )
    (tmp_path / "rehearsal.log").write_text(r.stdout + "\n--- stderr ---\n" + r.stderr)
    tail = r.stdout[-3000:] + "\n--- stderr ---\n" + r.stderr[-3000:]
    assert r.returncode == 0, tail
    assert "REHEARSAL PASSED: versions 1 and 2 registered and approved" in r.stdout, tail
    assert r.stdout.count("(refused as expected, exit code 4)") == 4, tail  # 2 candidates x (deploy, self-approval)

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
    assert Path(state["log"]).exists()
