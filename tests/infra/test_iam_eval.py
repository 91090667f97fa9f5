"""The offline IAM evaluator used by the IAM-enforced moto run: the evaluation rules it relies on."""

from __future__ import annotations

import pytest
from iam_eval import evaluate

ARN = "arn:aws:sagemaker:eu-west-1:123456789012:model-package/g/1"


def _allow(**extra):
    return {"Statement": [{"Effect": "Allow", "Action": "sagemaker:UpdateModelPackage", "Resource": "arn:aws:sagemaker:*:*:model-package/g/*", **extra}]}


def test_explicit_deny_wins_over_allow() -> None:
    deny = {"Statement": [{"Sid": "No", "Effect": "Deny", "Action": "sagemaker:*", "Resource": "*"}]}
    decision = evaluate([_allow(), deny], "sagemaker:UpdateModelPackage", ARN)
    assert not decision.allowed and "explicit deny" in decision.reason and "(No)" in decision.reason


def test_implicit_deny_and_resource_scope() -> None:
    assert evaluate([_allow()], "sagemaker:UpdateModelPackage", ARN).allowed
    assert not evaluate([_allow()], "sagemaker:UpdateModelPackage", ARN.replace("/g/", "/other/")).allowed
    assert not evaluate([_allow()], "sagemaker:CreateModelPackage", ARN).allowed
    assert evaluate([_allow()], "SageMaker:updatemodelpackage", ARN).allowed  # actions are case-insensitive


@pytest.mark.parametrize(
    ("condition", "context", "allowed"),
    [
        ({"StringEquals": {"k": "a"}}, {"k": "a"}, True),
        ({"StringEquals": {"k": "a"}}, {"k": "b"}, False),
        ({"StringEquals": {"k": "a"}}, {}, False),  # a missing key never equals
        ({"StringNotEquals": {"k": "a"}}, {}, True),  # ... but a negated operator holds
        ({"StringEqualsIfExists": {"k": "a"}}, {}, True),
        ({"StringEqualsIfExists": {"k": "a"}}, {"k": "b"}, False),
        ({"ArnEqualsIfExists": {"k": "arn:x"}}, {"k": "arn:y"}, False),
        ({"Bool": {"k": "true"}}, {"k": True}, True),
        ({"Bool": {"k": "true"}}, {"k": False}, False),
        ({"ForAllValues:StringEquals": {"k": ["a", "b"]}}, {"k": ["a"]}, True),
        ({"ForAllValues:StringEquals": {"k": ["a"]}}, {"k": ["a", "c"]}, False),
        ({"Null": {"k": "true"}}, {}, True),
    ],
)
def test_condition_operators(condition, context, allowed: bool) -> None:
    assert evaluate([_allow(Condition=condition)], "sagemaker:UpdateModelPackage", ARN, context).allowed is allowed


def test_unknown_operator_is_an_error_not_an_allow() -> None:
    with pytest.raises(ValueError, match="not supported"):
        evaluate([_allow(Condition={"DateGreaterThan": {"aws:CurrentTime": "2020-01-01"}})], "sagemaker:UpdateModelPackage", ARN, {"aws:CurrentTime": "x"})
