"""Shared fakes of the cloud tests."""

from __future__ import annotations

from pathlib import Path


def gpu_run_config(tmp_path: Path, datastore: str, name: str = "run.yaml", steps: int | None = None) -> Path:
    """Write a BCCD run config for the ``retinanet_resnet50_fpn_gpu`` preset (data through
    ``${DETOPS_DATASETS}``) to ``tmp_path / name``; ``steps`` sets ``train.steps``. Returns the file."""
    cfg = tmp_path / name
    cfg.write_text(
        "project: bccd\n"
        f"datastore: {datastore}\n"
        "data:\n  format: voc\n  path: ${DETOPS_DATASETS}/bccd/BCCD/Annotations\n"
        "  images: ${DETOPS_DATASETS}/bccd/BCCD/JPEGImages\n"
        "train:\n  preset: retinanet_resnet50_fpn_gpu\n" + (f"  steps: {steps}\n" if steps else "")
    )
    return cfg


def prepared_tiny_run(tmp_path: Path, run_id: str, steps: int = 2) -> Path:
    """Prepare the tiny run locally (what ``detops submit --backend sagemaker`` does before the job).

    A 16-image fake VOC data set (tests/training/training_fakes.py), the tiny preset, ``steps``
    training steps, SavedModel export only (TFLite conversion is covered by test_pipeline_e2e).
    Returns the run folder ``tmp_path/datastore/tiny/runs/<run_id>`` (contract layout, status running).
    """
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
    from training_fakes import make_voc_dataset, tiny_config_tree

    from training import pipeline
    from training.config import RunConfig

    data = make_voc_dataset(tmp_path / "data set", n=16)
    tree = tiny_config_tree(data, tmp_path / "datastore", steps=steps)
    tree["export"]["tflite"] = False
    run = pipeline.prepare(RunConfig.model_validate(tree), run_dir=str(tmp_path / "datastore" / "tiny" / "runs" / run_id),
                           run_id=run_id)
    return Path(run.local_dir)


def sagemaker_request(nodes: int, num_steps: int, run_url: str) -> dict:
    """The ``CreateTrainingJob`` request detops generates for the tiny run at ``run_url`` (an S3 URL)."""
    from training.backends.sagemaker import SageMakerSettings, build_training_job

    return build_training_job(job_name="detops-tiny", run_url=run_url, nodes=nodes, settings=SageMakerSettings(),
                              num_steps=num_steps, quantize=False, project="tiny")


def sagemaker_opt_ml(root: Path, run_dir: Path, request: dict, hosts: list[str], host: str, run_url: str) -> dict[str, str]:
    """Lay out ``/opt/ml`` at ``root`` as SageMaker does for ``request`` on host ``host``; return the
    job's environment (the request's ``Environment``, ``DETOPS_RUN_URL`` set to ``run_url``).

    Channels (File mode): each ``InputDataConfig`` S3 prefix of the run is copied from the local
    ``run_dir`` into ``root/input/data/<channel>/`` (the prefix's last part kept, as SageMaker does);
    ``input/config/hyperparameters.json`` is the request's with ``run_url`` replaced (the datastore
    the container sees), ``resourceconfig.json`` names ``hosts`` and ``host``.
    """
    import json
    import shutil

    s3_run = request["HyperParameters"]["run_url"]
    for ch in request["InputDataConfig"]:
        prefix = ch["DataSource"]["S3DataSource"]["S3Uri"].removeprefix(s3_run + "/")
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        target = root / "input" / "data" / ch["ChannelName"]
        target.mkdir(parents=True, exist_ok=True)
        for f in sorted(run_dir.rglob("*")):
            rel = f.relative_to(run_dir).as_posix()
            if f.is_file() and rel.startswith(prefix):
                dest = target / rel.removeprefix(base).lstrip("/")
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(f, dest)
    config = root / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "hyperparameters.json").write_text(json.dumps({**request["HyperParameters"], "run_url": run_url}))
    (config / "resourceconfig.json").write_text(json.dumps({"current_host": host, "hosts": hosts,
                                                            "network_interface_name": "eth0"}))
    return {**request["Environment"], "DETOPS_RUN_URL": run_url}


def tiny_voc_config(config_dir: Path, datasets: Path, datastore: str = "/unused/datastore") -> Path:
    """Write a 16-image fake VOC data set to ``datasets/tiny shapes`` and the tiny run config naming it
    through ``${DETOPS_DATASETS}`` (as a cloud job sees its mounted data) to ``config_dir/tiny.yaml``;
    tracking on, SavedModel export only. Returns the config file."""
    import sys

    import yaml

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
    from training_fakes import make_voc_dataset, tiny_config_tree

    data = make_voc_dataset(datasets / "tiny shapes", n=16)
    tree = tiny_config_tree(data, Path(datastore), steps=2)
    tree["data"] = {k: v.replace(str(datasets), "${DETOPS_DATASETS}") for k, v in tree["data"].items()}
    tree["tracking"] = {"enabled": True}
    tree["export"]["tflite"] = False
    config = config_dir / "tiny.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump(tree))
    return config
