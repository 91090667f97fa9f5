"""SageMaker adapter (boto3): a training job over the channels and hyperparameters of seed 003.

``detops submit --backend sagemaker`` runs ``prepare`` where it is called (ingest, split and
TFRecords are cheap) into a run folder on S3, then starts a SageMaker training job that runs
``train -> evaluate -> export`` of that same run in the training image from ECR:

==============  ====================================================  ==========================
channel         S3 source (inside the run folder)                     container path
==============  ====================================================  ==========================
``train``       ``tf_records/train-`` (prefix: every train shard)      /opt/ml/input/data/train
``validation``  ``tf_records/val-``                                    /opt/ml/input/data/validation
``config``      ``model_config/`` (experiment.yaml)                    /opt/ml/input/data/config
``label``       ``tf_records/label_map.pbtxt``                         /opt/ml/input/data/label
``checkpoint``  ``train.init_checkpoint`` when it is on S3 (optional)   /opt/ml/input/data/checkpoint
==============  ====================================================  ==========================

Hyperparameters (seed 003): ``num_steps`` (training steps) and ``quantize`` (also export the int8
TFLite model), plus ``run_url`` (where the container publishes the finished run). Checkpoints go
to ``model_training/checkpoints/`` of the run through ``CheckpointConfig`` (SageMaker syncs
/opt/ml/checkpoints), so a managed-spot interruption resumes from the last checkpoint. With
``nodes > 1`` SageMaker starts that many instances; each gets ``SM_HOSTS`` / ``SM_CURRENT_HOST``,
which :func:`training.distribute.strategy_from_env` turns into ``TF_CONFIG``.

The ``sagemaker`` Python SDK v3 (3.27) pins ``rich<15`` against the project's ``rich==15``, so this
adapter uses boto3 only. Settings (environment; authentication is boto3's chain: an instance /
task role, OIDC web identity in CI; never keys in files):

==============================  ==============================================  ==================
variable                        meaning                                         default
==============================  ==============================================  ==================
``DETOPS_SM_ROLE_ARN``          SageMaker execution role                        required to submit
``DETOPS_TRAINING_IMAGE``       training image in ECR                           required to submit
``DETOPS_SM_INSTANCE_TYPE``     training instance type                          ``ml.g5.xlarge``
``DETOPS_SM_SPOT``              managed spot training (``true``/``false``)      ``true``
``DETOPS_SM_MAX_RUN``           max training seconds                            ``86400``
``DETOPS_SM_KMS_KEY_ID``        KMS key for output and EBS volumes (not sent    unset
                                as a volume key for instance types with local
                                storage: :data:`LOCAL_STORAGE_FAMILIES`)
``DETOPS_DATASTORE``            ``s3://bucket/prefix`` run root (if the config  from the config
                                does not say ``s3://``)
==============================  ==============================================  ==================
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from training import storage
from training.backends import base
from training.backends.base import Backend, JobControl, Submission, SubmitOptions, new_run_id, out_folder
from training.errors import BackendError, ConfigError

#: Images used in dry runs when unset (shown, never pulled).
DRY_RUN_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/detops-training:0.1.0-gpu"
DRY_RUN_ROLE = "arn:aws:iam::123456789012:role/detops-sagemaker-execution"
#: Where SageMaker syncs checkpoints inside the container (CheckpointConfig.LocalPath default).
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
CHANNELS = ("train", "validation", "config", "label", "checkpoint")
#: ``AlgorithmSpecification.MetricDefinitions``: SageMaker scans the job's log for these regexes
#: and charts the first group as the metric. They match the trainer's progress line
#: (``step 40/480  loss 0.8123  0.45 steps/s  ETA 980s``, :mod:`training.train`) and the
#: evaluation line per split (``evaluation test: AP=0.2620 AP50=0.5310 AP75=0.2400``,
#: :func:`training.pipeline.evaluate`); tests run them over a real container run's output.
_NUM = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
METRIC_DEFINITIONS: list[dict[str, str]] = [
    {"Name": "train:loss", "Regex": rf"step [0-9]+/[0-9]+ +loss {_NUM}"},
    {"Name": "train:steps_per_second", "Regex": rf"loss \S+ +{_NUM} steps/s"},
    *(
        {"Name": f"{split}:{metric}", "Regex": rf"evaluation {split}: .*\b{metric}={_NUM}"}
        for split in ("train", "val", "test")
        for metric in ("AP", "AP50", "AP75")
    ),
]


#: Instance families with local (NVMe) instance storage. SageMaker refuses ``ResourceConfig.VolumeKmsKeyId``
#: for them (botocore's service model, sagemaker 2017-07-24, ``ResourceConfig.VolumeKmsKeyId``: "You can't
#: request a VolumeKmsKeyId when using an instance type with local storage"; the instance hardware
#: encrypts local storage). The families are those with instance store volumes in the EC2 User Guide,
#: "Instance store volume limits for EC2 instances"
#: (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instance-store-volumes.html), which an
#: ``ml.<family>.<size>`` SageMaker type shares with EC2 ``<family>.<size>``; every size of these families
#: has instance storage.
LOCAL_STORAGE_FAMILIES = frozenset({
    # general purpose, compute and memory optimized with a "d" (local disk) variant
    "m5d", "m5ad", "m5dn", "m6gd", "m6id", "m6idn", "m7gd", "c5d", "c6gd", "c6id", "c7gd",
    "r5d", "r5ad", "r5dn", "r6gd", "r6id", "r6idn", "r7gd", "x1", "x1e", "x2gd", "x2idn", "x2iedn", "z1d",
    # storage optimized
    "d2", "d3", "d3en", "h1", "i3", "i3en", "i4g", "i4i", "im4gn", "is4gen",
    # accelerated computing (ml.p3 and ml.p2, ml.g5g, ml.inf1/inf2 have EBS storage only)
    "dl1", "f1", "g4ad", "g4dn", "g5", "g6", "g6e", "gr6", "p3dn", "p4d", "p4de", "p5", "p5e", "p5en",
    "trn1", "trn1n", "trn2",
})


def has_local_storage(instance_type: str) -> bool:
    """True when the SageMaker (``ml.g4dn.xlarge``) or EC2 (``g4dn.xlarge``) instance type has local
    instance storage (its family is in :data:`LOCAL_STORAGE_FAMILIES`), i.e. takes no volume KMS key."""
    parts = instance_type.split(".")
    family = parts[1] if len(parts) == 3 and parts[0] == "ml" else parts[0]
    return family in LOCAL_STORAGE_FAMILIES


@dataclass
class SageMakerSettings:
    """Role, image and resources of the training job (see the module docstring)."""

    role_arn: str = DRY_RUN_ROLE
    image: str = DRY_RUN_IMAGE
    instance_type: str = "ml.g5.xlarge"
    spot: bool = True
    max_run: int = 86400
    kms_key_id: str | None = None

    @classmethod
    def from_env(cls, *, for_submit: bool) -> SageMakerSettings:
        """Read the settings; with ``for_submit`` the role and the image are required."""
        from training.settings import AwsSettings, CommonSettings, missing_settings

        aws, common = AwsSettings.load(), CommonSettings.load()
        missing: list[tuple[Any, str]] = [(AwsSettings, "sm_role_arn")] if not aws.sm_role_arn else []
        missing += [(CommonSettings, "training_image")] if not common.training_image else []
        if for_submit and missing:
            raise missing_settings(missing, "submit to SageMaker")
        return cls(
            role_arn=aws.sm_role_arn or DRY_RUN_ROLE,
            image=common.training_image or DRY_RUN_IMAGE,
            instance_type=aws.sm_instance_type,
            spot=aws.sm_spot,
            max_run=aws.sm_max_run,
            kms_key_id=aws.sm_kms_key_id,
        )


def channels(run_url: str, init_checkpoint: str | None = None) -> list[dict[str, Any]]:
    """``InputDataConfig`` of the training job: the seed-003 channels inside run folder ``run_url``.

    ``checkpoint`` is included only when ``init_checkpoint`` is an ``s3://`` prefix.

    Raises:
        ConfigError: ``run_url`` is not an ``s3://`` URL.
    """
    if not run_url.startswith("s3://"):
        raise ConfigError(f"SageMaker channels need an s3:// run folder, got {run_url!r} (set datastore: s3://...)")

    def ch(name: str, uri: str, content_type: str) -> dict[str, Any]:
        return {
            "ChannelName": name,
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri,
                                            "S3DataDistributionType": "FullyReplicated"}},
            "ContentType": content_type,
            "InputMode": "File",
        }

    out = [
        ch("train", storage.join(run_url, "tf_records", "train-"), "application/x-tfrecord"),
        ch("validation", storage.join(run_url, "tf_records", "val-"), "application/x-tfrecord"),
        ch("config", storage.join(run_url, "model_config") + "/", "application/x-yaml"),
        ch("label", storage.join(run_url, "tf_records", "label_map.pbtxt"), "text/plain"),
    ]
    if init_checkpoint and init_checkpoint.startswith("s3://"):
        out.append(ch("checkpoint", init_checkpoint, "application/octet-stream"))
    return out


def build_training_job(
    *, job_name: str, run_url: str, settings: SageMakerSettings, nodes: int, num_steps: int, quantize: bool,
    init_checkpoint: str | None = None, project: str = "detops",
) -> dict[str, Any]:
    """The ``CreateTrainingJob`` request (boto3 keyword arguments).

    Args:
        job_name: unique job name (SageMaker: 1-63 characters, letters, digits and hyphens).
        run_url: the prepared run folder on S3.
        nodes: ``ResourceConfig.InstanceCount``.
        num_steps, quantize: seed-003 hyperparameters (strings in the request, as SageMaker wants).

    With ``settings.kms_key_id`` the output is encrypted with that key, and so is the EBS volume, except
    on instance types with local storage (:func:`has_local_storage`), where SageMaker refuses a volume key.

    Raises:
        ConfigError: bad job name, nodes < 1, non-S3 run folder.
    """
    import re

    if not re.fullmatch(r"[A-Za-z0-9](-*[A-Za-z0-9]){0,62}", job_name):
        raise ConfigError(f"SageMaker job name {job_name!r}: 1-63 letters, digits or hyphens")
    if nodes < 1:
        raise ConfigError(f"nodes must be >= 1, got {nodes}")
    stopping: dict[str, int] = {"MaxRuntimeInSeconds": settings.max_run}
    if settings.spot:
        stopping["MaxWaitTimeInSeconds"] = settings.max_run * 2
    req: dict[str, Any] = {
        "TrainingJobName": job_name,
        "AlgorithmSpecification": {"TrainingImage": settings.image, "TrainingInputMode": "File",
                                   "MetricDefinitions": METRIC_DEFINITIONS},
        "RoleArn": settings.role_arn,
        "HyperParameters": {"num_steps": str(num_steps), "quantize": str(bool(quantize)), "run_url": run_url},
        "InputDataConfig": channels(run_url, init_checkpoint),
        "OutputDataConfig": {"S3OutputPath": storage.join(run_url, "sagemaker") + "/"},
        "ResourceConfig": {"InstanceType": settings.instance_type, "InstanceCount": nodes, "VolumeSizeInGB": 50},
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": settings.spot,
        "CheckpointConfig": {"S3Uri": storage.join(run_url, "model_training", "checkpoints") + "/",
                             "LocalPath": CHECKPOINT_LOCAL_PATH},
        "Environment": {"DETOPS_RUN_URL": run_url, "DETOPS_RUN_ID": run_url.rstrip("/").rsplit("/", 1)[-1],
                        "TF_CPP_MIN_LOG_LEVEL": "1"},
        "Tags": [{"Key": "detops:project", "Value": project}, {"Key": "detops:run_url", "Value": run_url}],
    }
    if settings.kms_key_id:
        req["OutputDataConfig"]["KmsKeyId"] = settings.kms_key_id
        if not has_local_storage(settings.instance_type):  # local NVMe is encrypted by the instance itself
            req["ResourceConfig"]["VolumeKmsKeyId"] = settings.kms_key_id
    return req


class SageMakerBackend(Backend, JobControl):
    """Prepare here, then train/evaluate/export in a SageMaker training job (module docstring)."""

    name = "sagemaker"

    def __init__(self, sagemaker_client: Any = None, poll_seconds: float = 30.0, quotas_client: Any = None) -> None:
        self._client = sagemaker_client
        self._quotas_client = quotas_client
        self.poll_seconds = poll_seconds

    @property
    def client(self):
        """The boto3 SageMaker client (created on first use)."""
        if self._client is None:
            from training.cloud import aws

            self._client = aws.client("sagemaker")
        return self._client

    def job_state(self, job: str) -> tuple[str, str]:
        """State of training job ``job`` (``InProgress``/``Stopping`` = running)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            desc = self.client.describe_training_job(TrainingJobName=job)
        except (ClientError, BotoCoreError) as e:
            raise BackendError(f"SageMaker training job {job}: {e}") from e
        status = desc["TrainingJobStatus"]
        text = status + (f": {desc['FailureReason']}" if desc.get("FailureReason") else "")
        return (base.COMPLETED if status == "Completed" else base.FAILED if status in ("Failed", "Stopped")
                else base.RUNNING), text

    def cancel(self, job: str) -> str:
        """Stop training job ``job`` (``StopTrainingJob``; a checkpointed spot job keeps its checkpoints)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.stop_training_job(TrainingJobName=job)
            return str(self.client.describe_training_job(TrainingJobName=job)["TrainingJobStatus"])
        except (ClientError, BotoCoreError) as e:
            raise BackendError(f"stopping SageMaker training job {job}: {e}") from e

    def preflight(self, settings: SageMakerSettings, nodes: int, console: Any = None) -> dict[str, Any]:
        """Check the Service Quotas value ``<instance type> for [spot ]training job usage`` against
        ``nodes`` plus the instances already held by running jobs (:mod:`training.cloud.quota`).

        Returns the checks as a dict; raises QuotaError (exit 4) with the numbers when it is short.
        """
        from training.cloud.quota import enforce, sagemaker_preflight

        usage = "spot training job" if settings.spot else "training job"
        result = sagemaker_preflight(settings.instance_type, nodes, usage=usage, sm_client=self.client,
                                     quotas_client=self._quotas_client)
        what = f"the SageMaker {usage} ({nodes} x {settings.instance_type})"
        return enforce(result, what, console)

    def start(self, request: dict[str, Any], *, wait: bool = True, console: Any = None) -> dict[str, Any]:
        """Create the training job; with ``wait`` poll (printing status changes) until it ends.

        Returns ``DescribeTrainingJob``'s answer. Raises BackendError when SageMaker refuses the
        job or the job ends Failed/Stopped.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.create_training_job(**request)
            desc = self.client.describe_training_job(TrainingJobName=request["TrainingJobName"])
            last = None
            while wait and desc["TrainingJobStatus"] in ("InProgress", "Stopping"):
                status = (desc["TrainingJobStatus"], desc.get("SecondaryStatus"))
                if console is not None and status != last:
                    console.print(f"{request['TrainingJobName']}: {status[0]} / {status[1]}")
                last = status
                time.sleep(self.poll_seconds)
                desc = self.client.describe_training_job(TrainingJobName=request["TrainingJobName"])
        except (ClientError, BotoCoreError) as e:
            raise BackendError(f"SageMaker training job {request['TrainingJobName']}: {e}") from e
        if wait and desc["TrainingJobStatus"] in ("Failed", "Stopped"):
            raise BackendError(
                f"SageMaker training job {request['TrainingJobName']} {desc['TrainingJobStatus']}: "
                f"{desc.get('FailureReason', 'no reason given')}"
            )
        return desc

    def submit(self, options: SubmitOptions) -> Submission:
        """Prepare the run on S3 and start the training job (``dry_run``: write the request only).

        The run config's ``datastore`` must be ``s3://...`` (e.g. ``DETOPS_DATASTORE=s3://bucket/runs``).
        A dry run writes ``<out_dir>/sagemaker/create_training_job.json`` and needs no credentials.
        With ``preflight`` the quota is checked (:meth:`preflight`) before anything is prepared or created.
        """
        import contextlib

        from training import pipeline
        from training.backends.base import placeholder_env
        from training.experiment import get_preset

        # prepare runs here at submit time; a dry run only plans, so the dataset folder need not exist
        o = options
        with placeholder_env(DETOPS_DATASETS="/datasets") if o.dry_run else contextlib.nullcontext():
            cfg = pipeline.load_run_config(o.config, overrides=list(o.overrides))
        if not cfg.datastore.startswith("s3://"):
            raise ConfigError(
                f"{o.config}: datastore is {cfg.datastore!r}; the SageMaker backend needs s3://bucket/prefix "
                "(set DETOPS_DATASTORE or --set datastore=s3://...)"
            )
        settings = SageMakerSettings.from_env(for_submit=not o.dry_run)
        run_id = o.run_id or new_run_id()
        run_url = storage.join(cfg.datastore, cfg.project, "runs", run_id)
        num_steps = cfg.train.steps or int(get_preset(cfg.train.preset).defaults["steps"])
        # <prefix>-<project>-<run id>: the prefix is the stack's (DETOPS_SM_NAME_PREFIX), which the IAM role allows
        from training import naming

        job_name = naming.training_job_name(cfg.project, run_id)
        request = build_training_job(
            job_name=job_name, run_url=run_url, settings=settings, nodes=o.nodes, num_steps=num_steps,
            quantize=cfg.export.int8, init_checkpoint=cfg.train.init_checkpoint, project=cfg.project,
        )
        specs: dict[str, str] = {}
        if o.dry_run or o.out_dir:
            path = out_folder(o.out_dir, self.name) / "create_training_job.json"
            path.write_text(json.dumps(request, indent=2) + "\n")
            specs["training_job"] = str(path)
        details = {"channels": {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]},
                   "hyperparameters": request["HyperParameters"], "instances": o.nodes,
                   "instance_type": settings.instance_type, "spot": settings.spot}
        if o.dry_run:
            details["preflight"] = "not run (a dry run makes no cloud calls)"
            return Submission(self.name, job_name, "planned", run_url, specs, details)
        details["preflight"] = self.preflight(settings, o.nodes, o.console) if o.preflight else "skipped (--skip-preflight)"
        pipeline.prepare(cfg, run_dir=run_url, console=o.console, run_id=run_id)
        desc = self.start(request, wait=o.wait, console=o.console)
        details["arn"] = desc.get("TrainingJobArn")
        return Submission(self.name, job_name, desc["TrainingJobStatus"], run_url, specs, details)
