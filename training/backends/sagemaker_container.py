"""Inside the SageMaker training container: channels + hyperparameters -> train, evaluate, export.

SageMaker starts the training image as ``docker run <image> train`` (docker/train-entrypoint.sh
runs :func:`main`). The container contract (SageMaker "Use your own training algorithms"):

- channels in ``/opt/ml/input/data/<channel>/`` (``$SM_CHANNEL_<NAME>`` wins when set):
  ``train`` / ``validation`` (TFRecord shards), ``config`` (experiment.yaml), ``label``
  (label_map.pbtxt), optional ``checkpoint`` (an init checkpoint for transfer learning);
- hyperparameters in ``/opt/ml/input/config/hyperparameters.json`` (all values are strings):
  ``num_steps``, ``quantize``, ``run_url``;
- checkpoints in ``/opt/ml/checkpoints`` (synced with S3 by ``CheckpointConfig``: a restarted spot
  job finds them there and resumes);
- the model in ``/opt/ml/model`` (``$SM_MODEL_DIR``), failure text in ``/opt/ml/output/failure``.

The run folder is rebuilt locally (:func:`assemble_run`): the channels give the TFRecords, label
map and experiment; the small files (run.json, COCO ground truth, test shards) come from
``run_url``. Then the *same* pipeline functions as everywhere else run; the chief publishes the
finished run to ``run_url`` (``run.json`` last) and copies ``export/`` to the model folder.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from training.errors import ConfigError, DetopsError

SM_ROOT = "/opt/ml"


def sm_path(*parts: str, env: dict[str, str] | os._Environ = os.environ) -> Path:
    """A path under SageMaker's ``/opt/ml`` (``$DETOPS_SM_ROOT`` moves it, for tests)."""
    from training.settings import AwsSettings

    return Path(AwsSettings.load(env).sm_root or SM_ROOT, *parts)


def channel_dir(name: str, env=os.environ) -> Path:
    """Folder of channel ``name``: ``$SM_CHANNEL_<NAME>`` or ``/opt/ml/input/data/<name>``."""
    return Path(env.get(f"SM_CHANNEL_{name.upper()}") or sm_path("input", "data", name, env=env))


def read_hyperparameters(path: Path, default_run_url: str | None = None) -> dict[str, Any]:
    """Parse ``hyperparameters.json``: ``num_steps`` (int >= 1), ``quantize`` (bool), ``run_url`` (str).

    ``run_url`` may be absent when ``default_run_url`` (the job's ``$DETOPS_RUN_URL``) is given.

    Raises:
        ConfigError: missing file or key, or a value of the wrong kind (names the file and key).
    """
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: hyperparameters file missing") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not JSON: {e.msg}") from e
    out: dict[str, Any] = {}
    if "run_url" not in raw and default_run_url:
        raw["run_url"] = default_run_url
    for key in ("num_steps", "quantize", "run_url"):
        if key not in raw:
            raise ConfigError(f"{path}: hyperparameter {key!r} missing (have {sorted(raw)})")
    steps = str(raw["num_steps"]).strip()
    if not steps.isdigit() or int(steps) < 1:
        raise ConfigError(f"{path}: num_steps must be a positive integer, got {raw['num_steps']!r}")
    out["num_steps"] = int(steps)
    q = str(raw["quantize"]).strip().lower()
    if q not in ("true", "false", "1", "0", "yes", "no"):
        raise ConfigError(f"{path}: quantize must be True or False, got {raw['quantize']!r}")
    out["quantize"] = q in ("true", "1", "yes")
    out["run_url"] = str(raw["run_url"])
    return out


def _link_all(src_dir: Path, dst_dir: Path, pattern: str) -> list[Path]:
    dst_dir.mkdir(parents=True, exist_ok=True)
    made = []
    for f in sorted(src_dir.rglob(pattern)):
        if f.is_file():
            target = dst_dir / f.name
            if target.exists() or target.is_symlink():
                target.unlink()
            target.symlink_to(f)
            made.append(target)
    return made


def assemble_run(run_url: str, staging: Path, env=os.environ) -> Path:
    """Build a local run folder at ``staging`` from the channels and ``run_url``; return it.

    Layout produced (docs/contracts.md): ``run.json``, ``data/``, ``tf_records/`` (train and
    validation shards and the label map linked from their channels, test shards from
    ``run_url``), ``model_config/experiment.yaml`` (from the ``config`` channel, with
    ``task.init_checkpoint`` pointed at the ``checkpoint`` channel when one is given) and
    ``model_training/checkpoints`` -> the SageMaker checkpoint folder (resume after spot stops).

    Raises:
        ConfigError: a required channel is empty (names it and its folder).
        NotFoundError: no run at ``run_url``.
    """
    import yaml

    from training import storage
    from training.errors import NotFoundError

    if not storage.exists(storage.join(run_url, "run.json")):
        raise NotFoundError(f"no run at {run_url} (run.json missing)")
    staging.mkdir(parents=True, exist_ok=True)
    fs, root = storage.filesystem(run_url)
    root = root.rstrip("/")
    for rel in ("run.json",):
        fs.get_file(f"{root}/{rel}", str(staging / rel))
    for sub in ("data",):
        if fs.exists(f"{root}/{sub}"):
            fs.get(f"{root}/{sub}/", str(staging / sub), recursive=True)
    records = staging / "tf_records"
    records.mkdir(exist_ok=True)
    for remote in fs.glob(f"{root}/tf_records/test-*.tfrecord"):
        fs.get_file(remote, str(records / remote.rsplit("/", 1)[1]))

    for channel, pattern, sub in (("train", "train-*.tfrecord", "tf_records"),
                                  ("validation", "val-*.tfrecord", "tf_records"),
                                  ("label", "label_map.pbtxt", "tf_records"),
                                  ("config", "experiment.yaml", "model_config")):
        folder = channel_dir(channel, env)
        if not _link_all(folder, staging / sub, pattern):
            raise ConfigError(f"SageMaker channel {channel!r} ({folder}) holds no {pattern}")
    carried = channel_dir("config", env) / "init_checkpoint"
    if carried.is_dir():  # the pretrained backbone prepare copied into the run (model_config/init_checkpoint/)
        _link_all(carried, staging / "model_config" / "init_checkpoint", "*")

    exp_path = staging / "model_config" / "experiment.yaml"
    ckpt_channel = channel_dir("checkpoint", env)
    index = sorted(ckpt_channel.rglob("*.index")) if ckpt_channel.is_dir() else []
    if index:
        exp = yaml.safe_load(exp_path.read_text())
        exp.setdefault("task", {})["init_checkpoint"] = str(index[-1].with_suffix(""))
        exp_path.unlink()  # a link into the read-only channel: write a local copy
        exp_path.write_text(yaml.safe_dump(exp, sort_keys=True))

    from training.settings import AwsSettings

    ckpt_local = Path(AwsSettings.load(env).sm_checkpoint_dir or sm_path("checkpoints", env=env))
    ckpt_local.mkdir(parents=True, exist_ok=True)
    (staging / "model_training").mkdir(exist_ok=True)
    link = staging / "model_training" / "checkpoints"
    if not link.exists():
        link.symlink_to(ckpt_local, target_is_directory=True)
    return staging


def hosts_from_resourceconfig(env=os.environ) -> dict[str, str]:
    """``SM_HOSTS`` / ``SM_CURRENT_HOST`` from ``/opt/ml/input/config/resourceconfig.json``.

    A bring-your-own container gets that file on every instance (``current_host``, ``hosts``);
    the ``SM_*`` variables exist only with the sagemaker-training toolkit. Returns ``{}`` when the
    variables are already set or the file is absent (a local run); otherwise the two variables to
    set, which :mod:`training.distribute` turns into ``TF_CONFIG``.

    Raises:
        ConfigError: the file is not JSON or lacks ``hosts`` / ``current_host`` (names the file).
    """
    if env.get("SM_HOSTS"):
        return {}
    path = sm_path("input", "config", "resourceconfig.json", env=env)
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not JSON: {e.msg}") from e
    hosts, current = doc.get("hosts"), doc.get("current_host")
    if not isinstance(hosts, list) or not hosts or not isinstance(current, str):
        raise ConfigError(f"{path}: needs 'hosts' (a list) and 'current_host', got keys {sorted(doc)}")
    return {"SM_HOSTS": json.dumps(hosts), "SM_CURRENT_HOST": current}


def write_failure(message: str, env=os.environ) -> Path:
    """Write ``/opt/ml/output/failure`` (SageMaker shows its text as the job's FailureReason)."""
    failure = sm_path("output", "failure", env=env)
    failure.parent.mkdir(parents=True, exist_ok=True)
    failure.write_text(message[:1000] + "\n")  # FailureReason keeps the first 1024 characters
    return failure


def _mark_failed(run_url: str) -> None:
    """Best effort: set ``status: failed`` in the datastore's ``run.json`` (when no stage could)."""
    import datetime as dt

    from training import storage

    try:
        url = storage.join(run_url, "run.json")
        manifest = storage.read_json(url)
        if manifest.get("status") != "complete":
            manifest["status"] = "failed"
            manifest["finished_at"] = dt.datetime.now(dt.UTC).isoformat()
            storage.write_json(url, manifest)
    except Exception as e:  # noqa: BLE001 - already failing; report and keep the first error
        print(f"warning: could not mark {run_url} failed: {e}", file=sys.stderr)


def main(env=os.environ) -> int:
    """Run train -> evaluate -> export of the run in this SageMaker container; return an exit code.

    The run is ``run_url`` of ``hyperparameters.json`` (``$DETOPS_RUN_URL`` when absent there);
    the stages are :func:`training.pipeline.run_stages`, so a restart skips what finished and
    resumes training from ``/opt/ml/checkpoints``. Hosts come from ``resourceconfig.json`` (two or
    more -> ``MultiWorkerMirroredStrategy``; the first host is the chief, the only one that writes
    ``run.json``, exports and copies ``export/`` to ``/opt/ml/model``). Any exception writes
    ``/opt/ml/output/failure`` and marks the run failed; the exit code is the error's
    (:class:`DetopsError`) or 1.
    """
    from training import distribute, pipeline

    run_url = None
    try:
        env.update(hosts_from_resourceconfig(env))  # before any TensorFlow op (MultiWorkerMirroredStrategy)
        workers = distribute.num_workers(env)  # validates SM_HOSTS before any work
        from training.settings import CommonSettings

        common = CommonSettings.load(env)
        hp = read_hyperparameters(sm_path("input", "config", "hyperparameters.json", env=env), common.run_url)
        run_url = hp["run_url"]
        expected_id = common.run_id
        home = Path(common.home or "/tmp/detops")
        staging = assemble_run(run_url, home / "sagemaker-run", env)
        manifest = json.loads((staging / "run.json").read_text())
        if expected_id and manifest.get("id") != expected_id:
            raise ConfigError(f"{run_url}: run.json has id {manifest.get('id')!r}, the job was started for "
                              f"DETOPS_RUN_ID {expected_id!r}")
        chief = distribute.is_chief(env)
        print(f"SageMaker host {env.get('SM_CURRENT_HOST', 'local')}: {workers} worker(s), "
              f"{'chief' if chief else 'worker'}", flush=True)
        run = pipeline.Run.open(str(staging))
        run.url = run_url  # stages publish to the datastore run folder (chief only)
        run.manifest.setdefault("sagemaker", {})["workers"] = workers
        run = pipeline.run_stages(
            run=run, stages=("train", "evaluate", "export"), steps=hp["num_steps"], int8=hp["quantize"],
            track=bool(common.mlflow_tracking_uri),
        )
        if chief:
            model_dir = Path(env.get("SM_MODEL_DIR") or sm_path("model", env=env))
            shutil.copytree(run.path("export"), model_dir, dirs_exist_ok=True)
        else:
            wait_for_chief(run_url)
        return 0
    except BaseException as e:  # noqa: BLE001 - SageMaker needs the failure file for *any* error
        write_failure(f"{type(e).__name__}: {e}", env)
        if run_url and distribute_is_chief_safe(env):
            _mark_failed(run_url)
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        if isinstance(e, KeyboardInterrupt):
            return 130
        return int(e.exit_code) if isinstance(e, DetopsError) else 1


def wait_for_chief(run_url: str, poll_s: float = 5.0, timeout_s: float = 24 * 3600) -> str:
    """Keep a non-chief worker alive until the chief has finished the run; return the run's status.

    A worker of a ``MultiWorkerMirroredStrategy`` cluster that exits after training stops sending
    heartbeats to TensorFlow's coordination service on the chief, which then reports the task as
    failed while the chief still evaluates and exports. So the worker polls ``<run_url>/run.json``
    (written by the chief only) every ``poll_s`` seconds until its status is ``complete`` or
    ``failed``; SageMaker's own ``MaxRuntimeInSeconds`` bounds the job, ``timeout_s`` this wait.

    Raises:
      DetopsError: the run was not finished within ``timeout_s`` seconds.
    """
    import time

    from training import storage

    deadline = time.monotonic() + timeout_s
    url = storage.join(run_url, "run.json")
    while True:
        try:
            status = storage.read_json_object(url, "the run manifest").get("status")
        except (DetopsError, OSError):
            status = None  # not published yet, or being replaced: ask again
        if status in ("complete", "failed"):
            return str(status)
        if time.monotonic() > deadline:
            raise DetopsError(f"{url}: the chief did not finish the run within {timeout_s:.0f} s (status {status!r})")
        time.sleep(poll_s)


def distribute_is_chief_safe(env) -> bool:
    """:func:`training.distribute.is_chief`, False when the cluster variables are malformed."""
    from training import distribute

    try:
        return distribute.is_chief(env)
    except DetopsError:
        return False


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
