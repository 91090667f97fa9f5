"""The ground floor of cloud access (training/cloud): client settings, paginated listing, bounded
waiters and the error mapping, against botocore's own Stubber (the real client, its service model
validating every request) -- no server needed."""

from __future__ import annotations

import pytest
from botocore.stub import Stubber

from training.cloud import aws
from training.errors import AccessDeniedError, BackendError, NotFoundError


@pytest.fixture
def sm(monkeypatch):
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    return aws.client("sagemaker")


def test_every_client_retries_in_standard_mode_and_names_detops(sm):
    assert sm.meta.config.retries == {"mode": "standard", "total_max_attempts": 5}
    assert sm.meta.config.user_agent_extra.startswith("detops")
    assert sm.meta.region_name == "eu-west-1"


def _summary(v: int) -> dict:
    return {"ModelPackageGroupName": "g", "ModelPackageVersion": v, "CreationTime": "2026-12-01T00:00:00Z",
            "ModelPackageArn": f"arn:aws:sagemaker:eu-west-1:111122223333:model-package/g/{v}",
            "ModelPackageStatus": "Completed"}


def test_paginate_follows_next_token_to_the_last_page(sm):
    with Stubber(sm) as stub:
        stub.add_response("list_model_packages", {"ModelPackageSummaryList": [_summary(1), _summary(2)], "NextToken": "t1"},
                          {"ModelPackageGroupName": "g", "MaxResults": 2})
        stub.add_response("list_model_packages", {"ModelPackageSummaryList": [_summary(3)]},
                          {"ModelPackageGroupName": "g", "MaxResults": 2, "NextToken": "t1"})
        items = list(aws.paginate(sm, "list_model_packages", "ModelPackageSummaryList", what="list g",
                                  ModelPackageGroupName="g", PaginationConfig={"PageSize": 2}))
        stub.assert_no_pending_responses()
    assert [i["ModelPackageVersion"] for i in items] == [1, 2, 3]


def test_a_denied_page_is_one_line_naming_principal_and_action(sm):
    msg = ("User: arn:aws:sts::111122223333:assumed-role/detops-dev-trainer/gh is not authorized to perform: "
           "sagemaker:ListModelPackages on resource: arn:aws:sagemaker:eu-west-1:111122223333:model-package-group/g")
    with Stubber(sm) as stub:
        stub.add_client_error("list_model_packages", "AccessDeniedException", msg, 400)
        with pytest.raises(AccessDeniedError) as e:
            list(aws.paginate(sm, "list_model_packages", "ModelPackageSummaryList", what="list g", ModelPackageGroupName="g"))
    assert str(e.value) == ("access denied: arn:aws:sts::111122223333:assumed-role/detops-dev-trainer/gh may not "
                            "sagemaker:ListModelPackages (list g)")


def test_call_maps_not_found_and_other_errors(sm):
    with Stubber(sm) as stub:
        stub.add_client_error("describe_endpoint", "ValidationException", "Could not find endpoint \"e\".", 400)
        stub.add_client_error("describe_endpoint", "ThrottlingException", "Rate exceeded", 400)
        with pytest.raises(NotFoundError, match="describe e"):
            aws.call("describe e", sm.describe_endpoint, EndpointName="e")
        with pytest.raises(BackendError, match="ThrottlingException Rate exceeded"):
            aws.call("describe e", sm.describe_endpoint, EndpointName="e")


def _endpoint(status: str, **extra) -> dict:
    return {"EndpointName": "e", "EndpointArn": "arn:aws:sagemaker:eu-west-1:111122223333:endpoint/e",
            "EndpointConfigName": "c", "EndpointStatus": status, "CreationTime": "2026-12-01T00:00:00Z",
            "LastModifiedTime": "2026-12-01T00:00:00Z", **extra}


def test_wait_polls_until_in_service(sm):
    with Stubber(sm) as stub:
        for status in ("Creating", "Creating", "InService"):
            stub.add_response("describe_endpoint", _endpoint(status), {"EndpointName": "e"})
        aws.wait(sm, "endpoint_in_service", what="endpoint e", delay_s=0, max_attempts=5, EndpointName="e")
        stub.assert_no_pending_responses()


def test_wait_reports_the_failure_reason_and_gives_up_when_bounded(sm):
    with Stubber(sm) as stub:
        stub.add_response("describe_endpoint", _endpoint("Failed", FailureReason="image not found"), {"EndpointName": "e"})
        with pytest.raises(BackendError, match="endpoint e: .*image not found"):
            aws.wait(sm, "endpoint_in_service", what="endpoint e", delay_s=0, max_attempts=5, EndpointName="e")
    with Stubber(sm) as stub:
        for _ in range(2):
            stub.add_response("describe_endpoint", _endpoint("Creating"), {"EndpointName": "e"})
        with pytest.raises(BackendError, match="endpoint e: Max attempts exceeded"):
            aws.wait(sm, "endpoint_in_service", what="endpoint e", delay_s=0, max_attempts=2, EndpointName="e")


def test_caller_principal_from_sts(monkeypatch):
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    sts = aws.client("sts")
    with Stubber(sts) as stub:
        stub.add_response("get_caller_identity", {"UserId": "AROAEXAMPLE:ada", "Account": "111122223333",
                                                  "Arn": "arn:aws:sts::111122223333:assumed-role/approver/ada"})
        p = aws.caller_principal(sts)
    assert (p.id, p.name, p.source) == ("AROAEXAMPLE:ada", "arn:aws:sts::111122223333:assumed-role/approver/ada", "aws")
