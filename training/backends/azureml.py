"""Azure ML adapter (azure-ai-ml, SDK v2): the pipeline as a pipeline job of four command steps.

Each step runs the same stage sequence as on a laptop (``detops run --stage <stage>``,
:func:`training.pipeline.run_stages`, which skips what ``run.json`` records complete) in the
training image from ACR, on a compute cluster. All steps write one run folder on a registered
datastore, ``azureml://datastores/<datastore>/paths/<project>/runs/<run id>/`` (the run layout of
docs/contracts.md), mounted read-write; each step takes the previous step's output as input, which
orders the steps. ``train`` runs on ``nodes`` machines with ``TensorFlowDistribution`` (Azure ML
sets ``TF_CONFIG``; :func:`training.distribute.strategy_from_env` reads it). The last step marks
the run complete (``run_stages`` does it once all four stages are recorded). ``DETOPS_RUN_ID``
and ``DETOPS_RUN_URL`` name the run in every step; Azure ML sets ``MLFLOW_TRACKING_URI`` to the
workspace, so ``evaluate`` logs its metrics to the job's experiment.

Settings (environment; none are secrets -- authentication is ``DefaultAzureCredential``: managed
identity, workload identity / OIDC in CI, or ``az login``):

=============================  ==================================================  =================
variable                       meaning                                             default
=============================  ==================================================  =================
``AZURE_SUBSCRIPTION_ID``      subscription of the workspace                       required to submit
``AZURE_RESOURCE_GROUP``       resource group of the workspace                     required to submit
``AZUREML_WORKSPACE``          Azure ML workspace name                             required to submit
``DETOPS_AML_COMPUTE``         compute cluster for the steps                       ``gpu-cluster``
``DETOPS_TRAINING_IMAGE``      training image in ACR (``<acr>.azurecr.io/...``)    required to submit
``DETOPS_AML_DATASTORE``       datastore holding the runs                          ``workspaceblobstore``
``DETOPS_DATASETS``            ``az://<container>/<path>``: the stack's datasets   (the datastore's
                               (read by the job as ``https://<account>.blob...``)  ``datasets`` folder)
``AZURE_STORAGE_ACCOUNT_NAME`` the storage account of ``az://`` datasets            required with ``az://``
``DETOPS_AML_DATASETS_PATH``   datasets folder inside the datastore (no az://)      ``datasets``
=============================  ==================================================  =================

Who reads and writes what: ``submit`` uploads the run config itself, with the submitter's identity, into
the run folder (``<run>/inputs/<config>``: the trainer may write the runs container and nothing else), so
azure-ai-ml never uploads a local file to the workspace's default datastore. Every step runs with the
compute cluster's managed identity (``ManagedIdentityConfiguration``: the stack gives each cluster's
identity read on ``datasets`` and write on ``runs``), never falling back to whatever identity a datastore
or the submitter has.
"""

from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.backends.base import (
    COMPLETED,
    FAILED,
    RUNNING,
    Backend,
    JobControl,
    Submission,
    SubmitOptions,
    new_run_id,
    out_folder,
    placeholder_env,
)
from training.errors import BackendError, ConfigError

#: Image used in dry runs when DETOPS_TRAINING_IMAGE is unset (shown, never pulled).
DRY_RUN_IMAGE = "detopsacr.azurecr.io/detops-training:0.1.0-gpu"


@dataclass
class AzureMLSettings:
    """Where and on what the pipeline job runs (see the module docstring for the variables)."""

    compute: str = "gpu-cluster"
    image: str = DRY_RUN_IMAGE
    datastore: str = "workspaceblobstore"
    datasets_path: str = "datasets"
    datasets_uri: str | None = None
    subscription_id: str | None = None
    resource_group: str | None = None
    workspace: str | None = None

    @classmethod
    def from_env(cls, *, for_submit: bool) -> AzureMLSettings:
        """Read the settings; with ``for_submit`` the workspace and image are required."""
        from training.settings import AzureSettings, CommonSettings, missing_settings

        az, common = AzureSettings.load(), CommonSettings.load()
        missing: list[tuple[Any, str]] = [(CommonSettings, "training_image")] if not common.training_image else []
        missing += [(AzureSettings, f) for f in ("subscription_id", "resource_group", "workspace") if not getattr(az, f)]
        if for_submit and missing:
            raise missing_settings(missing, "submit to Azure ML")
        return cls(
            compute=az.compute,
            image=common.training_image or DRY_RUN_IMAGE,
            datastore=az.datastore,
            datasets_path=az.datasets_path.strip("/"),
            datasets_uri=blob_url(str(common.datasets), az.storage_account_name) if str(common.datasets).startswith("az://") else None,
            subscription_id=az.subscription_id,
            resource_group=az.resource_group,
            workspace=az.workspace,
        )

    def datastore_uri(self, *parts: str) -> str:
        """``azureml://datastores/<datastore>/paths/<parts...>/``."""
        path = "/".join(p.strip("/") for p in parts if p.strip("/"))
        return f"azureml://datastores/{self.datastore}/paths/{path}/"

    def datasets(self) -> str:
        """The job's datasets input: the stack's datasets container (``DETOPS_DATASETS=az://...``) as a blob
        URL, else the ``datasets`` folder of the runs datastore."""
        return self.datasets_uri or self.datastore_uri(self.datasets_path)

    def config_uri(self, project: str, run_id: str, name: str) -> str:
        """Where ``submit`` puts the run config: ``<run folder>inputs/<name>`` on the datastore."""
        return self.datastore_uri(project, "runs", run_id, "inputs") + name


def blob_url(uri: str, account: str | None) -> str:
    """``az://<container>/<path>`` -> ``https://<account>.blob.core.windows.net/<container>/<path>/``: a storage
    path an Azure ML job input takes without a datastore ("Access data in a job": supported paths), read
    with the job's identity.

    Raises:
        ConfigError: no storage account (names AZURE_STORAGE_ACCOUNT_NAME).
    """
    if not account:
        raise ConfigError(f"DETOPS_DATASETS={uri} needs AZURE_STORAGE_ACCOUNT_NAME (the stack's storage account)")
    return f"https://{account}.blob.core.windows.net/{uri.removeprefix('az://').strip('/')}/"


def _steps(overrides: list[str], *, run_id: str, run_uri: str, settings: AzureMLSettings, nodes: int) -> dict[str, Any]:
    """The four command builders (``azure.ai.ml.command``), one per stage, keyed by stage name."""
    from training.cloud.azure import quiet_sdk

    quiet_sdk()
    from azure.ai.ml import Input, Output, TensorFlowDistribution, command
    from azure.ai.ml.entities import Environment, ManagedIdentityConfiguration

    if nodes < 1:
        raise ConfigError(f"nodes must be >= 1, got {nodes}")
    env = Environment(image=settings.image)
    sets = "".join(f" --set {shlex.quote(s)}" for s in overrides)
    common: dict[str, Any] = {
        "environment": env,
        "compute": settings.compute,
        "outputs": {"run": Output(type="uri_folder", path=run_uri, mode="rw_mount")},
        "environment_variables": {"DETOPS_RUN_ID": run_id, "DETOPS_RUN_URL": run_uri, "TF_CPP_MIN_LOG_LEVEL": "1"},
        # data access as the compute cluster's managed identity (the module docstring)
        "identity": ManagedIdentityConfiguration(),
    }
    run_in = {"run": Input(type="uri_folder", mode="ro_mount")}
    def step(stage: str, display: str, **kw: Any):
        # every step is the one stage sequence (training.pipeline.run_stages), one --stage at a time
        head = "DETOPS_DATASETS=${{inputs.datasets}} detops run ${{inputs.config}}" if stage == "prepare" else "detops run"
        return command(
            name=stage,
            display_name=display,
            command=f"{head} --run-dir ${{{{outputs.run}}}} --stage {stage}{sets if stage == 'prepare' else ''}",
            **kw,
            **common,
        )

    return {
        "prepare": step(
            "prepare", "prepare: ingest, validate, split, TFRecords",
            inputs={"config": Input(type="uri_file"), "datasets": Input(type="uri_folder", mode="ro_mount")},
        ),
        "train": step(
            "train", f"train on {nodes} node(s)",
            inputs=dict(run_in),
            distribution=TensorFlowDistribution(worker_count=nodes, parameter_server_count=0),
            instance_count=nodes,
        ),
        "evaluate": step("evaluate", "evaluate: COCO metrics on train/val/test (-> MLflow)", inputs=dict(run_in)),
        "export": step("export", "export: SavedModel, TFLite, parity; the run is marked complete", inputs=dict(run_in)),
    }


def build_pipeline_job(
    config_path: str,
    overrides: list[str],
    *,
    project: str,
    run_id: str,
    settings: AzureMLSettings,
    nodes: int = 1,
    experiment_name: str | None = None,
):
    """Build the ``azure.ai.ml.entities.PipelineJob`` prepare -> train -> evaluate -> export.

    Args:
        config_path: the run config file as the job should reference it (uploaded by the SDK on
            submit; in dry-run specs a path relative to the YAML).
        overrides: ``--set key=value`` strings, passed to ``detops prepare`` (shell-quoted).
        project, run_id: name the run folder ``<project>/runs/<run_id>/`` on the datastore.
        nodes: machines for ``train`` (``TensorFlowDistribution(worker_count=nodes)``).

    Returns:
        the pipeline job (not submitted); its ``jobs`` are command nodes named after the stages.

    Raises:
        ConfigError: ``nodes`` < 1.
    """
    from azure.ai.ml import Input
    from azure.ai.ml.dsl import pipeline

    run_uri = settings.datastore_uri(project, "runs", run_id)
    steps = _steps(overrides, run_id=run_id, run_uri=run_uri, settings=settings, nodes=nodes)

    @pipeline(
        None,  # func=None explicitly: azure-ai-ml's typing overload for the decorator form has no default
        name=f"detops_{project}".replace("-", "_").replace(".", "_"),
        display_name=f"detops {project} {run_id}",
        description="prepare -> train -> evaluate -> export (detops)",
        default_compute=settings.compute,
    )
    def detops_pipeline(config, datasets):
        prepare = steps["prepare"](config=config, datasets=datasets)
        train = steps["train"](run=prepare.outputs.run)
        evaluate = steps["evaluate"](run=train.outputs.run)
        export = steps["export"](run=evaluate.outputs.run)
        return {"run": export.outputs.run}

    job = detops_pipeline(
        config=Input(type="uri_file", path=config_path),
        datasets=Input(type="uri_folder", path=settings.datasets()),
    )
    # azure-ai-ml annotates PipelineJob.outputs as dict[str, str | Output]; at run time it is an attribute dict
    job.outputs.run.path = run_uri  # type: ignore[attr-defined]
    job.outputs.run.mode = "rw_mount"  # type: ignore[attr-defined]
    job.experiment_name = experiment_name or f"detops-{project}"
    job.tags = {"detops.run_id": run_id, "detops.project": project}
    return job


def build_step_jobs(
    config_path: str, overrides: list[str], *, project: str, run_id: str, settings: AzureMLSettings, nodes: int = 1
) -> dict[str, Any]:
    """Each stage as a standalone ``CommandJob`` on the same run folder (to re-run one stage,
    e.g. ``evaluate`` after a fix). Inputs are concrete datastore paths, not pipeline bindings."""
    from azure.ai.ml import Input

    run_uri = settings.datastore_uri(project, "runs", run_id)
    steps = _steps(overrides, run_id=run_id, run_uri=run_uri, settings=settings, nodes=nodes)
    run = Input(type="uri_folder", path=run_uri, mode="ro_mount")
    nodes_ = {
        "prepare": steps["prepare"](
            config=Input(type="uri_file", path=config_path),
            datasets=Input(type="uri_folder", path=settings.datasets(), mode="ro_mount"),
        ),
        "train": steps["train"](run=run),
        "evaluate": steps["evaluate"](run=run),
        "export": steps["export"](run=run),
    }
    jobs = {}
    for name, node in nodes_.items():
        job = node._to_job()
        job.name = None
        job.experiment_name = f"detops-{project}"
        job.tags = {"detops.run_id": run_id, "detops.project": project, "detops.stage": name}
        jobs[name] = job
    return jobs


def upload_config(config: Path, uri: str, client: Any = None) -> None:
    """Copy the run config to ``uri`` (an ``azureml://`` datastore path) with the caller's own identity.

    Raises:
        BackendError: the write failed (names the URI; e.g. the identity may not write the container).
    """
    from training import storage
    from training.cloud.azure import resolve_datastore_url

    target = resolve_datastore_url(uri, client)
    try:
        storage.write_bytes(target, config.read_bytes())
    except Exception as e:  # adlfs / azure.core errors -- reported, not a traceback
        raise BackendError(f"uploading the run config to {uri}: {type(e).__name__}: {e}") from e


def validate_job(job) -> None:
    """Run azure-ai-ml's own validation of a job entity.

    ``PipelineJob._validate()`` returns a result; ``CommandJob._validate()`` raises (it checks
    that every ``${{inputs.x}}`` of the command is a defined input, the environment, the command).

    Raises:
        ConfigError: with azure-ai-ml's messages when the spec is invalid.
    """
    from azure.ai.ml.exceptions import ValidationException

    try:
        result = job._validate()
    except ValidationException as e:
        raise ConfigError(f"Azure ML rejected the {getattr(job, 'type', 'job')} spec: {e}") from e
    if result is not None and not result.passed:
        raise ConfigError(f"Azure ML rejected the {getattr(job, 'type', 'job')} spec: {result.error_messages}")


def _relative_paths(node: Any, prefix: str) -> Any:
    """Rewrite local paths under ``prefix`` as ``./<rest>`` everywhere in a YAML tree.

    The SDK dumps a not-yet-uploaded local path as ``azureml:<absolute path>``; a spec should
    say ``./inputs/<config>`` (relative to the YAML), which ``load_job`` resolves.
    """
    if isinstance(node, dict):
        return {k: _relative_paths(v, prefix) for k, v in node.items()}
    if isinstance(node, list):
        return [_relative_paths(v, prefix) for v in node]
    if isinstance(node, str):
        for head in ("azureml:" + prefix, prefix):
            if node.startswith(head):
                return "./" + node[len(head):]
    return node


def dump_specs(job, step_jobs: dict[str, Any], folder: Path) -> dict[str, str]:
    """Write the pipeline job and each standalone step job as YAML under ``folder``.

    Local inputs inside ``folder`` (the copied run config) are written relative to the YAML, so
    the specs hold no machine path and load from wherever the folder is moved. Returns
    ``{"pipeline": path, "prepare": path, ...}``; every file loads back with
    ``azure.ai.ml.load_job`` and passes its validation (tested).
    """
    import yaml

    prefix = str(folder.resolve()) + "/"
    specs = {"pipeline": str(folder / "pipeline_job.yaml")}
    targets = [("pipeline", job)] + list(step_jobs.items())
    for name, entity in targets:
        path = folder / ("pipeline_job.yaml" if name == "pipeline" else f"{name}.command_job.yaml")
        entity.dump(str(path))
        tree = _relative_paths(yaml.safe_load(path.read_text()), prefix)
        path.write_text(yaml.safe_dump(tree, sort_keys=True, width=10_000))
        specs[name] = str(path)
    return specs


#: Azure ML job statuses that mean "ended well" / "ended badly" (anything else is still running).
AML_COMPLETED = {"Completed"}
AML_FAILED = {"Failed", "Canceled", "NotResponding"}


class AzureMLBackend(Backend, JobControl):
    """Submit the pipeline as an Azure ML pipeline job (see the module docstring)."""

    name = "azureml"

    def __init__(self, ml_client: Any = None) -> None:
        self._ml_client = ml_client

    def ml_client(self, settings: AzureMLSettings):
        """An ``azure.ai.ml.MLClient`` for the workspace (``DefaultAzureCredential``)."""
        if self._ml_client is None:
            from training.cloud import azure
            from training.settings import AzureSettings

            ids = {"subscription_id": settings.subscription_id, "resource_group": settings.resource_group,
                   "workspace": settings.workspace}
            self._ml_client = azure.ml_client(AzureSettings.load().model_copy(update=ids), what="submit to Azure ML")
        return self._ml_client

    def preflight(self, settings: AzureMLSettings, nodes: int, console: Any = None) -> dict[str, Any]:
        """Check that cluster ``settings.compute`` can get ``nodes`` nodes: its ``max_instances``
        and the region's vCPU quota of its VM family and tier (:mod:`training.cloud.quota`).

        Returns the checks as a dict; raises QuotaError (exit 4) with the numbers when one is short.
        """
        from training.cloud.quota import azureml_preflight, enforce

        result = azureml_preflight(self.ml_client(settings), settings.compute, nodes, workspace=settings.workspace,
                                   subscription_id=settings.subscription_id)
        return enforce(result, f"the Azure ML job ({nodes} node(s) of cluster {settings.compute})", console)

    def job_state(self, job: str) -> tuple[str, str]:
        """State of pipeline job ``job`` in the workspace."""
        try:
            status = str(self.ml_client(AzureMLSettings.from_env(for_submit=False)).jobs.get(job).status)
        except Exception as e:  # azure.core.exceptions.*
            raise BackendError(f"Azure ML job {job}: {type(e).__name__}: {e}") from e
        return (COMPLETED if status in AML_COMPLETED else FAILED if status in AML_FAILED else RUNNING), status

    def cancel(self, job: str) -> str:
        """Cancel pipeline job ``job`` (and its steps)."""
        client = self.ml_client(AzureMLSettings.from_env(for_submit=False))
        try:
            client.jobs.begin_cancel(job)
            return str(client.jobs.get(job).status)
        except Exception as e:  # azure.core.exceptions.*
            raise BackendError(f"cancelling Azure ML job {job}: {type(e).__name__}: {e}") from e

    def submit(self, options: SubmitOptions) -> Submission:
        """Build, validate and (unless ``dry_run``) submit the pipeline job; stream it with ``wait``.

        With ``preflight`` the cluster size and vCPU quota are checked (:meth:`preflight`) before
        the job is created.

        The run config goes to the run folder (:meth:`AzureMLSettings.config_uri`), uploaded here with the
        submitter's identity; the specs reference it there. A dry run writes ``pipeline_job.yaml``, one
        ``<stage>.command_job.yaml`` per step and the config it would upload (``inputs/<name>``) to
        ``<out_dir>/azureml/``, and uploads nothing.
        """
        from training.pipeline import load_run_config

        o = options
        overrides, config = list(o.overrides), Path(o.config)
        with placeholder_env(DETOPS_DATASETS="/mnt/azureml/datasets"):
            cfg = load_run_config(config, overrides=overrides)
        from training.experiment import get_preset

        get_preset(cfg.train.preset)  # an unknown preset fails here, not after a queue wait in the cloud
        settings = AzureMLSettings.from_env(for_submit=not o.dry_run)
        run_id = o.run_id or new_run_id()
        folder = out_folder(o.out_dir, self.name) if (o.dry_run or o.out_dir) else None
        config_ref = settings.config_uri(cfg.project, run_id, config.name)
        if folder is not None:
            (folder / "inputs").mkdir(exist_ok=True)
            shutil.copyfile(config, folder / "inputs" / config.name)
        kw: dict[str, Any] = {"project": cfg.project, "run_id": run_id, "settings": settings, "nodes": o.nodes}
        job = build_pipeline_job(config_ref, overrides, **kw)
        step_jobs = build_step_jobs(config_ref, overrides, **kw)
        for step in step_jobs.values():
            validate_job(step)
        specs = dump_specs(job, step_jobs, folder) if folder is not None else {}
        run_url = settings.datastore_uri(cfg.project, "runs", run_id)
        details = {
            "compute": settings.compute,
            "image": settings.image,
            "nodes": o.nodes,
            "steps": list(job.jobs),
            "experiment": job.experiment_name,
        }
        if o.dry_run:
            validate_job(job)
            details["preflight"] = "not run (a dry run makes no cloud calls)"
            return Submission(self.name, job.display_name, "planned", run_url, specs, details)
        validate_job(job)
        client = self.ml_client(settings)
        details["preflight"] = self.preflight(settings, o.nodes, o.console) if o.preflight else "skipped (--skip-preflight)"
        upload_config(config, config_ref, client)
        try:
            created = client.jobs.create_or_update(job)
            if o.console is not None:
                o.console.print(f"submitted {created.name}: {created.studio_url}")
            if o.wait:
                client.jobs.stream(created.name)
                created = client.jobs.get(created.name)
        except Exception as e:  # azure.core.exceptions.* -- reported, not a traceback
            raise BackendError(f"Azure ML job submission failed: {type(e).__name__}: {e}") from e
        details["studio_url"] = getattr(created, "studio_url", None)
        return Submission(self.name, created.name, str(created.status), run_url, specs, details)
