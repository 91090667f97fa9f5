"""The in-cloud entry points, run end to end without a cloud (slow: real tiny training).

SageMaker: the training image's entry point (docker/train-entrypoint.sh ``train``) under a
simulated ``/opt/ml`` root. Channels are filled from the run folder exactly as the generated
``CreateTrainingJob`` request names them (S3 prefix -> channel folder, SageMaker's File mode),
``hyperparameters.json``, ``resourceconfig.json`` and the request's ``Environment`` come from that
same request. One host; a restart on the same /opt/ml/checkpoints that resumes; a TensorFlow error
that must write /opt/ml/output/failure; two hosts from resourceconfig.json on 127.0.0.1.

Azure ML: the four command jobs detops generates, each command run by ``bash`` with its
``${{inputs.*}}`` / ``${{outputs.*}}`` replaced by local "mounted" folders and its environment
variables plus the runtime's (AZUREML_*, MLFLOW_TRACKING_URI), one after another as the pipeline
job runs them.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
from cloud_fakes import prepared_tiny_run, sagemaker_opt_ml, sagemaker_request, tiny_voc_config  # noqa: E402

pytestmark = pytest.mark.slow
VENV_BIN = str(Path(sys.executable).parent)
RUN_ID = "20261201T120000-c0ffee"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _base_env(**extra: str) -> dict[str, str]:
    drop = ("TF_CONFIG", "SM_HOSTS", "SM_CURRENT_HOST", "DETOPS_RUN_ID", "DETOPS_RUN_URL", "MLFLOW_TRACKING_URI")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("AZUREML_")}
    env.update({"PATH": f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}", "PYTHONPATH": str(ROOT),
                "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
                "OMP_NUM_THREADS": "1", "TF_NUM_INTEROP_THREADS": "2"})
    env.update(extra)
    return env


def _sagemaker_request(nodes: int, num_steps: int) -> dict:
    return sagemaker_request(nodes, num_steps, f"s3://bucket/tiny/runs/{RUN_ID}")


def _opt_ml(root: Path, run_dir: Path, request: dict, hosts: list[str], host: str) -> dict[str, str]:
    """Lay out /opt/ml as SageMaker does for ``request``; return the container's environment."""
    job_env = sagemaker_opt_ml(root, run_dir, request, hosts, host, str(run_dir))  # the datastore is a local folder
    return _base_env(**job_env, DETOPS_SM_ROOT=str(root), DETOPS_HOME=str(root.parent / f"home {host}"))


def _container(env: dict[str, str]) -> subprocess.Popen:
    """``docker run <image> train``, minus Docker: the image's entry point script with the job's env."""
    log = Path(env["DETOPS_SM_ROOT"]).parent / f"{Path(env['DETOPS_SM_ROOT']).name}.log"
    with open(log, "w") as f:  # the job's CloudWatch log
        proc = subprocess.Popen(["sh", str(ROOT / "docker" / "train-entrypoint.sh"), "train"], env=env, cwd=ROOT,
                                stdout=f, stderr=subprocess.STDOUT, text=True)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        proc.wait(timeout=1800)  # a safety net against a hung collective, not a speed bound
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, proc.log.read_text()  # type: ignore[attr-defined]


def _assert_complete_run(run_dir: Path) -> dict:
    m = json.loads((run_dir / "run.json").read_text())
    assert m["status"] == "complete", m
    assert m["id"] == RUN_ID
    for split in ("train", "val", "test"):
        metrics = json.loads((run_dir / "evaluation" / split / "metrics.json").read_text())
        assert -1.0 <= metrics["AP50"] <= 1.0
    assert (run_dir / "export" / "saved_model" / "saved_model.pb").exists()
    return m


def test_sagemaker_single_host_metrics_resume_and_failure(tmp_path):
    from training.backends.sagemaker import METRIC_DEFINITIONS

    run_dir = prepared_tiny_run(tmp_path, RUN_ID)
    opt_ml = tmp_path / "opt ml"
    env = _opt_ml(opt_ml, run_dir, _sagemaker_request(1, 2), ["algo-1"], "algo-1")

    rc, out = _finish(_container(env))
    assert rc == 0, out[-4000:]
    m = _assert_complete_run(run_dir)
    assert m["stages"]["train"]["global_step"] == 2 and m["sagemaker"]["workers"] == 1
    assert (opt_ml / "model" / "saved_model" / "saved_model.pb").exists()  # SM_MODEL_DIR -> model.tar.gz
    assert not (opt_ml / "output" / "failure").exists()
    assert sorted(p.name for p in (opt_ml / "checkpoints").glob("ckpt-*.index")) == ["ckpt-1.index", "ckpt-2.index"]

    # MetricDefinitions: every regex finds its number in the real log of this job
    found = {d["Name"]: re.findall(d["Regex"], out) for d in METRIC_DEFINITIONS}
    assert all(found.values()), {k: v for k, v in found.items() if not v}
    assert float(found["test:AP50"][-1]) == pytest.approx(
        json.loads((run_dir / "evaluation" / "test" / "metrics.json").read_text())["AP50"], abs=1e-4)
    assert float(found["train:loss"][-1]) > 0

    # restarted (e.g. after a spot interruption) with the same checkpoint folder and more steps: resumes
    hp = opt_ml / "input" / "config" / "hyperparameters.json"
    hp.write_text(json.dumps({**json.loads(hp.read_text()), "num_steps": "4"}))
    rc, out = _finish(_container(env))
    assert rc == 0, out[-4000:]
    assert "resuming from step 2" in out
    m = _assert_complete_run(run_dir)
    assert m["stages"]["train"]["global_step"] == 4 and m["stages"]["train"]["steps_run"] == 2

    # a TensorFlow error (a corrupt shard), not a DetopsError: failure file, run marked failed, exit 1
    for shard in (opt_ml / "input" / "data" / "train").glob("train-*.tfrecord"):
        shard.write_bytes(b"\x00not a tfrecord" * 64)
    hp.write_text(json.dumps({**json.loads(hp.read_text()), "num_steps": "6"}))
    rc, out = _finish(_container(env))
    assert rc == 1, out[-4000:]
    failure = (opt_ml / "output" / "failure").read_text()
    assert "DataLossError" in failure or "corrupted record" in failure.lower(), failure
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"


def test_sagemaker_two_hosts_from_resourceconfig(tmp_path):
    run_dir = prepared_tiny_run(tmp_path, RUN_ID)
    hosts = [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]  # SageMaker says algo-1, algo-2
    request = _sagemaker_request(2, 2)
    assert request["ResourceConfig"]["InstanceCount"] == 2
    envs = [_opt_ml(tmp_path / f"opt ml {i}", run_dir, request, hosts, h) for i, h in enumerate(hosts)]
    for i, env in enumerate(envs):
        tmp = tmp_path / f"tmp {i}"  # Model Garden writes a non-chief's checkpoints under TMPDIR
        tmp.mkdir()
        env["TMPDIR"] = str(tmp)
    procs = [_container(env) for env in envs]
    try:
        results = [_finish(p) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for rc, out in results:
        assert rc == 0, out[-4000:]
    assert "2 worker(s), chief" in results[0][1] and "2 worker(s), worker" in results[1][1]
    m = _assert_complete_run(run_dir)
    assert m["sagemaker"]["workers"] == 2 and m["stages"]["train"]["global_step"] == 2
    assert (tmp_path / "opt ml 0" / "model" / "saved_model" / "saved_model.pb").exists()
    assert not (tmp_path / "opt ml 1" / "model").exists()  # only the chief exports
    assert not any((tmp_path / f"opt ml {i}" / "output" / "failure").exists() for i in range(2))


# ----------------------------------------------------------------------------------------- Azure ML


def test_azureml_command_steps_one_after_another(tmp_path):
    from mlflow.tracking import MlflowClient

    from training.backends.azureml import AzureMLSettings, build_step_jobs

    config = tiny_voc_config(tmp_path / "inputs", tmp_path / "datasets", str(tmp_path / "unused"))

    settings = AzureMLSettings()
    jobs = build_step_jobs("./inputs/tiny.yaml", ["export.int8=false", "train.steps=2"], project="tiny", run_id=RUN_ID, settings=settings)
    mount = tmp_path / "mnt" / "azureml" / "cr" / "wd" / "run"  # the rw_mount of outputs.run
    mount.mkdir(parents=True)
    mlflow_uri = f"sqlite:///{tmp_path / 'workspace mlflow.db'}"
    for stage in ("prepare", "train", "evaluate", "export"):
        job = jobs[stage]
        command = job.command
        for name, value in {"inputs.config": config, "inputs.datasets": tmp_path / "datasets",
                            "outputs.run": mount, "inputs.run": mount}.items():
            command = command.replace("${{" + name + "}}", shlex_quote(str(value)))
        assert "${{" not in command, command
        env = _base_env(**job.environment_variables, AZUREML_RUN_ID=f"{stage}_job", AZUREML_EXPERIMENT_NAME=job.experiment_name,
                        MLFLOW_TRACKING_URI=mlflow_uri, DETOPS_HOME=str(tmp_path / "home"))
        r = subprocess.run(["bash", "-c", command], env=env, cwd=tmp_path, capture_output=True, text=True)
        assert r.returncode == 0, f"{stage}: {command}\n{r.stdout[-3000:]}{r.stderr[-3000:]}"
        m = json.loads((mount / "run.json").read_text())
        assert m["stages"][stage]["status"] == "complete"
        assert m["status"] == ("complete" if stage == "export" else "running")
    assert m["id"] == RUN_ID and m["url"] == settings.datastore_uri("tiny", "runs", RUN_ID)
    assert m["config"]["export"]["int8"] is False  # the --set of the prepare step
    for split in ("train", "val", "test"):
        assert (mount / "evaluation" / split / "metrics.json").exists()
    assert (mount / "export" / "saved_model" / "saved_model.pb").exists()
    # metrics reached the workspace's MLflow (evaluate logs when MLFLOW_TRACKING_URI is set)
    client = MlflowClient(mlflow_uri)
    (exp,) = [e for e in client.search_experiments() if e.name == "tiny"]
    (mlrun,) = client.search_runs([exp.experiment_id])
    test_ap50 = json.loads((mount / "evaluation" / "test" / "metrics.json").read_text())["AP50"]
    assert mlrun.data.metrics["test/AP50"] == pytest.approx(test_ap50)
    assert mlrun.info.status == "FINISHED" and m["mlflow_run_id"] == mlrun.info.run_id


def shlex_quote(s: str) -> str:
    import shlex

    return shlex.quote(s)
