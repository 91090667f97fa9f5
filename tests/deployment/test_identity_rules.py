"""Who may act on a cloud registry: no free-text or OS identity there, and on AWS the approver is a person.

The AWS principals are the shapes STS ``GetCallerIdentity`` returns (botocore's GetCallerIdentity output:
``UserId``, ``Account``, ``Arn``): an IAM Identity Center user's session of a permission-set role
``AWSReservedSSO_<set>_<hash>`` named by the user, a GitHub Actions OIDC session (aws-actions/configure-aws-credentials'
default session name ``GitHubActions``), the stack's roles. tests/cloud/test_sagemaker_moto.py gets the same
shapes from moto's STS; neither can show that Identity Center really names the session after the user (no
Identity Center here): that is AWS's documented behaviour, which the rule relies on (docs/contracts.md).
"""

from __future__ import annotations

import pytest

from deployment.registry.approval import ApprovalService
from deployment.registry.base import ApprovalStatus
from deployment.registry.identity import Principal, aws_person, current_principal, identity_source
from training.errors import ConfigError, ExitCode, GateError

ACCOUNT = "123456789012"


def sts(role: str, session: str, role_id: str = "AROAEXAMPLEROLEID0001") -> Principal:
    """The principal :func:`training.cloud.aws.caller_principal` makes of an assumed-role session."""
    return Principal(f"{role_id}:{session}", f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{session}", "aws")


SSO = "AWSReservedSSO_DetopsApprover_0123456789abcdef"
ALICE = sts(SSO, "alice@example.com", "AROASSOAPPROVERROLE01")
RITA = sts(SSO, "rita@example.com", "AROASSOAPPROVERROLE01")
REGISTRAR = sts("detops-dev-registrar", "GitHubActions", "AROAREGISTRARROLE0001")
APPROVER_CI = sts("detops-dev-approver", "GitHubActions", "AROAAPPROVERROLE00001")


@pytest.mark.parametrize("kind, cloud", [("sagemaker", "aws"), ("azureml", "azure")])
@pytest.mark.parametrize("source", ["declared", "os"])
def test_a_cloud_registry_refuses_declared_and_os_identities(monkeypatch, kind, cloud, source):
    monkeypatch.setenv("DETOPS_IDENTITY", source)
    with pytest.raises(ConfigError) as err:
        current_principal(kind, "bob")
    msg = str(err.value)
    assert msg == (
        f"DETOPS_IDENTITY={source} is refused with the {kind} registry: who registers and approves there is "
        f"the authenticated {cloud} principal (unset DETOPS_IDENTITY or set it to {cloud})"
    )
    assert err.value.exit_code == ExitCode.USAGE
    monkeypatch.setenv("DETOPS_REGISTRY", kind)  # the registry from the setting, as the CLI without --registry
    with pytest.raises(ConfigError, match=f"refused with the {kind} registry"):
        identity_source()
    monkeypatch.setenv("DETOPS_IDENTITY", cloud)
    assert identity_source() == cloud
    monkeypatch.delenv("DETOPS_IDENTITY")
    assert identity_source() == cloud


def test_declared_stays_for_the_local_registry(monkeypatch):
    monkeypatch.setenv("DETOPS_IDENTITY", "declared")
    assert current_principal("mlflow", "bob") == Principal("bob", "bob", "declared")


def test_cli_refuses_declared_with_a_cloud_registry_in_one_line(cli, monkeypatch, make_run):
    monkeypatch.setenv("DETOPS_IDENTITY", "declared")
    for args in (["approve", "bccd", "1", "--comment", "ok"], ["register", "--run-dir", make_run(), "--name", "bccd"]):
        code, out = cli(*args, "--registry", "sagemaker", "--by", "bob")
        assert code == ExitCode.USAGE, out
        assert "DETOPS_IDENTITY=declared is refused with the sagemaker registry" in out


@pytest.mark.parametrize(
    "principal, person",
    [
        (ALICE, "alice@example.com"),
        (REGISTRAR, None),  # a GitHub OIDC session of a CI role
        (
            APPROVER_CI,
            None,
        ),  # the stack's approver role, assumed by a workflow: the session name is the caller's choice
        (sts("detops-dev-approver", "alice@example.com"), None),  # ... whatever name it chose
        (Principal("AIDAEXAMPLEUSER000001", f"arn:aws:iam::{ACCOUNT}:user/alice", "aws"), None),  # long-lived keys
        (
            Principal("AROASSOAPPROVERROLE01:bob", f"arn:aws:sts::{ACCOUNT}:assumed-role/{SSO}/alice", "aws"),
            None,
        ),  # UserId disagrees
        (
            Principal("AROASSOAPPROVERROLE01:alice", f"arn:aws:sts::{ACCOUNT}:assumed-role/{SSO}/alice", "declared"),
            None,
        ),
    ],
)
def test_aws_person_is_an_identity_center_session(principal, person):
    assert aws_person(principal) == person


@pytest.fixture
def pending(registry, make_run, model_name):
    """A version registered by the registrar's CI session after rita let it through the registration gate."""
    service = ApprovalService(registry)
    mv = service.register(make_run(), model_name, by=REGISTRAR, reviewer="rita")
    return service, mv


def test_an_identity_center_person_approves(pending, model_name):
    service, mv = pending
    ok = service.approve(model_name, mv.version, by=ALICE, comment="metrics reviewed")
    assert ok.status == ApprovalStatus.APPROVED
    assert ok.audit[-1].details["principal"] == ALICE.to_dict()


@pytest.mark.parametrize("ci", [APPROVER_CI, sts("detops-dev-approver", "carol@example.com")])
def test_a_ci_role_session_may_not_approve(pending, model_name, ci):
    service, mv = pending
    with pytest.raises(GateError, match="is not a person's session"):
        service.approve(model_name, mv.version, by=ci, comment="looks fine")
    assert service.get_version(model_name, mv.version).status == ApprovalStatus.PENDING
    service.reject(model_name, mv.version, by=ci, comment="withdrawn")  # refusing stays open: it cannot ship anything


@pytest.mark.parametrize("reviewer", ["rita", "RITA", "rita@example.com"])
def test_the_gate_reviewer_may_not_approve(registry, make_run, model_name, reviewer):
    service = ApprovalService(registry)
    mv = service.register(make_run(), model_name, by=REGISTRAR, reviewer=reviewer)
    with pytest.raises(GateError, match="through the registration gate"):
        service.approve(model_name, mv.version, by=RITA, comment="my own gate")
    assert service.approve(model_name, mv.version, by=ALICE, comment="ok").status == ApprovalStatus.APPROVED


def test_the_registrant_person_may_not_approve_from_another_permission_set(registry, make_run, model_name):
    service = ApprovalService(registry)
    admin = sts("AWSReservedSSO_AdministratorAccess_fedcba9876543210", "alice@example.com", "AROASSOADMINROLE00001")
    mv = service.register(make_run(), model_name, by=admin, reviewer="rita")
    with pytest.raises(GateError, match="registered model"):
        service.approve(model_name, mv.version, by=ALICE, comment="mine")
    assert service.get_version(model_name, mv.version).status == ApprovalStatus.PENDING
