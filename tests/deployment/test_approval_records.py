"""Approval records and state that survives (issue 33): decisions as immutable records written with
compare-and-set, a status no tag can forge, the evaluated artifact as the registered one, a killed
register or promote finished by running it again, atomic run.json, a model cache checked on each load.

The MLflow registry here is the local SQLite store (its records folder beside the database); the
Azure ML records are covered in tests/cloud/test_azureml_registry.py against Azurite.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deployment.registry import artifact
from deployment.registry.approval import ApprovalService
from deployment.registry.base import ApprovalStatus
from deployment.registry.records import ApprovalRecords
from training import storage
from training.errors import ConflictError, ExitCode, GateError


def _approved(registry, make_run, name):
    svc = ApprovalService(registry)
    mv = svc.register(make_run(), name, by="alice")
    return svc, svc.approve(name, mv.version, by="bob", comment="reviewed")


def test_a_decision_is_one_immutable_record(registry, make_run, model_name):
    svc, mv = _approved(registry, make_run, model_name)
    (rec,) = registry.approval_records().list(model_name, mv.version)
    assert (rec.seq, rec.action, rec.from_status, rec.to_status) == (0, "approve", "PendingManualApproval", "Approved")
    assert rec.artifact_sha256 == mv.tags[artifact.DIGEST_TAG] and rec.principal["id"] == "bob"
    with pytest.raises(ConflictError):  # a record is never rewritten
        registry.approval_records().append(rec)


def test_a_tag_set_by_hand_does_not_approve(registry, make_run, model_name):
    """The probe of issue 33: ``approval_status=Approved`` set as the registrant; deploy must refuse."""
    svc = ApprovalService(registry)
    mv = svc.register(make_run(), model_name, by="alice")
    registry.client.set_model_version_tag(model_name, mv.version, "approval_status", "Approved")
    assert svc.get_version(model_name, mv.version).status == ApprovalStatus.PENDING
    with pytest.raises(GateError, match="PendingManualApproval; only Approved"):
        svc.require_approved(model_name, mv.version)


def test_a_rewritten_digest_tag_voids_the_approval(registry, make_run, model_name):
    """The probe: swap a file and rewrite ``artifact.sha256`` after approval; the record was about other files."""
    svc, mv = _approved(registry, make_run, model_name)
    registry.client.set_model_version_tag(model_name, mv.version, artifact.DIGEST_TAG, "0" * 64)
    with pytest.raises(GateError, match="is Rejected"):
        svc.require_approved(model_name, mv.version)


def test_a_rewritten_registrant_tag_does_not_let_the_registrant_approve(registry, make_run, model_name):
    """The probe of issue 33: register as alice, rewrite ``registered_by.id`` to bob through the MLflow
    client (anyone who may write the server can), approve as alice: the registration record says alice."""
    svc = ApprovalService(registry, allow_self_approval=False)
    mv = svc.register(make_run(), model_name, by="alice")
    reg = registry.approval_records().registration(model_name, mv.version)
    assert (reg.principal["id"], reg.artifact_sha256) == ("alice", mv.tags[artifact.DIGEST_TAG])
    registry.client.set_model_version_tag(model_name, mv.version, "registered_by.id", "bob")
    with pytest.raises(GateError, match="disagrees with its registration record") as e:
        svc.approve(model_name, mv.version, by="alice", comment="my own")
    assert e.value.exit_code == ExitCode.GATE
    with pytest.raises(GateError, match="disagrees"):  # nor anyone else: the registrant is unknown
        svc.approve(model_name, mv.version, by="bob", comment="looks fine")
    assert registry.approval_records().list(model_name, mv.version) == []
    assert svc.get_version(model_name, mv.version).status == ApprovalStatus.PENDING


def test_a_version_without_a_registration_record_is_refused_for_approval(registry, make_run, model_name):
    svc = ApprovalService(registry, allow_self_approval=False)
    mv = svc.register(make_run(), model_name, by="alice")
    (Path(registry.approval_records().root) / model_name / mv.version / "registration.json").unlink()
    with pytest.raises(GateError, match="has no registration record") as e:
        svc.approve(model_name, mv.version, by="bob", comment="looks fine")
    assert e.value.exit_code == ExitCode.GATE
    assert registry.approval_records().list(model_name, mv.version) == []
    assert svc.reject(model_name, mv.version, by="bob", comment="unknown registrant").status == ApprovalStatus.REJECTED


def test_a_registration_record_is_create_only(registry, make_run, model_name):
    from deployment.registry.records import RegistrationRecord

    svc = ApprovalService(registry)
    mv = svc.register(make_run(), model_name, by="alice")
    store = registry.approval_records()
    with pytest.raises(ConflictError, match="already has a registration record"):
        store.register(RegistrationRecord(model_name, mv.version, {"id": "bob", "name": "bob", "source": "declared"},
                                          mv.tags[artifact.DIGEST_TAG], "2026-12-08T00:00:00+00:00"))
    assert store.registration(model_name, mv.version).principal["id"] == "alice"


def test_a_malformed_registration_record_is_reported_with_its_path(registry, make_run, model_name):
    from training.errors import DataError

    svc = ApprovalService(registry, allow_self_approval=False)
    mv = svc.register(make_run(), model_name, by="alice")
    path = Path(registry.approval_records().root) / model_name / mv.version / "registration.json"
    path.write_text(json.dumps({"model": model_name, "version": mv.version, "principal": {"id": ""},
                                "artifact_sha256": "x"}))
    with pytest.raises(DataError, match="registration.json: not a registration record"):
        svc.approve(model_name, mv.version, by="bob", comment="looks fine")


def test_approve_and_reject_racing_one_wins_the_other_gets_a_conflict(registry, make_run, model_name):
    svc = ApprovalService(registry)
    mv = svc.register(make_run(), model_name, by="alice")
    store = registry.approval_records()
    real_append = ApprovalRecords.append

    def reject_first(self, record):  # the rival decides between our read and our write
        if record.action == "approve":
            ApprovalRecords.append = real_append
            ApprovalService(registry).reject(model_name, mv.version, by="carol", comment="bad boxes")
        return real_append(self, record)

    ApprovalRecords.append = reject_first
    try:
        with pytest.raises(ConflictError, match="decided meanwhile \\(reject by carol") as e:
            svc.approve(model_name, mv.version, by="bob", comment="looks fine")
    finally:
        ApprovalRecords.append = real_append
    assert e.value.exit_code == ExitCode.CONFLICT
    assert [r.action for r in store.list(model_name, mv.version)] == ["reject"]
    assert svc.get_version(model_name, mv.version).status == ApprovalStatus.REJECTED


def test_a_record_out_of_sequence_is_reported(registry, make_run, model_name):
    from training.errors import DataError

    _svc, mv = _approved(registry, make_run, model_name)
    folder = Path(registry.approval_records().root) / model_name / mv.version
    (folder / "0000.json").rename(folder / "0001.json")  # a record removed
    with pytest.raises(DataError, match="out of sequence"):
        registry.approval_records().list(model_name, mv.version)


def test_a_remote_mlflow_server_fails_closed_without_a_record_store(monkeypatch):
    from deployment.registry.mlflow import MlflowRegistry
    from training.errors import ConfigError

    reg = MlflowRegistry("http://127.0.0.1:1")
    with pytest.raises(ConfigError, match="DETOPS_APPROVALS_URI"):
        reg.approval_records()
    monkeypatch.setenv("DETOPS_APPROVALS_URI", "s3://approvals-bucket/records")
    assert reg.approval_records().root == "s3://approvals-bucket/records"


# -- the evaluated artifact is the registered one ------------------------------------------------


def test_register_refuses_an_export_changed_after_it_was_evaluated(registry, make_run, model_name):
    run = make_run()
    (Path(run) / "export" / "saved_model" / "saved_model.pb").write_bytes(b"swapped")
    with pytest.raises(artifact.ArtifactIntegrityError, match="changed after it was exported"):
        ApprovalService(registry).register(run, model_name, by="alice")
    assert registry.list_versions(model_name) == []


def test_register_carries_both_digests_and_refuses_a_run_without_one(registry, make_run, model_name):
    run = make_run()
    mv = ApprovalService(registry).register(run, model_name, by="alice")
    assert mv.tags["export.sha256"] == mv.tags[artifact.DIGEST_TAG]
    other = make_run()
    m = storage.read_json(str(Path(other) / "run.json"))
    m["stages"]["export"] = "complete"  # exported by an older detops: no digest
    storage.write_json(str(Path(other) / "run.json"), m)
    with pytest.raises(GateError, match="records no digest"):
        ApprovalService(registry).register(other, model_name, by="alice")


# -- state that survives a kill --------------------------------------------------------------------


def test_a_killed_register_is_finished_by_running_it_again(registry, make_run, model_name, monkeypatch):
    svc = ApprovalService(registry)
    run = make_run()
    real = type(registry).set_status

    def killed(self, *a, **kw):
        raise KeyboardInterrupt  # the job is killed right after the version was created

    monkeypatch.setattr(type(registry), "set_status", killed)
    with pytest.raises(KeyboardInterrupt):
        svc.register(run, model_name, by="alice")
    monkeypatch.setattr(type(registry), "set_status", real)
    mv = svc.register(run, model_name, by="alice")
    assert [e.action for e in mv.audit] == ["gate", "register"] and mv.version == "1"
    with pytest.raises(GateError, match="already registered"):
        svc.register(run, model_name, by="alice")


def test_a_killed_promote_is_finished_by_running_it_again(registry, make_run, model_name, tmp_path, monkeypatch):
    from deployment.promote import promote
    from deployment.registry.mlflow import MlflowRegistry

    _svc, mv = _approved(registry, make_run, model_name)
    prod = MlflowRegistry(f"sqlite:///{(tmp_path / 'prod.db').as_posix()}")
    real = ApprovalService.decide

    def killed(self, *a, **kw):
        raise KeyboardInterrupt  # killed after the prod version was registered, before it was approved

    monkeypatch.setattr(ApprovalService, "decide", killed)
    with pytest.raises(KeyboardInterrupt):
        promote(registry, prod, model_name, mv.version, str(tmp_path / "prod artifacts"), by="release-bot")
    assert ApprovalService(prod).get_version(model_name, "1").status == ApprovalStatus.PENDING
    monkeypatch.setattr(ApprovalService, "decide", real)
    out = promote(registry, prod, model_name, mv.version, str(tmp_path / "prod artifacts"), by="release-bot")
    assert out.version == "1" and out.status == ApprovalStatus.APPROVED
    assert [v.version for v in prod.list_versions(model_name)] == ["1"]


class _Unserializable:
    def __str__(self) -> str:
        raise RuntimeError("killed mid-write")


def test_an_interrupted_run_json_write_leaves_the_previous_one(tmp_path):
    from training.run import Run

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"id": "r1", "status": "running", "stages": {}}))
    run = Run.open(str(run_dir))
    run.manifest["stages"]["train"] = {"status": "complete", "oops": _Unserializable()}
    with pytest.raises(RuntimeError, match="killed mid-write"):
        run.save()
    assert Run.open(str(run_dir)).manifest == {"id": "r1", "status": "running", "stages": {}}
    assert [p.name for p in run_dir.iterdir()] == ["run.json"]  # no temporary file left behind


def test_write_bytes_is_whole_or_not_at_all(tmp_path, monkeypatch):
    import os

    target = tmp_path / "a" / "m.json"
    storage.write_bytes(str(target), b"old")

    def killed(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        storage.write_bytes(str(target), b"new" * 1000)
    assert target.read_bytes() == b"old" and sorted(p.name for p in target.parent.iterdir()) == ["m.json"]


def test_create_bytes_is_exclusive(tmp_path):
    url = str(tmp_path / "r" / "0000.json")
    storage.create_bytes(url, b"first")
    with pytest.raises(FileExistsError):
        storage.create_bytes(url, b"second")
    assert Path(url).read_bytes() == b"first"


# -- the model cache ---------------------------------------------------------------------------------


def test_the_model_cache_is_checked_on_every_load(make_run):
    """A remote model folder is copied once into DETOPS_HOME; an edited cached saved_model.pb is never
    served: the next load fetches it again (memory:// stands in for az:// and s3://)."""
    import fsspec

    from deployment.serving.model import resolve_saved_model

    run = make_run()
    export = Path(run) / "export"
    files = artifact.compute_manifest(str(export))
    storage.write_json(str(export / artifact.MANIFEST_FILE), artifact.manifest_document(files))
    remote = "memory://models/run1/export"
    fs = fsspec.filesystem("memory")
    fs.put(str(export) + "/", "/models/run1/export", recursive=True)
    local = Path(resolve_saved_model(remote))
    assert (local / "saved_model.pb").read_bytes() == (export / "saved_model" / "saved_model.pb").read_bytes()
    (local / "saved_model.pb").write_bytes(b"edited in the cache")
    again = Path(resolve_saved_model(remote))
    assert again == local and (again / "saved_model.pb").read_bytes() == (export / "saved_model" / "saved_model.pb").read_bytes()
    fs.rm("/models/run1", recursive=True)  # leave no copy behind for other tests of this process
