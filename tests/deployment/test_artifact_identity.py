"""Artifact identity (sha256 manifest at registration, checked by deploy, promote and the serving app),
approvers as authenticated principals (four-eyes on principal ids), smoke tests per target, promotion."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest

from deployment.registry import artifact
from deployment.registry.approval import ApprovalService
from deployment.registry.base import ApprovalStatus
from deployment.registry.identity import Principal, current_principal
from training.cloud.azure import caller_principal as azure_principal
from training.cloud.azure import token_claims as jwt_claims
from training.errors import BackendError, ConfigError, GateError

# -- manifest ----------------------------------------------------------------------------------------


def test_registration_stores_the_manifest_of_export(registry, make_run, model_name):
    run = make_run()
    mv = ApprovalService(registry).register(run, model_name, by="alice")
    files = artifact.compute_manifest(run + "/export")
    assert set(files) == {"saved_model/saved_model.pb", "parity.json"}
    assert json.loads(mv.tags[artifact.MANIFEST_TAG]) == files
    assert mv.tags[artifact.DIGEST_TAG] == artifact.manifest_digest(files)
    doc = json.loads((Path(run) / "export" / artifact.MANIFEST_FILE).read_text())
    assert doc["files"] == files and doc["sha256"] == mv.tags[artifact.DIGEST_TAG]
    assert mv.audit[-1].details["artifact_sha256"] == mv.tags[artifact.DIGEST_TAG]


def test_stored_manifest_must_hash_to_its_digest():
    files = {"a": "0" * 64}
    tags = {artifact.MANIFEST_TAG: json.dumps(files), artifact.DIGEST_TAG: artifact.manifest_digest(files)}
    assert artifact.stored_manifest(tags) == files
    tags[artifact.MANIFEST_TAG] = json.dumps({"a": "1" * 64})  # manifest rewritten, digest kept
    with pytest.raises(artifact.ArtifactIntegrityError, match="does not hash"):
        artifact.stored_manifest(tags)
    assert artifact.stored_manifest({}) is None


def test_deploy_refuses_versions_without_manifest(registry, make_run, model_name):
    from deployment.deploy import verify_version_artifact
    from deployment.registry.base import ModelVersion

    mv = ModelVersion(model_name, "1", ApprovalStatus.APPROVED, make_run() + "/export", "alice", "now")
    with pytest.raises(artifact.ArtifactIntegrityError, match="no artifact manifest"):
        verify_version_artifact(mv)


@pytest.fixture
def export_copy(tmp_path, fake_saved_model):
    """An export/ folder holding a loadable SavedModel and its manifest; returns (folder, digest)."""
    export = tmp_path / "model store" / "export"
    shutil.copytree(fake_saved_model, export / "saved_model")
    files = artifact.compute_manifest(str(export))
    (export / artifact.MANIFEST_FILE).write_text(json.dumps(artifact.manifest_document(files)))
    return export, artifact.manifest_digest(files)


def test_serving_verifies_the_model_folder_at_load(export_copy, monkeypatch):
    from deployment.serving.model import Detector

    export, digest = export_copy
    monkeypatch.setenv(artifact.DIGEST_ENV, digest)
    assert Detector(str(export), "bccd", "1").artifact_sha256 == digest
    assert artifact.verify_model_dir(str(export / "saved_model")) == digest  # manifest found in the parent
    variables = next((export / "saved_model" / "variables").glob("*.data-*"))
    variables.write_bytes(variables.read_bytes()[:-1] + b"\xff")
    with pytest.raises(artifact.ArtifactIntegrityError, match=f"changed: saved_model/variables/{variables.name}"):
        Detector(str(export), "bccd", "1")


def test_serving_refuses_a_rewritten_manifest_and_a_missing_one(export_copy, monkeypatch):
    export, digest = export_copy
    pb = export / "saved_model" / "saved_model.pb"
    pb.write_bytes(pb.read_bytes() + b"\x00")
    files = artifact.compute_manifest(str(export))  # an attacker re-hashes the folder
    (export / artifact.MANIFEST_FILE).write_text(json.dumps(artifact.manifest_document(files)))
    with pytest.raises(artifact.ArtifactIntegrityError, match="but the registered version is"):
        artifact.verify_model_dir(str(export), digest)
    (export / artifact.MANIFEST_FILE).unlink()
    with pytest.raises(artifact.ArtifactIntegrityError, match="no detops-manifest.json"):
        artifact.verify_model_dir(str(export), digest)
    monkeypatch.delenv(artifact.DIGEST_ENV, raising=False)
    assert artifact.verify_model_dir(str(export)) is None  # a development folder: nothing to check against


def test_app_never_becomes_ready_on_a_tampered_model(export_copy, make_settings, monkeypatch):
    from fastapi.testclient import TestClient

    from deployment.serving.app import create_app

    export, digest = export_copy
    monkeypatch.setenv(artifact.DIGEST_ENV, digest)
    (export / "saved_model" / "saved_model.pb").write_bytes(b"tampered")
    app = create_app(make_settings(str(export)))
    with pytest.raises(artifact.ArtifactIntegrityError, match="changed: saved_model/saved_model.pb"):
        with TestClient(app):
            pass


# -- identities ---------------------------------------------------------------------------------------


def _jwt(claims: dict) -> str:
    def enc(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")

    return f"{enc({'alg': 'RS256', 'typ': 'JWT'})}.{enc(claims)}.c2lnbmF0dXJl"


class FakeCredential:
    """An ``azure.core.credentials.TokenCredential`` handing out a JWT-shaped token with given claims."""

    def __init__(self, claims: dict) -> None:
        self.claims = claims
        self.scopes: list[str] = []

    def get_token(self, *scopes, **kwargs):
        from azure.core.credentials import AccessToken

        self.scopes.extend(scopes)
        return AccessToken(_jwt(self.claims), 4102444800)


def test_azure_principal_from_token_claims():
    cred = FakeCredential({"oid": "11111111-aaaa", "name": "Ada Reviewer", "tid": "t"})
    p = azure_principal(cred)
    assert p == Principal("11111111-aaaa", "Ada Reviewer", "azure")
    assert cred.scopes == ["https://management.azure.com/.default"]
    sp = azure_principal(FakeCredential({"oid": "22222222-bbbb", "appid": "app-1", "app_displayname": "detops-ci"}))
    assert (sp.id, sp.name) == ("22222222-bbbb", "detops-ci")
    with pytest.raises(ConfigError, match="no 'oid'"):
        azure_principal(FakeCredential({"name": "x"}))
    with pytest.raises(ConfigError, match="not a JWT"):
        jwt_claims("opaque-token")


def test_four_eyes_compares_principal_ids_not_names(registry, make_run, model_name):
    svc = ApprovalService(registry)
    ci = Principal("oid-ci", "detops-ci", "azure")
    mv = svc.register(make_run(), model_name, by=ci)
    assert mv.registered_by == "detops-ci" and mv.tags["registered_by.id"] == "oid-ci"
    # the same principal under another display name is still the registrant
    with pytest.raises(GateError, match="may not approve"):
        svc.approve(model_name, mv.version, by=Principal("oid-ci", "Someone Else", "azure"), comment="x")
    # another principal that happens to share the display name is a different person
    ok = svc.approve(model_name, mv.version, by=Principal("oid-ada", "detops-ci", "azure"), comment="reviewed")
    assert ok.status == ApprovalStatus.APPROVED
    assert ok.audit[-1].details["principal"] == {"id": "oid-ada", "name": "detops-ci", "source": "azure"}


def test_identity_sources(monkeypatch):
    import getpass

    monkeypatch.delenv("DETOPS_IDENTITY", raising=False)
    p = current_principal("mlflow")
    assert p.source == "os" and p.name == getpass.getuser()
    with pytest.raises(ConfigError, match="--by is not accepted"):
        current_principal("mlflow", "somebody-else")
    cred = FakeCredential({"oid": "oid-1", "name": "Ada"})
    assert current_principal("azureml", credential=cred).id == "oid-1"
    with pytest.raises(ConfigError, match="--by is not accepted"):
        current_principal("azureml", "ada", credential=cred)
    monkeypatch.setenv("DETOPS_IDENTITY", "declared")
    assert current_principal("mlflow", "bob") == Principal("bob", "bob", "declared")
    with pytest.raises(ConfigError, match="needs --by"):
        current_principal("mlflow")
    monkeypatch.setenv("DETOPS_IDENTITY", "kerberos")
    with pytest.raises(ConfigError, match="DETOPS_IDENTITY"):
        current_principal("mlflow")


def test_cli_takes_the_os_user_and_refuses_by(cli, registry, make_run, model_name, monkeypatch):
    import getpass

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri)
    monkeypatch.delenv("DETOPS_IDENTITY", raising=False)
    code, out = cli("register", "--run-dir", make_run(), "--name", model_name, "--by", "ci-bot")
    assert code == 2 and "--by is not accepted" in out
    code, out = cli("register", "--run-dir", make_run(), "--name", model_name)
    assert code == 0 and f"registered by {getpass.getuser()}" in out
    code, out = cli("approve", model_name, "1", "--comment", "my own")
    assert code == 4 and "may not approve" in out  # same OS user: four-eyes holds without --by


def test_azure_access_denied_is_one_line_naming_action_and_principal():
    from training.cloud.azure import azure_error
    from training.errors import AccessDeniedError

    class HttpResponseError(Exception):
        status_code = 403
        message = ("(AuthorizationFailed) The client 'ci@example.com' with object id 'oid-ci' does not have "
                   "authorization to perform action 'Microsoft.MachineLearningServices/workspaces/models/write' "
                   "over scope '/subscriptions/0/...'\nCode: AuthorizationFailed")

    err = azure_error(HttpResponseError(), "register model")
    assert isinstance(err, AccessDeniedError) and "\n" not in str(err)
    assert str(err) == ("access denied: oid-ci may not Microsoft.MachineLearningServices/workspaces/models/write "
                        "(register model)")


# -- smoke tests per target --------------------------------------------------------------------------


def test_azureml_smoke_uses_the_bearer_key_on_the_scoring_uri(live_server, tmp_path, bccd_image, monkeypatch):
    from deployment.smoke import smoke_test

    img = tmp_path / "cell.jpg"
    img.write_bytes(bccd_image)
    monkeypatch.delenv("DETOPS_API_KEY", raising=False)

    class Endpoints:
        asked: list[str] = []

        def get(self, name):
            self.asked.append(name)
            return type("E", (), {"scoring_uri": live_server.url + "/score"})()

        def get_keys(self, name):
            return type("K", (), {"primary_key": "test-key-0123456789abcdef"})()

    client = type("C", (), {"online_endpoints": Endpoints()})()
    r = smoke_test(None, str(img), target="azureml", endpoint="bccd-prod", ml_client=client)
    assert r["target"] == "azureml" and r["url"].endswith("/score") and r["num_detections"] >= 0
    assert Endpoints.asked == ["bccd-prod"]
    monkeypatch.setenv("WRONG_KEY", "wrong-key-0123456789abcdef")
    with pytest.raises(BackendError, match="answered 401"):
        smoke_test(live_server.url + "/score", str(img), "WRONG_KEY", target="azureml")
    with pytest.raises(ConfigError, match="--endpoint"):
        smoke_test(None, str(img), "UNSET_VARIABLE_X", target="azureml")


# -- promotion ----------------------------------------------------------------------------------------


@pytest.fixture
def prod_registry(tmp_path):
    from deployment.registry.mlflow import MlflowRegistry

    return MlflowRegistry(tracking_uri=f"sqlite:///{(tmp_path / 'prod mlflow.db').as_posix()}")


def test_promotion_copies_the_exact_approved_artifact(registry, prod_registry, make_run, model_name, tmp_path):
    from deployment.promote import promote

    dev = ApprovalService(registry)
    mv = dev.register(make_run(), model_name, by="alice")
    root = str(tmp_path / "prod artifacts")
    with pytest.raises(GateError, match="PendingManualApproval"):
        promote(registry, prod_registry, model_name, mv.version, root, by="release-bot")
    dev.approve(model_name, mv.version, by="bob", comment="ok")
    prod = promote(registry, prod_registry, model_name, mv.version, root, by="release-bot")
    assert prod.status == ApprovalStatus.APPROVED
    assert prod.tags[artifact.DIGEST_TAG] == mv.tags[artifact.DIGEST_TAG]
    assert prod.artifact_uri.startswith(root) and prod.artifact_uri != mv.artifact_uri
    assert artifact.verify_model_dir(prod.artifact_uri, prod.tags[artifact.DIGEST_TAG]) == prod.tags[artifact.DIGEST_TAG]
    assert [e.action for e in prod.audit][-1] == "promote"
    assert json.loads(prod.tags["promoted.approvals"])[0]["actor"] == "bob"
    # idempotent: the same source version is not copied twice
    again = promote(registry, prod_registry, model_name, mv.version, root, by="release-bot")
    assert again.version == prod.version and len(prod_registry.list_versions(model_name)) == 1
    # the prod copy deploys (its artifact matches the manifest)
    from deployment.deploy import verify_version_artifact

    assert verify_version_artifact(prod) == prod.tags[artifact.DIGEST_TAG]


def test_promotion_refuses_a_tampered_source(registry, prod_registry, make_run, model_name, tmp_path):
    from deployment.promote import promote

    dev = ApprovalService(registry)
    run = make_run()
    mv = dev.register(run, model_name, by="alice")
    dev.approve(model_name, mv.version, by="bob", comment="ok")
    (Path(run) / "export" / "parity.json").write_text("{}")
    with pytest.raises(artifact.ArtifactIntegrityError, match="changed: parity.json"):
        promote(registry, prod_registry, model_name, mv.version, str(tmp_path / "prod"), by="release-bot")
    assert prod_registry.list_versions(model_name) == []


def test_tflite_runtimes_verify_the_export_too(tmp_path, make_settings, monkeypatch):
    from deployment.serving.runtime import load_model

    export = tmp_path / "export"
    export.mkdir()
    (export / "model.tflite").write_bytes(b"TFL3 float")
    (export / "parity.json").write_text(json.dumps({"float": {"passed": True}, "int8": {"passed": True}}))
    files = artifact.compute_manifest(str(export))
    (export / artifact.MANIFEST_FILE).write_text(json.dumps(artifact.manifest_document(files)))
    monkeypatch.setenv(artifact.DIGEST_ENV, artifact.manifest_digest(files))
    (export / "model.tflite").write_bytes(b"TFL3 swapped")
    with pytest.raises(artifact.ArtifactIntegrityError, match="changed: model.tflite"):
        load_model(make_settings(str(export), runtime="tflite-float"))


def test_promotion_reads_the_source_name_and_registers_under_the_prod_name(registry, prod_registry, make_run, model_name, tmp_path):
    """A SageMaker model package group is named after its stack: the dev name is read, the prod name written."""
    from deployment.promote import promote

    dev = ApprovalService(registry)
    mv = dev.register(make_run(), model_name, by="alice")
    dev.approve(model_name, mv.version, by="bob", comment="ok")
    prod = promote(registry, prod_registry, "prod-detector", mv.version, str(tmp_path / "prod"), by="release-bot",
                   source_name=model_name)
    assert prod.name == "prod-detector" and prod.status == ApprovalStatus.APPROVED
    assert prod.tags["promoted_from"].endswith(f"#{model_name}/{mv.version}")
    assert prod.tags[artifact.DIGEST_TAG] == mv.tags[artifact.DIGEST_TAG]
    assert prod_registry.list_versions(model_name) == []
