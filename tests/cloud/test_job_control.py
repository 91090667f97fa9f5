"""Submit returns at once; a later CI job waits (bounded) and a cancelled workflow cancels the cloud
job (issue 10, item 8): ``detops wait`` / ``detops cancel`` against moto's SageMaker, and the
bounded wait loop with a fake clock."""

from __future__ import annotations

import json

import pytest

from training.backends.base import COMPLETED, FAILED, RUNNING, JobControl
from training.errors import ConfigError


class Scripted(JobControl):
    """A job whose status calls return ``states`` in turn; time advances only through ``sleep``."""

    name = "scripted"

    def __init__(self, states):
        self.states, self.now, self.calls = list(states), 0.0, 0

    def job_state(self, job):
        self.calls += 1
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]

    def sleep(self, s):
        self.now += s

    def clock(self):
        return self.now


def test_wait_polls_until_the_job_ends():
    b = Scripted([(RUNNING, "Queued"), (RUNNING, "Running"), (COMPLETED, "Completed")])
    assert b.wait("j", timeout_s=3000, poll_s=30, sleep=b.sleep, clock=b.clock) == (COMPLETED, "Completed")
    assert b.calls == 3 and b.now == 60


def test_wait_gives_up_within_its_budget():
    b = Scripted([(RUNNING, "Running")])
    assert b.wait("j", timeout_s=3000, poll_s=30, sleep=b.sleep, clock=b.clock) == (RUNNING, "Running")
    assert b.now <= 3000 - 30 + 30  # never sleeps past the budget (the CI job's 58 minutes)


def test_wait_zero_asks_once():
    b = Scripted([(RUNNING, "Running")])
    b.wait("j", timeout_s=0, sleep=b.sleep, clock=b.clock)
    assert b.calls == 1 and b.now == 0


def test_local_backend_has_no_cloud_job(capsys):
    from detops.cli import main

    with pytest.raises(SystemExit) as e:
        main(["wait", "--backend", "local", "--job", "x"])
    assert e.value.code == 2


@pytest.fixture
def training_job(aws_env):
    """A training job created in moto's SageMaker; yields its name."""
    import boto3

    sm = boto3.client("sagemaker")
    name = "detops-bccd-20261201T120000-abc123"
    sm.create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/t@sha256:" + "a" * 64,
                                "TrainingInputMode": "File"},
        RoleArn="arn:aws:iam::123456789012:role/detops-sagemaker-execution",
        OutputDataConfig={"S3OutputPath": "s3://detops-runs/out"},
        ResourceConfig={"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        StoppingCondition={"MaxRuntimeInSeconds": 3600},
    )
    return name


def test_wait_reads_the_job_from_sagemaker(training_job, capsys):
    from detops.cli import main
    from training.backends.sagemaker import SageMakerBackend

    state, text = SageMakerBackend().job_state(training_job)
    assert state in (RUNNING, COMPLETED), text
    main(["wait", "--backend", "sagemaker", "--job", training_job, "--timeout-minutes", "0", "--still-running-ok"])
    text = capsys.readouterr().out
    out = json.loads(text[text.index("\n{") + 1 :] if not text.startswith("{") else text)
    assert out["job"] == training_job and out["state"] in (RUNNING, COMPLETED)


def test_cancel_stops_the_sagemaker_job(capsys):
    """moto has no StopTrainingJob: check the request with botocore's Stubber on a real client."""
    import boto3
    from botocore.stub import Stubber

    from training.backends.sagemaker import SageMakerBackend

    sm = boto3.client("sagemaker", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(sm) as stub:
        stub.add_response("stop_training_job", {}, {"TrainingJobName": "job-1"})
        stub.add_response("describe_training_job", _described("job-1", "Stopping"), {"TrainingJobName": "job-1"})
        assert SageMakerBackend(sagemaker_client=sm).cancel("job-1") == "Stopping"
        stub.assert_no_pending_responses()


def _described(name: str, status: str) -> dict:
    import datetime as dt

    return {
        "TrainingJobName": name, "TrainingJobArn": f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{name}",
        "ModelArtifacts": {"S3ModelArtifacts": "s3://b/m.tar.gz"}, "TrainingJobStatus": status,
        "SecondaryStatus": "Stopping", "AlgorithmSpecification": {"TrainingInputMode": "File"},
        "ResourceConfig": {"VolumeSizeInGB": 30}, "StoppingCondition": {}, "CreationTime": dt.datetime(2026, 12, 1),
    }


def test_a_stopped_job_fails_the_wait(monkeypatch):
    from detops.cli import main
    from training.backends.sagemaker import SageMakerBackend

    monkeypatch.setattr(SageMakerBackend, "job_state", lambda self, job: (FAILED, "Stopped"))
    with pytest.raises(SystemExit) as e:
        main(["wait", "--backend", "sagemaker", "--job", "j", "--timeout-minutes", "0"])
    assert e.value.code == 6  # a stopped job fails the evaluate job


def test_still_running_exit_codes(monkeypatch, capsys):
    from detops.cli import main
    from training.backends.sagemaker import SageMakerBackend

    monkeypatch.setattr(SageMakerBackend, "job_state", lambda self, job: (RUNNING, "InProgress"))
    with pytest.raises(SystemExit) as e:
        main(["wait", "--backend", "sagemaker", "--job", "j", "--timeout-minutes", "0"])
    assert e.value.code == 4
    assert main(["wait", "--backend", "sagemaker", "--job", "j", "--timeout-minutes", "0", "--still-running-ok"]) == 0


def test_wait_without_region_names_the_setting(monkeypatch):
    from training.backends.sagemaker import SageMakerBackend

    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    with pytest.raises(ConfigError, match="AWS_REGION"):
        SageMakerBackend().job_state("j")
