"""Deploy rules above the targets, target lookup, and the detops CLI commands with their exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deployment import deploy as deploy_mod
from deployment.registry.approval import ApprovalService
from deployment.registry.base import ApprovalStatus, ModelVersion
from deployment.targets import TARGETS, get_target
from deployment.targets.base import Deployment, DeployTarget
from training.errors import BackendError, ConfigError, ExitCode, GateError, NotFoundError


class RecordingTarget(DeployTarget):
    """A target that records what it was asked to deploy, and what was live before (like the real ones).

    ``fail_before_switch`` makes the next deploy fail before traffic moves (the endpoint keeps serving
    what it served); ``fail_after_switch`` makes it fail once the new version is live.
    """

    name = "recording"

    def __init__(self):
        self.deployed: list[tuple[str, str]] = []
        self.live: dict | None = None
        self.fail_before_switch = False

    def deploy(self, version: ModelVersion, endpoint=None, *, dry_run=False, previous=None) -> Deployment:
        if dry_run:
            return Deployment(self.name, endpoint or "ep", version.name, version.version, "planned")
        if self.fail_before_switch:
            self.fail_before_switch = False
            raise BackendError("endpoint config rejected (before the traffic switch)")
        self.deployed.append((version.name, version.version))
        self.live = {"model_name": version.name, "model_version": version.version, "previous": previous}
        return Deployment(self.name, endpoint or "ep", version.name, version.version, "running")

    def describe(self, endpoint=None):
        if self.live is None:
            return None
        return Deployment(self.name, endpoint or "ep", self.live["model_name"], self.live["model_version"], "running",
                          details={"previous": self.live["previous"]})


def test_target_lookup():
    """Every target name resolves to a DeployTarget whose ``name`` is that name."""
    import importlib

    assert set(TARGETS) == {"local", "azureml", "sagemaker"}
    for kind in TARGETS:
        module_name, _, cls_name = TARGETS.lookup(kind).partition(":")
        cls = getattr(importlib.import_module(module_name), cls_name)
        assert issubclass(cls, DeployTarget) and cls.name == kind, kind
    assert get_target("local").name == "local"
    with pytest.raises(NotFoundError, match="Did you mean 'local'"):
        get_target("lokal")


def test_only_approved_versions_deploy(registry, make_run, model_name):
    svc = ApprovalService(registry)
    target = RecordingTarget()
    pending = svc.register(make_run(), model_name, by="alice")
    with pytest.raises(GateError, match="PendingManualApproval"):
        deploy_mod.deploy(model_name, pending.version, target, registry=registry)
    with pytest.raises(GateError, match="PendingManualApproval"):
        deploy_mod.deploy(model_name, pending.version, target, dry_run=True, registry=registry)
    svc.reject(model_name, pending.version, by="bob", comment="no")
    with pytest.raises(GateError, match="Rejected"):
        deploy_mod.deploy(model_name, pending.version, target, registry=registry)
    assert target.deployed == []
    ok = svc.register(make_run(), model_name, by="alice")
    svc.approve(model_name, ok.version, by="bob", comment="fine")
    d = deploy_mod.deploy(model_name, ok.version, target, "prod", registry=registry)
    assert (d.status, d.endpoint, target.deployed) == ("running", "prod", [(model_name, ok.version)])


def test_tflite_runtime_deploys_only_where_its_parity_passed(registry, make_run, model_name):
    svc = ApprovalService(registry)
    mv = svc.register(make_run(parity_passed={"float": True, "int8": False}), model_name, by="alice", force=True,
                      comment="int8 parity is known to fail here")
    svc.approve(model_name, mv.version, by="bob", comment="ok for float")
    target = RecordingTarget()
    with pytest.raises(ConfigError, match="TFLite int8 parity failed"):
        deploy_mod.deploy(model_name, mv.version, target, "prod", registry=registry, runtime="tflite-int8")
    with pytest.raises(ConfigError, match="TFLite int8 parity failed"):
        deploy_mod.deploy(model_name, mv.version, target, "prod", registry=registry, runtime="tflite-int8", dry_run=True)
    with pytest.raises(ConfigError, match="unknown serving runtime 'onnx'"):
        deploy_mod.deploy(model_name, mv.version, target, "prod", registry=registry, runtime="onnx")
    assert target.deployed == [] and target.runtime == "savedmodel"
    d = deploy_mod.deploy(model_name, mv.version, target, "prod", registry=registry, runtime="tflite-float")
    assert target.deployed == [(model_name, mv.version)] and target.runtime == "tflite-float"
    assert d.details["runtime"] == "tflite-float"


@pytest.mark.parametrize("target_name", ["local", "azureml", "sagemaker"])
def test_every_target_passes_the_runtime_to_the_container(target_name):
    from deployment.targets.base import container_env

    mv = ModelVersion(name="bccd", version="3", status=ApprovalStatus.APPROVED, artifact_uri="/runs/r/export",
                      registered_by="ci", created_at="2026-12-01T00:00:00Z", tags={"artifact.sha256": "ab" * 32})
    assert container_env(mv, "tflite-int8") == {"DETOPS_MODEL_NAME": "bccd", "DETOPS_MODEL_VERSION": "3",
                                                "DETOPS_MODEL_SHA256": "ab" * 32, "DETOPS_RUNTIME": "tflite-int8"}
    kwargs = {"capture_uri": "s3://b/capture/", "role_arn": "arn:aws:iam::123456789012:role/r"} if target_name == "sagemaker" else {}
    t = get_target(target_name, **kwargs)
    t.runtime = "tflite-float"
    if target_name == "local":
        env = t.model_environment(mv)
    elif target_name == "azureml":
        env = t.build_deployment(mv, "ep", "blue").environment_variables
    else:
        env = t.specs(mv, "ep", "arn:aws:sagemaker:us-east-1:123456789012:model-package/bccd/3", "1")["model"][
            "PrimaryContainer"]["Environment"]
    assert env["DETOPS_RUNTIME"] == "tflite-float" and env["DETOPS_MODEL_SHA256"] == "ab" * 32


def _approved_versions(svc, make_run, name, n):
    out = []
    for _ in range(n):
        mv = svc.register(make_run(), name, by="alice")
        svc.approve(name, mv.version, by="bob", comment="ok")
        out.append(mv.version)
    return out


def test_rollback_goes_to_the_version_live_before_not_a_newer_approved_one(registry, make_run, model_name):
    """V3 live, V4 approved but never released, V5 released and failing: back to V3, never V4."""
    svc = ApprovalService(registry)
    target = RecordingTarget()
    v3, v4, v5 = _approved_versions(svc, make_run, model_name, 3)
    with pytest.raises(NotFoundError, match="not deployed"):
        deploy_mod.rollback(target, model_name, registry=registry)
    first = deploy_mod.deploy(model_name, v3, target, registry=registry)
    assert first.details["previous"] is None
    d = deploy_mod.deploy(model_name, v5, target, registry=registry)
    assert d.details["previous"]["model_version"] == v3  # recorded before the switch
    back = deploy_mod.rollback(target, model_name, if_serving=v5, registry=registry)
    assert back.model_version == v3 and back.details["rollback"] == "exact"
    assert target.deployed == [(model_name, v3), (model_name, v5), (model_name, v3)]
    assert v4 not in [v for _, v in target.deployed]
    # nothing recorded before V3: a further rollback refuses rather than guessing
    with pytest.raises(GateError, match="nothing to roll back to"):
        deploy_mod.rollback(target, model_name, registry=registry)


def test_refused_deploy_never_rolls_back(registry, make_run, model_name):
    """A deploy refused by the approval gate (exit 4) leaves the healthy endpoint alone, rollback too."""
    svc = ApprovalService(registry)
    target = RecordingTarget()
    v1, v2 = _approved_versions(svc, make_run, model_name, 2)
    deploy_mod.deploy(model_name, v1, target, registry=registry)
    deploy_mod.deploy(model_name, v2, target, registry=registry)
    pending = svc.register(make_run(), model_name, by="alice")
    with pytest.raises(GateError, match="PendingManualApproval"):
        deploy_mod.deploy(model_name, pending.version, target, registry=registry)
    d = deploy_mod.rollback(target, model_name, if_serving=pending.version, registry=registry)
    assert d.details["rollback"] == "none" and "never switched traffic" in d.details["reason"]
    assert target.deployed[-1] == (model_name, v2)  # still the healthy V2, not downgraded to V1
    assert len(target.deployed) == 2


def test_deploy_failed_before_switch_never_rolls_back(registry, make_run, model_name):
    svc = ApprovalService(registry)
    target = RecordingTarget()
    v1, v2, v3 = _approved_versions(svc, make_run, model_name, 3)
    deploy_mod.deploy(model_name, v1, target, registry=registry)
    deploy_mod.deploy(model_name, v2, target, registry=registry)
    target.fail_before_switch = True
    with pytest.raises(BackendError, match="before the traffic switch"):
        deploy_mod.deploy(model_name, v3, target, registry=registry)
    d = deploy_mod.rollback(target, model_name, if_serving=v3, registry=registry)
    assert d.details["rollback"] == "none" and d.model_version == v2
    assert target.deployed == [(model_name, v1), (model_name, v2)]


def test_rollback_target_must_still_be_approved(registry, make_run, model_name):
    svc = ApprovalService(registry)
    target = RecordingTarget()
    v1, v2 = _approved_versions(svc, make_run, model_name, 2)
    deploy_mod.deploy(model_name, v1, target, registry=registry)
    deploy_mod.deploy(model_name, v2, target, registry=registry)
    svc.reject(model_name, v1, by="carol", comment="withdrawn: label leak")
    with pytest.raises(GateError, match="Rejected"):
        deploy_mod.rollback(target, model_name, if_serving=v2, registry=registry)
    assert target.deployed[-1] == (model_name, v2)


def test_tampered_artifact_is_refused_before_anything_is_created(registry, make_run, model_name):
    from pathlib import Path

    from deployment.registry.artifact import ArtifactIntegrityError

    svc = ApprovalService(registry)
    target = RecordingTarget()
    run = make_run()
    mv = svc.register(run, model_name, by="alice")
    svc.approve(model_name, mv.version, by="bob", comment="ok")
    pb = Path(run) / "export" / "saved_model" / "saved_model.pb"
    pb.write_bytes(pb.read_bytes() + b"\x00")
    with pytest.raises(ArtifactIntegrityError, match="changed: saved_model/saved_model.pb"):
        deploy_mod.deploy(model_name, mv.version, target, registry=registry)
    assert target.deployed == []
    (Path(run) / "export" / "extra.bin").write_bytes(b"x")
    pb.unlink()
    with pytest.raises(ArtifactIntegrityError, match="missing: saved_model/saved_model.pb; unexpected: extra.bin"):
        deploy_mod.deploy(model_name, mv.version, target, registry=registry)


def test_local_target_dry_run_and_missing_key(monkeypatch):
    from training.errors import ConfigError

    mv = ModelVersion("m", "1", "Approved", "/x/export", "alice", "now")
    t = get_target("local", port=18999)
    with pytest.raises(ConfigError, match="DETOPS_API_KEY"):
        t.deploy(mv, dry_run=True)
    monkeypatch.setenv("DETOPS_API_KEY", "k" * 20)
    d = t.deploy(mv, "my endpoint", dry_run=True)
    assert (d.status, d.url, d.endpoint) == ("planned", "http://127.0.0.1:18999", "my endpoint")
    assert t.describe("my endpoint") is None


# -- CLI ------------------------------------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch, registry):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri)
    monkeypatch.setenv("DETOPS_IDENTITY", "declared")  # one test process plays every principal (--by)
    return registry


def test_cli_register_approve_flow(cli, cli_env, make_run, model_name):
    run = make_run(test_ap=0.3)
    code, out = cli("gate", "--run-dir", run, "--name", model_name)
    assert code == 0 and "quality gate passed" in out
    code, out = cli("register", "--run-dir", run, "--name", model_name)
    assert code == ExitCode.USAGE and "needs --by" in out  # declared identities need --by, no default
    code, out = cli("register", "--run-dir", run, "--name", model_name, "--by", "ci-bot")
    assert code == 0 and "version 1: PendingManualApproval" in out
    code, out = cli("deploy", "--target", "local", "--name", model_name, "--version", "1", "--dry-run")
    assert code == ExitCode.GATE and "only Approved" in out
    code, out = cli("approve", model_name, "1", "--by", "ci-bot", "--comment", "self")
    assert code == ExitCode.GATE and "may not approve" in out
    code, out = cli("approve", model_name, "1", "--by", "reviewer")
    assert code == ExitCode.USAGE and "Missing option '--comment'" in out  # --comment required
    code, out = cli("approve", model_name, "1", "--by", "reviewer", "--comment", "PR curves ok")
    assert code == 0 and "Approved" in out
    code, out = cli("models", "list", "--name", model_name, "--status", "Approved", "--json")
    assert code == 0
    listed = json.loads(out)
    assert [(v["version"], v["status"]) for v in listed] == [("1", "Approved")]
    code, out = cli("models", "show", model_name, "1")
    assert code == 0 and "approve by reviewer: PR curves ok" in out and "gate.passed: true" in out
    code, out = cli("models", "show", model_name, "9")
    assert code == ExitCode.NOT_FOUND
    code, out = cli("models", "list", "--status", "approved")
    assert code == ExitCode.USAGE and "PendingManualApproval" in out


def _approvals(*entries):
    """GitHub's "review history for a workflow run" list: (state, environment, login) per entry."""
    return [{"state": st, "comment": "", "environments": [{"id": 7, "name": env}], "user": {"login": who, "id": 3}}
            for st, env, who in entries]


def test_cli_register_records_the_environment_reviewer_not_the_ci_principal(cli, cli_env, make_run, model_name,
                                                                             tmp_path, monkeypatch):
    approvals = tmp_path / "approvals.json"
    approvals.write_text(json.dumps(_approvals(("approved", "training", "merger"), ("rejected", "model-registration", "eve"),
                                               ("approved", "model-registration", "rita"))))
    code, out = cli("reviewer", str(approvals), "--environment", "model-registration")
    assert code == 0 and out.strip() == "rita"
    approvals.write_text(json.dumps(_approvals(("approved", "training", "merger"), ("rejected", "model-registration", "eve"))))
    code, out = cli("reviewer", str(approvals), "--environment", "model-registration")
    assert code == ExitCode.USAGE and "no reviewer approved the 'model-registration' environment" in out
    approvals.write_text("{}")
    assert cli("reviewer", str(approvals), "--environment", "model-registration")[0] == ExitCode.USAGE

    monkeypatch.setenv("DETOPS_REVIEWER", "rita")
    code, out = cli("register", "--run-dir", make_run(test_ap=0.3), "--name", model_name, "--by", "ci-bot")
    assert code == 0
    code, out = cli("models", "show", model_name, "1", "--json")
    shown = json.loads(out)
    assert shown["tags"]["gate.reviewer"] == "rita" and shown["registered_by"] == "ci-bot"
    register = [e for e in shown["audit"] if e["action"] == "register"]
    assert register[0]["details"]["reviewer"] == "rita"


def test_cli_gate_failure_exit_code_and_force(cli, cli_env, make_run, model_name):
    base = make_run(test_ap=0.4)
    assert cli("register", "--run-dir", base, "--name", model_name, "--by", "a")[0] == 0
    assert cli("approve", model_name, "1", "--by", "b", "--comment", "baseline")[0] == 0
    worse = make_run(test_ap=0.3)
    code, out = cli("gate", "--run-dir", worse, "--name", model_name, "--margin", "0.05")
    assert code == ExitCode.GATE == 4 and '"passed": false' in out
    assert cli("gate", "--run-dir", worse, "--name", model_name, "--margin", "0.2")[0] == 0
    code, out = cli("register", "--run-dir", worse, "--name", model_name, "--by", "a")
    assert code == 4
    code, out = cli("register", "--run-dir", worse, "--name", model_name, "--by", "a", "--force")
    assert code == ExitCode.USAGE and "--comment" in out
    code, out = cli(
        "register", "--run-dir", worse, "--name", model_name, "--by", "a", "--force", "--comment", "known regression"
    )
    assert code == 0 and "gate.forced: true" in out
    code, out = cli("reject", model_name, "2", "--by", "b", "--comment", "too weak")
    assert code == 0 and "Rejected" in out
    code, out = cli("deploy", "--target", "local", "--name", model_name, "--version", "2", "--dry-run")
    assert code == 4


def test_cli_unknown_target_and_missing_version(cli, cli_env, model_name):
    assert cli("deploy", "--target", "kubernetes", "--name", model_name, "--version", "1")[0] == ExitCode.NOT_FOUND
    assert cli("approve", model_name, "1", "--by", "b", "--comment", "c")[0] == ExitCode.NOT_FOUND


def test_cli_smoke_test_failures(cli, monkeypatch, tmp_path, bccd_image):
    img = tmp_path / "cell image.jpg"
    img.write_bytes(bccd_image)
    monkeypatch.setenv("SMOKE_KEY", "k" * 20)
    code, out = cli("smoke-test", "--url", "http://127.0.0.1:9", "--image", str(img), "--api-key-env", "SMOKE_KEY")
    assert code == ExitCode.BACKEND and "unreachable" in out
    code, _ = cli("smoke-test", "--url", "http://127.0.0.1:9", "--image", str(img), "--api-key-env", "UNSET_VAR_X")
    assert code == ExitCode.USAGE


def test_cli_smoke_test_against_live_server(cli, live_server, monkeypatch, tmp_path, bccd_image):
    img = tmp_path / "cell.jpg"
    img.write_bytes(bccd_image)
    monkeypatch.setenv("GOOD_KEY", "test-key-0123456789abcdef")
    monkeypatch.setenv("BAD_KEY", "wrong-key-0123456789abcdef")
    code, out = cli("smoke-test", "--url", live_server.url, "--image", str(img), "--api-key-env", "GOOD_KEY")
    assert code == 0 and '"num_detections": ' in out
    code, out = cli("smoke-test", "--url", live_server.url, "--image", str(img), "--api-key-env", "BAD_KEY")
    assert code == ExitCode.BACKEND and "401" in out


def test_cli_smoke_test_checks_which_version_answers(cli, live_server, monkeypatch, tmp_path, bccd_image):
    """The release's smoke test names the version it deployed: the service answering with another one
    (the old variant during an update, or after a rolled-back one) fails it. The live server is version 7."""
    img = tmp_path / "cell.jpg"
    img.write_bytes(bccd_image)
    monkeypatch.setenv("GOOD_KEY", "test-key-0123456789abcdef")
    args = ("smoke-test", "--url", live_server.url, "--image", str(img), "--api-key-env", "GOOD_KEY")
    code, out = cli(*args, "--expect-version", "7")
    assert code == 0 and '"version": "7"' in out
    code, out = cli(*args, "--expect-version", "8")
    assert code == ExitCode.BACKEND
    assert f"local endpoint {live_server.url} answered with model version 7, not 8" in " ".join(out.split())


def test_sagemaker_smoke_test_checks_which_version_answers() -> None:
    import io

    from deployment.smoke import smoke_test

    class Runtime:  # sagemaker-runtime InvokeEndpoint: the old variant still answers
        def invoke_endpoint(self, **kwargs):
            body = {"model": {"name": "detops-dev-detector", "version": "1"}, "predictions": [{"num_detections": 2}]}
            return {"Body": io.BytesIO(json.dumps(body).encode())}

    image = str(Path(__file__).resolve().parents[2] / "tests" / "ci" / "data" / "smoke.jpg")
    assert smoke_test(None, image, target="sagemaker", endpoint="e", runtime_client=Runtime(), expect_version="1")["model"]["version"] == "1"
    with pytest.raises(BackendError, match="sagemaker endpoint e answered with model version 1, not 2"):
        smoke_test(None, image, target="sagemaker", endpoint="e", runtime_client=Runtime(), expect_version="2")


def test_promote_cli_names_the_source_registry_per_kind(cli, monkeypatch):
    """The source (dev) registry is built from --source-uri in the kind's own terms, the SageMaker group
    account and the source name from the settings the prod stack exports."""
    from deployment import promote as promote_mod
    from deployment import registry as registry_mod

    built: list[tuple[str | None, dict]] = []
    promoted: list[dict] = []
    monkeypatch.setattr(registry_mod, "get_registry", lambda kind=None, **kw: built.append((kind, kw)) or object())

    def fake_promote(source, dest, name, version, root, by, source_name=None):
        promoted.append({"name": name, "version": version, "root": root, "source_name": source_name})
        return ModelVersion(name, "7", ApprovalStatus.APPROVED, root, "alice", "2026-12-01T00:00:00+00:00")

    monkeypatch.setattr(promote_mod, "promote", fake_promote)
    from deployment.registry.identity import Principal

    monkeypatch.delenv("DETOPS_IDENTITY", raising=False)  # a cloud registry: its cloud's principal (no STS/Entra here)
    monkeypatch.setattr("training.cloud.aws.caller_principal", lambda client=None: Principal("AROADEPLOYER:gha", "deployer", "aws"))
    monkeypatch.setattr("training.cloud.azure.caller_principal", lambda credential=None: Principal("oid-deployer", "deployer", "azure"))
    monkeypatch.setenv("DETOPS_PROMOTE_SOURCE_ACCOUNT", "111122223333")
    monkeypatch.setenv("DETOPS_PROMOTE_SOURCE_NAME", "detops-dev-detector")
    code, out = cli("promote", "--registry", "sagemaker", "--name", "detops-prod-detector", "--version", "3",
                    "--source-uri", "s3://dev-runs/registry", "--artifact-root", "s3://prod-runs/promoted", "--print-version")
    assert code == 0 and out.strip() == "7", out
    assert built == [("sagemaker", {}), ("sagemaker", {"metadata_uri": "s3://dev-runs/registry", "group_account_id": "111122223333"})]
    assert promoted == [{"name": "detops-prod-detector", "version": "3", "root": "s3://prod-runs/promoted",
                         "source_name": "detops-dev-detector"}]
    built.clear()
    monkeypatch.delenv("DETOPS_PROMOTE_SOURCE_NAME")
    uri = "azureml://subscriptions/0000/resourceGroups/rg-dev/workspaces/mlw-dev"
    code, _ = cli("promote", "--registry", "azureml", "--name", "bccd-detector", "--version", "3", "--source-uri", uri,
                  "--artifact-root", "az://runs/promoted", "--print-version")
    assert code == 0 and built[1] == ("azureml", {"workspace_uri": uri})  # the AWS account is not an Azure setting
    assert promoted[-1]["source_name"] is None
    built.clear()
    code, _ = cli("promote", "--registry", "mlflow", "--name", "m", "--version", "1", "--source-uri", "sqlite:///dev.db",
                  "--artifact-root", "prod-artifacts")
    assert code == 0 and built[1] == ("mlflow", {"tracking_uri": "sqlite:///dev.db"})


def test_console_script_shows_no_mlflow_info_lines_on_a_new_store(tmp_path):
    """MLflow logs INFO lines to stderr when it creates a store; `detops` shows warnings only."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DETOPS_"))}
    env.update(DETOPS_HOME=str(tmp_path / "home"), DETOPS_REGISTRY="mlflow",
               MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'new store.db'}")
    proc = subprocess.run([sys.executable, "-m", "detops.cli", "models", "list", "--name", "bccd", "--json"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout) == []
    assert (tmp_path / "new store.db").exists()  # the store was created, quietly
    assert proc.stderr == ""
