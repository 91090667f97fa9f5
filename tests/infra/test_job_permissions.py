"""What each CI job's identity must be allowed to do, for calls the IAM-enforcing moto server does not
serve (ECR layer pushes) or that a job makes as another identity than the one the other tests use:
the AWS program's policies (under mocks) through the project's IAM evaluator (``iam_eval.py``).

The images job runs as the trainer (.github/workflows/images.yml: environment ``training``;
.azure-pipelines/templates/images.yml: ``identity: trainer``) and ``scripts/images.sh`` pushes the
training image AND the serving image (and first asks the registry whether the commit's tag is there).
"""

from __future__ import annotations

import json

import pytest
from iam_eval import evaluate
from infra_helpers import run_cloud, stack_settings

#: What ``docker buildx build --push`` asks of ECR for one image (Amazon ECR User Guide, "Pushing a Docker
#: image": the IAM permissions a push needs), and what ``docker buildx imagetools inspect`` (images.sh: is
#: the commit's tag there already?) asks: the image manifest.
ECR_PUSH = ("ecr:BatchCheckLayerAvailability", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart",
            "ecr:CompleteLayerUpload", "ecr:PutImage")
ECR_INSPECT = ("ecr:BatchGetImage",)


@pytest.fixture(scope="module")
def aws_dev():
    return run_cloud("aws", stack_settings("aws", "dev"))


def policy_of(run, purpose: str) -> dict:
    """The inline policy document of ``purpose``'s GitHub role."""
    (policy,) = [r for r in run.of_type("aws:iam/rolePolicy:RolePolicy") if r.name.endswith(f"-{purpose}-access")]
    return json.loads(policy.inputs["policy"])


def test_the_images_job_identity_may_push_both_images(aws_dev) -> None:
    trainer = policy_of(aws_dev, "trainer")
    repositories = {r.inputs["name"]: r.outputs["arn"] for r in aws_dev.of_type("aws:ecr/repository:Repository")}
    assert sorted(repositories) == ["detops-dev/serving", "detops-dev/training"]
    denied = [f"{action} on {name}: {decision.reason}"
              for name, arn in sorted(repositories.items()) for action in ECR_PUSH + ECR_INSPECT
              if not (decision := evaluate([trainer], action, arn)).allowed]
    assert denied == []
    assert evaluate([trainer], "ecr:GetAuthorizationToken", "*").allowed
