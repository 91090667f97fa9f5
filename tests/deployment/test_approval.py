"""The approval state machine, self-approval rule, quality gate and audit trail (MLflow registry)."""

from __future__ import annotations

import json

import pytest

from deployment.registry.approval import ApprovalService
from deployment.registry.base import ApprovalStatus
from training.errors import ConfigError, GateError, NotFoundError


@pytest.fixture
def service(registry):
    return ApprovalService(registry)


def test_register_creates_pending_version_with_lineage(service, make_run, model_name):
    run = make_run(test_ap=0.31, dataset_sha256="ab" * 32, code_version="cafe1234")
    mv = service.register(run, model_name, by="alice")
    assert mv.status == ApprovalStatus.PENDING
    assert mv.registered_by == "alice"
    assert mv.artifact_uri == run + "/export"
    assert mv.metrics["test/AP"] == pytest.approx(0.31)
    assert mv.metrics["test/AP50"] == pytest.approx(0.56)
    assert mv.tags["dataset_sha256"] == "ab" * 32
    assert mv.tags["code_version"] == "cafe1234"
    assert mv.tags["run_url"] == run
    assert mv.tags["gate.passed"] == "true"
    decision = json.loads(mv.tags["gate.decision"])
    assert decision["candidate_AP"] == pytest.approx(0.31) and decision["baseline_version"] is None
    assert [e.action for e in mv.audit] == ["gate", "register"]
    assert all(e.actor == "alice" and e.at.endswith("+00:00") for e in mv.audit)


def test_status_tag_visible_in_mlflow(service, registry, make_run, model_name):
    mv = service.register(make_run(), model_name, by="alice")
    raw = registry.client.get_model_version(model_name, mv.version)
    assert raw.tags["approval_status"] == "PendingManualApproval"
    service.approve(model_name, mv.version, by="bob", comment="checked the PR curves")
    raw = registry.client.get_model_version(model_name, mv.version)
    assert raw.tags["approval_status"] == "Approved"
    assert raw.source == mv.artifact_uri


def test_self_approval_refused_by_default(service, make_run, model_name):
    mv = service.register(make_run(), model_name, by="alice")
    with pytest.raises(GateError, match="may not approve"):
        service.approve(model_name, mv.version, by="alice", comment="mine")
    assert service.registry.get_version(model_name, mv.version).status == ApprovalStatus.PENDING


def test_self_approval_allowed_when_configured(registry, make_run, model_name, monkeypatch):
    monkeypatch.setenv("DETOPS_ALLOW_SELF_APPROVAL", "1")
    service = ApprovalService(registry)
    mv = service.register(make_run(), model_name, by="alice")
    assert service.approve(model_name, mv.version, by="alice", comment="solo").status == ApprovalStatus.APPROVED


def test_approve_and_reject_are_audited(service, make_run, model_name):
    mv = service.register(make_run(), model_name, by="alice")
    approved = service.approve(model_name, mv.version, by="bob", comment="mAP fine")
    last = approved.audit[-1]
    assert (last.actor, last.action, last.comment) == ("bob", "approve", "mAP fine")
    assert last.details == {"from": "PendingManualApproval", "to": "Approved",
                            "principal": {"id": "bob", "name": "bob", "source": "declared"}}
    rejected = service.reject(model_name, mv.version, by="carol", comment="drift found")
    assert rejected.status == ApprovalStatus.REJECTED
    assert [(e.action, e.actor) for e in rejected.audit][-2:] == [("approve", "bob"), ("reject", "carol")]


@pytest.mark.parametrize("by,comment", [("", "why"), ("bob", ""), ("  ", "why"), ("bob", "   ")])
def test_identity_and_comment_required(service, make_run, model_name, by, comment):
    mv = service.register(make_run(), model_name, by="alice")
    with pytest.raises(ConfigError, match="is required"):
        service.approve(model_name, mv.version, by=by, comment=comment)
    with pytest.raises(ConfigError, match="is required"):
        service.reject(model_name, mv.version, by=by, comment=comment)


def test_register_requires_identity(service, make_run, model_name):
    with pytest.raises(ConfigError, match=r"--by \(who registers\) is required"):
        service.register(make_run(), model_name, by="")


def test_rejected_is_final(service, make_run, model_name):
    mv = service.register(make_run(), model_name, by="alice")
    service.reject(model_name, mv.version, by="bob", comment="no")
    with pytest.raises(GateError, match="Rejected"):
        service.approve(model_name, mv.version, by="bob", comment="changed my mind")
    with pytest.raises(GateError, match="Rejected"):
        service.reject(model_name, mv.version, by="bob", comment="again")


def test_approving_twice_refused(service, make_run, model_name):
    mv = service.register(make_run(), model_name, by="alice")
    service.approve(model_name, mv.version, by="bob", comment="ok")
    with pytest.raises(GateError, match="Approved"):
        service.approve(model_name, mv.version, by="carol", comment="ok too")


def test_require_approved(service, make_run, model_name):
    mv = service.register(make_run(), model_name, by="alice")
    with pytest.raises(GateError, match="PendingManualApproval"):
        service.require_approved(model_name, mv.version)
    service.approve(model_name, mv.version, by="bob", comment="ok")
    assert service.require_approved(model_name, mv.version).status == ApprovalStatus.APPROVED
    service.reject(model_name, mv.version, by="bob", comment="withdrawn")
    with pytest.raises(GateError, match="Rejected"):
        service.require_approved(model_name, mv.version)
    with pytest.raises(NotFoundError, match="version '999' not found"):
        service.require_approved(model_name, "999")


def test_incomplete_run_not_registered(service, make_run, model_name):
    with pytest.raises(GateError, match="running"):
        service.register(make_run(status="running"), model_name, by="alice")
    assert service.registry.list_versions(model_name) == []


def test_missing_run_folder(service, tmp_path, model_name):
    with pytest.raises(NotFoundError, match="run.json"):
        service.register(str(tmp_path / "no such run"), model_name, by="alice")


def test_same_run_registered_once(service, make_run, model_name):
    run = make_run()
    mv = service.register(run, model_name, by="alice")
    with pytest.raises(GateError, match=f"already registered as {model_name!r} version {mv.version}"):
        service.register(run, model_name, by="alice")


# -- quality gate ------------------------------------------------------------------------------------


def _approved(service, run, name):
    mv = service.register(run, name, by="alice")
    return service.approve(name, mv.version, by="bob", comment="baseline")


def test_gate_without_baseline_passes(service, make_run, model_name):
    d = service.gate(make_run(test_ap=0.05), model_name)
    assert d.passed and d.baseline_version is None and d.reasons == []


def test_gate_fails_when_worse_than_approved_by_more_than_margin(service, make_run, model_name):
    base = _approved(service, make_run(test_ap=0.30), model_name)
    worse = make_run(test_ap=0.27)
    d = service.gate(worse, model_name, margin=0.02)
    assert not d.passed
    assert d.baseline_version == base.version
    assert d.baseline_AP == pytest.approx(0.30) and d.candidate_AP == pytest.approx(0.27)
    assert "margin 0.0200" in d.reasons[0]
    with pytest.raises(GateError, match="quality gate failed"):
        service.register(worse, model_name, by="alice", margin=0.02)
    assert len(service.registry.list_versions(model_name)) == 1


def test_gate_within_margin_passes(service, make_run, model_name):
    _approved(service, make_run(test_ap=0.30), model_name)
    assert service.gate(make_run(test_ap=0.285), model_name, margin=0.02).passed
    assert service.gate(make_run(test_ap=0.35), model_name, margin=0.0).passed


def test_gate_margin_from_environment(service, make_run, model_name, monkeypatch):
    _approved(service, make_run(test_ap=0.30), model_name)
    run = make_run(test_ap=0.25)
    monkeypatch.setenv("DETOPS_GATE_MARGIN", "0.1")
    assert service.gate(run, model_name).passed
    monkeypatch.setenv("DETOPS_GATE_MARGIN", "0.01")
    assert not service.gate(run, model_name).passed
    monkeypatch.setenv("DETOPS_GATE_MARGIN", "a lot")
    with pytest.raises(ConfigError, match="DETOPS_GATE_MARGIN='a lot': Input should be a valid number"):
        service.gate(run, model_name)


def test_gate_compares_with_newest_approved(service, make_run, model_name):
    _approved(service, make_run(test_ap=0.20), model_name)
    _approved(service, make_run(test_ap=0.40), model_name)
    d = service.gate(make_run(test_ap=0.30), model_name, margin=0.05)
    assert d.baseline_AP == pytest.approx(0.40) and not d.passed


@pytest.mark.parametrize("parity", [False, {"float": True, "int8": False}, {"float": False, "int8": True}])
def test_gate_fails_on_failed_tflite_parity(service, make_run, model_name, parity):
    d = service.gate(make_run(parity_passed=parity), model_name)
    assert not d.passed
    assert any("parity check failed" in r for r in d.reasons)


def test_gate_fails_without_parity_file(service, make_run, model_name):
    import os

    run = make_run()
    os.remove(os.path.join(run, "export", "parity.json"))
    d = service.gate(run, model_name)
    assert not d.passed and "no TFLite parity check" in d.reasons[0]


def test_forced_registration_needs_comment_and_is_audited(service, make_run, model_name):
    run = make_run(parity_passed=False)
    with pytest.raises(ConfigError, match="--comment"):
        service.register(run, model_name, by="alice", force=True)
    mv = service.register(run, model_name, by="alice", force=True, comment="parity tool bug #12, checked by hand")
    assert mv.status == ApprovalStatus.PENDING
    assert mv.tags["gate.passed"] == "false" and mv.tags["gate.forced"] == "true"
    force = [e for e in mv.audit if e.action == "force"]
    assert len(force) == 1 and force[0].actor == "alice" and "parity tool bug" in force[0].comment
    assert any("parity" in r for r in force[0].details["reasons"])
    # a forced version is still only Pending: it needs a second person to approve
    with pytest.raises(GateError, match="'alice' .*registered model .* and may not approve it"):
        service.approve(model_name, mv.version, by="alice", comment="self")


def test_force_on_passing_gate_is_not_marked_forced(service, make_run, model_name):
    mv = service.register(make_run(), model_name, by="alice", force=True, comment="habit")
    assert mv.tags["gate.forced"] == "false"
    assert [e.action for e in mv.audit] == ["gate", "register"]


def test_current_approved_is_the_newest_approved_version(service, make_run, model_name):
    assert service.current_approved(model_name) is None
    v1 = _approved(service, make_run(), model_name)
    v2 = service.register(make_run(), model_name, by="alice")
    assert service.current_approved(model_name).version == v1.version  # a Pending v2 is not current
    v3 = _approved(service, make_run(), model_name)
    assert service.current_approved(model_name).version == v3.version
    assert v2.status == ApprovalStatus.PENDING


def test_gate_honours_overall_parity_verdict(service, make_run, model_name):
    import os

    run = make_run()
    path = os.path.join(run, "export", "parity.json")
    with open(path) as f:
        doc = json.load(f)
    doc["passed"] = False  # both variants passed, but the export's overall verdict did not
    with open(path, "w") as f:
        json.dump(doc, f)
    d = service.gate(run, model_name)
    assert not d.passed and d.parity == {"float": True, "int8": True, "overall": False}
