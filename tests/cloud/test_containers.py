"""The training and serving images, built from the repository and run the way the platforms run them.

The images come from ``scripts/images-local.sh`` (podman here; ``DETOPS_CONTAINER_ENGINE=docker``
where Docker is installed; cached by a content hash, so only the first run builds). Then:

- Training image as SageMaker runs a bring-your-own container (``<image> train``): ``/opt/ml/input``
  (``config/hyperparameters.json``, ``config/resourceconfig.json``, the channels) mounted read-only,
  ``/opt/ml/model``, ``/opt/ml/checkpoints`` and ``/opt/ml/output`` mounted from the host, the job's
  ``Environment`` from the generated ``CreateTrainingJob`` request. One host with the run folder on the
  moto S3 server; two hosts ``algo-1`` and ``algo-2`` on a container network (TF_CONFIG from
  resourceconfig.json, MultiWorkerMirroredStrategy across the two containers) with the run folder on a
  shared mounted datastore; a TensorFlow error that must write ``/opt/ml/output/failure``.
- Training image as Azure ML runs its command jobs: each generated step's command line in the image,
  with the job's and the runtime's environment variables and the run folder mounted.
- Serving image as SageMaker (``serve``, port 8080, ``/ping``, ``/invocations``, model in
  ``/opt/ml/model``, platform auth), Azure ML (``$AZUREML_MODEL_DIR`` with the registered folder nested,
  its probe and scoring routes) and plainly (API key); a tampered model is refused inside the container.
  Every serving container runs with a read-only root file system, as the image's non-root user.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cloud_fakes import prepared_tiny_run, sagemaker_opt_ml, sagemaker_request
from containers import Container, network, own, read_only, run_env_args, wait_http

pytestmark = [pytest.mark.slow, pytest.mark.containers]
RUN_ID = "20261207T120000-c0c0a1"
BUCKET = "detops-ml"
USER = "10001"  # the images' non-root user (docker/*.Dockerfile)
# two cores shared by two containers and the other test shard: few threads each (as the subprocess tests)
THREADS = {"OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "2"}


@pytest.fixture(scope="session")
def images():
    """``{"training_image_cpu": ref, "serving_image": ref}``, built (or cached) from the repository;
    at the end of the session no container of this process is left."""
    from containers import build_images, remove_leftovers

    yield build_images()
    remove_leftovers()


# --------------------------------------------------------------------------------- training, SageMaker


def _opt_ml_mounts(opt_ml: Path) -> list[str]:
    """SageMaker's mounts: input (config + channels) read-only; model, checkpoints, output writable."""
    for sub in ("model", "checkpoints", "output"):
        (opt_ml / sub).mkdir(parents=True, exist_ok=True)
    own(opt_ml)
    return ["-v", f"{opt_ml / 'input'}:/opt/ml/input:ro",
            *[a for sub in ("model", "checkpoints", "output") for a in ("-v", f"{opt_ml / sub}:/opt/ml/{sub}")]]


def _assert_complete(manifest: dict, workers: int) -> None:
    assert manifest["status"] == "complete", manifest
    assert manifest["id"] == RUN_ID
    assert manifest["sagemaker"]["workers"] == workers and manifest["stages"]["train"]["global_step"] == 2


def test_sagemaker_one_host_run_folder_on_s3(images, aws_env, tmp_path):
    import boto3

    from training import storage
    from training.backends.sagemaker import METRIC_DEFINITIONS

    run_url = f"s3://{BUCKET}/tiny/runs/{RUN_ID}"
    run_dir = prepared_tiny_run(tmp_path, RUN_ID)
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    storage.publish_run(str(run_dir), run_url)
    opt_ml = tmp_path / "opt ml"
    job_env = sagemaker_opt_ml(opt_ml, run_dir, sagemaker_request(1, 2, run_url), ["algo-1"], "algo-1", run_url)
    aws = {"AWS_ENDPOINT_URL": aws_env, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}  # SageMaker gives the job role's credentials the same way (env)
    args = [*_opt_ml_mounts(opt_ml), "--network", "host",  # moto listens on the host's 127.0.0.1
            *run_env_args({**job_env, **aws, **THREADS})]
    with Container(images["training_image_cpu"], ["train"], args) as job:
        rc = job.wait()
        log = job.logs()
    assert rc == 0, log[-4000:]
    _assert_complete(storage.read_json(storage.join(run_url, "run.json")), workers=1)
    assert storage.exists(storage.join(run_url, "export", "saved_model", "saved_model.pb"))  # published to S3
    assert (opt_ml / "model" / "saved_model" / "saved_model.pb").stat().st_uid == int(USER)  # -> model.tar.gz
    assert sorted(p.name for p in (opt_ml / "checkpoints").glob("ckpt-*.index")) == ["ckpt-1.index", "ckpt-2.index"]
    assert not (opt_ml / "output" / "failure").exists()
    found = {d["Name"]: re.findall(d["Regex"], log) for d in METRIC_DEFINITIONS}  # CloudWatch metrics from the log
    assert all(found.values()), {k: v for k, v in found.items() if not v}


def _datastore(run_dir: Path) -> tuple[list[str], str]:
    """The run folder mounted as a shared datastore (read-write for the image's user); (args, run_url)."""
    own(run_dir)
    url = f"/mnt/datastore/tiny/runs/{RUN_ID}"
    return ["-v", f"{run_dir}:{url}"], url


def test_sagemaker_two_hosts_on_a_container_network(images, tmp_path):
    run_dir = prepared_tiny_run(tmp_path, RUN_ID)
    store, run_url = _datastore(run_dir)
    hosts = ["algo-1", "algo-2"]
    request = sagemaker_request(2, 2, f"s3://{BUCKET}/tiny/runs/{RUN_ID}")
    assert request["ResourceConfig"]["InstanceCount"] == 2
    with network("detops-sm") as net:
        jobs = []
        try:
            for host in hosts:
                opt_ml = tmp_path / f"opt ml {host}"
                env = sagemaker_opt_ml(opt_ml, run_dir, request, hosts, host, run_url)
                args = [*_opt_ml_mounts(opt_ml), *store, "--network", net, "--network-alias", host,
                        "--hostname", host, *run_env_args({**env, **THREADS})]
                jobs.append(Container(images["training_image_cpu"], ["train"], args))
            results = [(job.wait(), job.logs()) for job in jobs]
        finally:
            for job in jobs:
                job.remove()
    for rc, log in results:
        assert rc == 0, log[-4000:]
    assert "algo-1: 2 worker(s), chief" in results[0][1] and "algo-2: 2 worker(s), worker" in results[1][1]
    _assert_complete(json.loads((run_dir / "run.json").read_text()), workers=2)
    assert (tmp_path / "opt ml algo-1" / "model" / "saved_model" / "saved_model.pb").exists()
    assert not any((tmp_path / "opt ml algo-2" / "model").iterdir())  # only the chief exports
    assert not any((tmp_path / f"opt ml {h}" / "output" / "failure").exists() for h in hosts)


def test_sagemaker_failure_writes_the_failure_file(images, tmp_path):
    run_dir = prepared_tiny_run(tmp_path, RUN_ID)
    store, run_url = _datastore(run_dir)
    opt_ml = tmp_path / "opt ml"
    env = sagemaker_opt_ml(opt_ml, run_dir, sagemaker_request(1, 2, f"s3://{BUCKET}/tiny/runs/{RUN_ID}"), ["algo-1"], "algo-1", run_url)
    for shard in (opt_ml / "input" / "data" / "train").glob("train-*.tfrecord"):
        shard.write_bytes(b"\x00not a tfrecord" * 64)  # a TensorFlow error (DataLossError), not a DetopsError
    args = [*_opt_ml_mounts(opt_ml), *store, "--network", "none", *run_env_args({**env, **THREADS})]
    with Container(images["training_image_cpu"], ["train"], args) as job:
        rc = job.wait()
        log = job.logs()
    assert rc == 1, log[-4000:]
    failure = (opt_ml / "output" / "failure").read_text()  # SageMaker's FailureReason
    assert "DataLossError" in failure or "corrupted record" in failure.lower(), failure
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"


# ----------------------------------------------------------------------------------- training, Azure ML


def test_azureml_command_steps_in_the_image(images, tmp_path):
    """The four generated command jobs, each command line run by ``bash -c`` in the training image (Azure
    ML's command job), ``${{inputs.*}}``/``${{outputs.*}}`` replaced by mounted folders, the job's
    environment variables plus the runtime's (AZUREML_*, MLFLOW_TRACKING_URI), one after another on the
    same run mount; metrics reach the tracking server (an SQLite file here) from inside the image."""
    import shlex

    from cloud_fakes import tiny_voc_config
    from mlflow.tracking import MlflowClient

    from training.backends.azureml import AzureMLSettings, build_step_jobs

    config = tiny_voc_config(tmp_path / "config", tmp_path / "datasets")
    jobs = build_step_jobs("./config/tiny.yaml", ["export.int8=false", "train.steps=2"], project="tiny",
                           run_id=RUN_ID, settings=AzureMLSettings())
    run_mount = tmp_path / "run mount"  # the rw_mount of outputs.run
    tracking = tmp_path / "workspace mlflow"
    inside = {"config": "/mnt/azureml/cr/j/inputs/config", "datasets": "/mnt/azureml/cr/j/inputs/datasets",
              "run": "/mnt/azureml/cr/j/outputs/run", "mlflow": "/mnt/azureml/mlflow", "wd": "/mnt/azureml/cr/j/wd"}
    folders = {"config": config.parent, "datasets": tmp_path / "datasets", "run": run_mount, "mlflow": tracking,
               "wd": tmp_path / "working directory"}
    args = ["--network", "none", "--workdir", inside["wd"]]  # Azure ML runs the command in the job's working folder
    for key, folder in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
        args += ["-v", f"{own(folder)}:{inside[key]}" + (":ro" if key in ("config", "datasets") else "")]
    values = {"inputs.config": f"{inside['config']}/{config.name}", "inputs.datasets": inside["datasets"],
              "outputs.run": inside["run"], "inputs.run": inside["run"]}
    for stage in ("prepare", "train", "evaluate", "export"):
        job = jobs[stage]
        command = job.command
        for name, value in values.items():
            command = command.replace("${{" + name + "}}", shlex.quote(value))
        assert "${{" not in command, command
        env = {**job.environment_variables, **THREADS, "AZUREML_RUN_ID": f"{stage}_job",
               "AZUREML_EXPERIMENT_NAME": job.experiment_name,
               "MLFLOW_TRACKING_URI": f"sqlite:///{inside['mlflow']}/mlflow.db"}
        with Container(images["training_image_cpu"], ["bash", "-c", command], [*args, *run_env_args(env)]) as c:
            rc = c.wait()
            log = c.logs()
        assert rc == 0, f"{stage}: {command}\n{log[-4000:]}"
        m = json.loads((run_mount / "run.json").read_text())
        assert m["stages"][stage]["status"] == "complete"
        assert m["status"] == ("complete" if stage == "export" else "running")
    assert m["id"] == RUN_ID and m["config"]["export"]["int8"] is False  # the --set of the prepare step
    assert (run_mount / "export" / "saved_model" / "saved_model.pb").exists()
    test_ap50 = json.loads((run_mount / "evaluation" / "test" / "metrics.json").read_text())["AP50"]
    (exp,) = [e for e in MlflowClient(f"sqlite:///{tracking}/mlflow.db").search_experiments() if e.name == "tiny"]
    (mlrun,) = MlflowClient(f"sqlite:///{tracking}/mlflow.db").search_runs([exp.experiment_id])
    assert mlrun.data.metrics["test/AP50"] == pytest.approx(test_ap50)
    assert mlrun.info.status == "FINISHED" and m["mlflow_run_id"] == mlrun.info.run_id


# ------------------------------------------------------------------------------------------- serving


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory) -> tuple[Path, str]:
    """A run's export/ folder: the fake SavedModel (deployment/testing.py) and its artifact manifest,
    readable by the images' user; returns (folder, registered digest)."""
    from deployment.registry import artifact
    from deployment.testing import make_fake_saved_model

    export = tmp_path_factory.mktemp("registered model") / "export"
    make_fake_saved_model(export / "saved_model")
    files = artifact.compute_manifest(str(export))
    (export / artifact.MANIFEST_FILE).write_text(json.dumps(artifact.manifest_document(files)))
    return own(export), artifact.manifest_digest(files)


def _version(digest: str):
    from deployment.registry.base import ApprovalStatus, ModelVersion

    return ModelVersion(name="bccd", version="3", status=ApprovalStatus.APPROVED, artifact_uri="s3://b/runs/r/export/",
                        registered_by="ci", created_at="2026-12-07T00:00:00Z", tags={"artifact.sha256": digest})


def _jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (80, 60), (200, 40, 40)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def expected_predictions(export_dir) -> list:
    """What the app in this process answers for :func:`_jpeg` with the same model (the known value)."""
    from fastapi.testclient import TestClient

    from deployment.serving.app import create_app
    from deployment.serving.settings import load_settings

    with TestClient(create_app(load_settings(auth="platform", model_dir=str(export_dir[0])))) as c:
        r = c.post("/invocations", content=_jpeg(), headers={"Content-Type": "image/jpeg"})
        assert r.status_code == 200, r.text
        return r.json()["predictions"]


def _serving(image: str, env: dict[str, str], mounts: list[str]) -> Container:
    """The serving image started as the platforms do (``serve``; the container port 8080 published on a
    free port of 127.0.0.1: :meth:`Container.url`), read-only root file system with a tmpfs /tmp, its own user."""
    args = [*read_only(), "-p", "127.0.0.1::8080", *mounts, *run_env_args(env)]
    return Container(image, ["serve"], args)


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _same_predictions(got: list, expected: list) -> None:
    assert len(got) == len(expected) == 1
    g, e = got[0]["detections"], expected[0]["detections"]
    assert [d["class_name"] for d in g] == [d["class_name"] for d in e] and g
    for a, b in zip(g, e):
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)
        assert a["box"] == pytest.approx(b["box"], abs=1e-4)


def test_serving_as_sagemaker_runs_it(images, export_dir, expected_predictions):
    from deployment.targets.sagemaker import SageMakerTarget

    export, digest = export_dir
    spec = SageMakerTarget(role_arn="arn:aws:iam::123456789012:role/r", capture_uri="s3://b/capture/").specs(
        _version(digest), "bccd-prod", "arn:aws:sagemaker:us-east-1:123456789012:model-package/bccd/3", "120000")
    env = dict(spec["model"]["PrimaryContainer"]["Environment"])
    assert env["DETOPS_AUTH"] == "platform" and env["DETOPS_MODEL_SHA256"] == digest
    # SageMaker unpacks model.tar.gz (the export/ folder) into /opt/ml/model and runs `<image> serve`
    with _serving(images["serving_image"], env, ["-v", f"{export}:/opt/ml/model:ro"]) as c:
        base = c.url(8080)
        assert wait_http(c, base + "/ping") == 200, c.logs()[-4000:]
        status, body = _post(base + "/invocations", _jpeg(), {"Content-Type": "application/x-image"})
        assert status == 200, body
        _same_predictions(body["predictions"], expected_predictions)
        assert body["model"]["name"] == "bccd" and body["model"]["version"] == "3"
        # the image's non-root user, and nothing but /tmp writable
        assert c.exec("id", "-u").stdout.strip() == USER
        assert c.inspect()["HostConfig"]["ReadonlyRootfs"] is True
        touch = c.exec("sh", "-c", "touch /opt/detops/x")
        assert touch.returncode != 0 and "Read-only file system" in touch.stderr
        assert c.exec("sh", "-c", "touch /tmp/x").returncode == 0


def test_serving_as_azureml_runs_it(images, export_dir, expected_predictions):
    from deployment.targets.azureml import AzureMLTarget

    export, digest = export_dir
    dep = AzureMLTarget(compute="managed").build_deployment(_version(digest), "bccd-prod", "blue")
    routes = dep.environment.inference_config
    assert {r["port"] for r in routes.values()} == {8080}
    model_dir = "/var/azureml-app/azureml-models/bccd/3"  # the registered folder (export/) is nested inside
    env = {**{k: str(v) for k, v in dep.environment_variables.items()}, "AZUREML_MODEL_DIR": model_dir}
    with _serving(images["serving_image"], env, ["-v", f"{export}:{model_dir}/export:ro"]) as c:
        base = c.url(8080)
        assert wait_http(c, base + routes["readiness_route"]["path"]) == 200, c.logs()[-4000:]
        assert wait_http(c, base + routes["liveness_route"]["path"]) == 200
        body = {"input_data": {"columns": ["image"], "data": [base64.b64encode(_jpeg()).decode()]}}
        status, out = _post(base + routes["scoring_route"]["path"], json.dumps(body).encode(),
                            {"Content-Type": "application/json"})  # the endpoint key was checked by Azure ML
        assert status == 200, out
        _same_predictions(out["predictions"], expected_predictions)


def test_serving_plain_with_an_api_key(images, export_dir, expected_predictions):
    export, digest = export_dir
    key = "container-test-key-0123456789"
    env = {"DETOPS_API_KEYS": key, "DETOPS_MODEL_DIR": "/models/export", "DETOPS_MODEL_SHA256": digest}
    with _serving(images["serving_image"], env, ["-v", f"{export}:/models/export:ro"]) as c:
        base = c.url(8080)
        assert wait_http(c, base + "/readyz") == 200, c.logs()[-4000:]
        body = json.dumps({"instances": [{"b64": base64.b64encode(_jpeg()).decode()}]}).encode()
        assert _post(base + "/score", body, {"Content-Type": "application/json"})[0] == 401
        assert _post(base + "/invocations", _jpeg(), {"Content-Type": "image/jpeg"})[0] == 401
        status, out = _post(base + "/score", body, {"Content-Type": "application/json", "X-API-Key": key})
        assert status == 200, out
        _same_predictions(out["predictions"], expected_predictions)


def test_serving_refuses_a_tampered_model(images, export_dir, tmp_path):
    export, digest = export_dir
    tampered = tmp_path / "export"
    shutil.copytree(export, tampered)
    (tampered / "saved_model" / "saved_model.pb").write_bytes(b"tampered")
    own(tampered)
    env = {"DETOPS_AUTH": "platform", "DETOPS_MODEL_SHA256": digest}
    with _serving(images["serving_image"], env, ["-v", f"{tampered}:/opt/ml/model:ro"]) as c:
        rc = c.wait(timeout=600)  # never ready: the app refuses the model at startup and the container ends
        log = c.logs()
    assert rc != 0, log[-4000:]
    assert "ArtifactIntegrityError" in log and "changed: saved_model/saved_model.pb" in log, log[-4000:]
