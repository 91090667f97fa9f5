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


def read_hyperparameters(path: Path) -> dict[str, Any]:
    """Parse ``hyperparameters.json``: ``num_steps`` (int >= 1), ``quantize`` (bool), ``run_url`` (str).

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


def main(env=os.environ) -> int:
    """Run train -> evaluate -> export of the run in this SageMaker container; return an exit code.

    On failure the message goes to ``/opt/ml/output/failure`` (shown as the job's FailureReason).
    """
    from training import distribute, pipeline

    try:
        strategy_note = distribute.num_workers(env)  # validates SM_HOSTS before any work
        hp = read_hyperparameters(sm_path("input", "config", "hyperparameters.json", env=env))
        from training.settings import CommonSettings

        home = CommonSettings.load(env).home or Path("/tmp/detops")
        staging = assemble_run(hp["run_url"], Path(home) / "sagemaker-run", env)
        run = pipeline.Run.open(str(staging))
        if distribute.is_chief(env):
            run.url = hp["run_url"]  # stages publish to the datastore run folder (chief only)
        run.manifest["config"].setdefault("export", {})["int8"] = hp["quantize"]
        run.manifest.setdefault("sagemaker", {})["workers"] = strategy_note
        pipeline.train(run, steps=hp["num_steps"])
        if not distribute.is_chief(env):
            return 0  # the chief evaluates, exports and publishes
        pipeline.evaluate(run)
        pipeline.export(run)
        model_dir = Path(env.get("SM_MODEL_DIR") or sm_path("model", env=env))
        shutil.copytree(run.path("export"), model_dir, dirs_exist_ok=True)
        run.finish("complete")  # publishes to run_url, run.json last (storage.publish_run)
        return 0
    except DetopsError as e:
        failure = sm_path("output", "failure", env=env)
        failure.parent.mkdir(parents=True, exist_ok=True)
        failure.write_text(f"{type(e).__name__}: {e}\n")
        print(f"error: {e}", file=sys.stderr)
        return int(e.exit_code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
