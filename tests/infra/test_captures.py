"""Where the endpoints' captured requests (callers' images) go (issue 33): no CI identity reads or writes
them, and the stacks delete them after ``capture_retention_days``."""

from __future__ import annotations

import json

import pytest
from iam_eval import evaluate
from infra_helpers import run_cloud, stack_settings, with_settings

from infra.policies import rules

CI_ROLES = ("trainer", "registrar", "approver", "deployer")


def _buckets(run) -> dict[str, str]:
    return {r.name.rsplit("-", 1)[-1]: r.outputs["arn"] for r in run.of_type(rules.AWS_BUCKET)}


def _role_policies(run) -> dict[str, dict]:
    """The inline policy of each CI role the stack has (a prod stack has no trainer)."""
    found = {}
    for r in run.of_type(rules.AWS_ROLE_POLICY):
        for purpose in CI_ROLES:
            if r.name.endswith(f"-{purpose}-access"):
                found[purpose] = json.loads(r.inputs["policy"])
    return found


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_no_ci_role_reads_or_writes_captures_but_the_endpoints_write_them(program_runs, stack: str) -> None:
    run = program_runs["aws", stack]
    runs = _buckets(run)["runs"]
    capture, other = f"{runs}/captures/bccd/7/2026/12/07/16/x.jsonl", f"{runs}/bccd/runs/r1/run.json"
    policies = _role_policies(run)
    assert set(policies) == ({"trainer", "registrar", "approver", "deployer"} if stack == "dev" else {"deployer"})
    for purpose, policy in policies.items():
        for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
            decision = evaluate([policy], action, capture)
            assert not decision.allowed and "explicit deny" in decision.reason, (purpose, action)
        assert evaluate([policy], "s3:GetObject", other).allowed, purpose  # the rest of the runs bucket is as before
    sagemaker = json.loads(next(r for r in run.of_type(rules.AWS_ROLE_POLICY) if "sagemaker" in r.name).inputs["policy"])
    assert evaluate([sagemaker], "s3:PutObject", capture).allowed  # SageMaker data capture writes as this role


def test_aws_captures_expire_after_the_retention_days(program_runs) -> None:
    def rules_of(run) -> dict[str, dict]:
        lifecycle = next(r for r in run.of_type("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")
                         if r.name.endswith("-runs-lifecycle"))
        return {rule["id"]: rule for rule in lifecycle.inputs["rules"]}

    expire = rules_of(program_runs["aws", "dev"])["expire-captures"]
    assert expire["filter"] == {"prefix": "captures/"} and expire["status"] == "Enabled"
    assert expire["expiration"]["days"] == 30 and expire["noncurrentVersionExpiration"]["noncurrentDays"] == 1
    longer = run_cloud("aws", with_settings(stack_settings("aws", "dev"), capture_retention_days=365))
    assert rules_of(longer)["expire-captures"]["expiration"]["days"] == 365
    data_lifecycle = next(r for r in program_runs["aws", "dev"].of_type(
        "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration") if r.name.endswith("-data-lifecycle"))
    assert [rule["id"] for rule in data_lifecycle.inputs["rules"]] == ["expire-noncurrent-versions"]  # datasets kept


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_azure_captures_container_expires_after_the_retention_days(program_runs, stack: str) -> None:
    (policy,) = program_runs["azure", stack].of_type("azure-native:storage:ManagementPolicy")
    (rule,) = policy.inputs["policy"]["rules"]
    assert rule["name"] == "expire-captures" and rule["enabled"] is True
    assert rule["definition"]["filters"] == {"blobTypes": ["blockBlob"], "prefixMatch": ["captures/"]}
    actions = rule["definition"]["actions"]
    assert actions["baseBlob"]["delete"] == {"daysAfterModificationGreaterThan": 30}
    assert actions["version"]["delete"] == actions["snapshot"]["delete"] == {"daysAfterCreationGreaterThan": 30}
