"""Deployment commands: ``gate``, ``register``, ``approve``, ``reject``, ``models list|show``, ``serve``,
``deploy``, ``smoke-test``, ``rollback``.

Thin: each parses its options, calls one function of :mod:`deployment` and reports. CI workflows
call exactly these flags. Exit codes: 4 (``ExitCode.GATE``) when a quality or approval gate refuses,
5 when a run or version does not exist, 6 when an endpoint or backend fails.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

out = Console(soft_wrap=True)

app = typer.Typer(help="Quality gate, model registry, approval, serving and deployment commands.")
"""The deployment command group; :mod:`detops.cli` mounts it with ``add_typer`` (commands at the top level)."""
models = typer.Typer(help="List and show registered model versions.", no_args_is_help=True)
app.add_typer(models, name="models")


NameOpt = Annotated[str, typer.Option("--name", help="Registered model name.")]
RunDirOpt = Annotated[str, typer.Option("--run-dir", help="Run folder (local path, az:// or s3:// URL).")]
ByOpt = Annotated[
    str | None,
    typer.Option(
        "--by",
        help="Declared identity; only with DETOPS_IDENTITY=declared (local). Otherwise the acting "
        "identity is the authenticated principal (AWS STS caller, Azure token oid/name, OS user).",
    ),
]
CommentOpt = Annotated[str, typer.Option("--comment", help="Why; stored in the audit trail.")]
NameArg = Annotated[str, typer.Argument(help="Model name.")]
VersionArg = Annotated[str, typer.Argument(help="Model version.")]
RegistryOpt = Annotated[
    str | None,
    typer.Option("--registry", help="Registry kind (mlflow, azureml, sagemaker); default $DETOPS_REGISTRY or mlflow."),
]


def _service(registry: str | None):
    from deployment.registry import get_registry
    from deployment.registry.approval import ApprovalService

    return ApprovalService(get_registry(registry))


def _who(registry: str | None, by: str | None):
    from deployment.registry.identity import current_principal

    return current_principal(registry, by)


def _print_version(mv, as_json: bool = False) -> None:
    if as_json:
        from dataclasses import asdict

        d = asdict(mv)
        d["status"] = mv.status.value
        out.print_json(json.dumps(d, default=str))
        return
    out.print(f"[bold]{mv.name}[/] version [bold]{mv.version}[/]: {mv.status.value}", highlight=False)
    out.print(f"  artifact: {mv.artifact_uri}", highlight=False)
    out.print(f"  registered by {mv.registered_by} at {mv.created_at}", highlight=False)
    for k in ("test/AP", "test/AP50", "val/AP", "val/AP50"):
        if k in mv.metrics:
            out.print(f"  {k}: {mv.metrics[k]:.4f}", highlight=False)
    for k in (
        "run_url",
        "dataset_sha256",
        "code_version",
        "gate.passed",
        "gate.forced",
        "mlflow_run_id",
        "artifact.sha256",
        "registered_by.id",
        "promoted_from",
    ):
        if k in mv.tags:
            out.print(f"  {k}: {mv.tags[k]}", highlight=False)
    if mv.audit:
        out.print("  audit:")
        for e in mv.audit:
            out.print(f"    {e.at} {e.action} by {e.actor}" + (f": {e.comment}" if e.comment else ""), highlight=False)


@app.command()
def gate(
    run_dir: RunDirOpt,
    name: NameOpt,
    margin: Annotated[
        float | None, typer.Option("--margin", help="Allowed test AP drop vs. the Approved version (default 0.01).")
    ] = None,
    registry: RegistryOpt = None,
) -> None:
    """Check the quality gate of a run: its floor (the run config's gate.*), TFLite parity and the
    current Approved version (exit 4 if it fails)."""
    from training.errors import GateError

    decision = _service(registry).gate(run_dir, name, margin)
    out.print_json(json.dumps(decision.to_dict()))
    if not decision.passed:
        raise GateError("quality gate failed: " + "; ".join(decision.reasons))
    out.print("quality gate passed")


@app.command("register")
def register_cmd(
    run_dir: RunDirOpt,
    name: NameOpt,
    by: ByOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Register despite a failed gate (needs --comment; audited).")
    ] = False,
    comment: Annotated[str, typer.Option("--comment", help="Why (required with --force).")] = "",
    margin: Annotated[float | None, typer.Option("--margin", help="Gate margin (default 0.01 test AP).")] = None,
    reviewer: Annotated[
        str | None,
        typer.Option("--reviewer", help="Who passed the CI job's human gate (default $DETOPS_REVIEWER); audited."),
    ] = None,
    registry: RegistryOpt = None,
) -> None:
    """Register a complete run's export as a new PendingManualApproval version (after the quality gate)."""
    from training import tracking
    from training.settings import CommonSettings

    try:
        mlflow_run_id = tracking.find_run(run_dir)
    except Exception:  # noqa: BLE001 - tracking is optional lineage; registration does not depend on it
        mlflow_run_id = None
    who = _who(registry, by)  # first: a refused identity never reaches the registry
    mv = _service(registry).register(
        run_dir, name, who, margin=margin, force=force, comment=comment, mlflow_run_id=mlflow_run_id,
        reviewer=reviewer or CommonSettings.load().reviewer,
    )
    _print_version(mv)


@app.command()
def approve(name: NameArg, version: VersionArg, comment: CommentOpt, by: ByOpt = None,
            registry: RegistryOpt = None) -> None:
    """Approve a PendingManualApproval version (not by the principal that registered it)."""
    who = _who(registry, by)  # first: a refused identity never reaches the registry
    _print_version(_service(registry).approve(name, version, who, comment))


@app.command()
def reject(name: NameArg, version: VersionArg, comment: CommentOpt, by: ByOpt = None,
           registry: RegistryOpt = None) -> None:
    """Reject a PendingManualApproval or Approved version."""
    who = _who(registry, by)
    _print_version(_service(registry).reject(name, version, who, comment))


@app.command("reviewer")
def reviewer_cmd(
    approvals: Annotated[Path, typer.Argument(help="JSON of GET /repos/{owner}/{repo}/actions/runs/{run_id}/approvals.")],
    environment: Annotated[str, typer.Option("--environment", help="The job's GitHub environment.")],
) -> None:
    """Print who approved ENVIRONMENT's gate in a GitHub Actions run (for DETOPS_REVIEWER; exit 2 if nobody did)."""
    from deployment.registry.identity import github_environment_reviewer
    from training.errors import ConfigError

    try:
        document = json.loads(approvals.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{approvals}: cannot read the workflow run's approvals: {e}") from e
    print(github_environment_reviewer(document, environment))


@models.command("list")
def models_list(
    name: Annotated[str | None, typer.Option("--name", help="Only this model.")] = None,
    status: Annotated[str | None, typer.Option("--status", help="PendingManualApproval, Approved or Rejected.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    registry: RegistryOpt = None,
) -> None:
    """Registered versions with their approval status and test metrics."""
    from deployment.registry.base import ApprovalStatus
    from training.errors import ConfigError

    want = None
    if status:
        try:
            want = ApprovalStatus(status)
        except ValueError:
            raise ConfigError(f"--status {status!r}: use one of {', '.join(s.value for s in ApprovalStatus)}") from None
    versions = [v for v in _service(registry).list_versions(name) if want is None or v.status == want]
    if as_json:
        out.print_json(
            json.dumps(
                [
                    {
                        "name": v.name,
                        "version": v.version,
                        "status": v.status.value,
                        "registered_by": v.registered_by,
                        "created_at": v.created_at,
                        "metrics": v.metrics,
                        "artifact_uri": v.artifact_uri,
                    }
                    for v in versions
                ]
            )
        )
        return
    table = Table("name", "version", "status", "test/AP", "test/AP50", "registered by", "created")
    for v in versions:
        table.add_row(
            v.name,
            v.version,
            v.status.value,
            f"{v.metrics.get('test/AP', float('nan')):.4f}",
            f"{v.metrics.get('test/AP50', float('nan')):.4f}",
            v.registered_by,
            v.created_at,
        )
    out.print(table)


@models.command("show")
def models_show(
    name: NameArg,
    version: VersionArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    registry: RegistryOpt = None,
) -> None:
    """One version: status, metrics, lineage, gate decision and audit trail."""
    _print_version(_service(registry).get_version(name, version), as_json)


@app.command()
def serve(
    name: Annotated[str | None, typer.Option("--name", help="Registered model name.")] = None,
    version: Annotated[str | None, typer.Option("--version", help="Model version.")] = None,
    model_dir: Annotated[
        str | None, typer.Option("--model-dir", help="SavedModel or export/ folder (instead of --name/--version).")
    ] = None,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8080,
    registry: RegistryOpt = None,
) -> None:
    """Run the scoring service in the foreground, for development (any approval status)."""
    from deployment.serving.app import create_app, run_server
    from deployment.serving.settings import load_settings
    from training.errors import ConfigError

    if model_dir and (name or version):
        raise ConfigError("give either --model-dir or --name with --version, not both")
    if model_dir:
        settings = load_settings(model_dir=model_dir)
    elif name and version:
        mv = _service(registry).get_version(name, version)
        if mv.status.value != "Approved":
            out.print(f"[yellow]note:[/] {name} version {version} is {mv.status.value} (serve is for development)")
        settings = load_settings(model_dir=mv.artifact_uri, model_name=name, model_version=str(version))
    else:
        raise ConfigError("give --model-dir, or --name and --version")
    run_server(create_app(settings), host, port)


@app.command()
def deploy(
    target: Annotated[str, typer.Option("--target", help="local, azureml or sagemaker.")],
    name: NameOpt,
    version: Annotated[str, typer.Option("--version", help="Model version (must be Approved).")],
    endpoint: Annotated[str | None, typer.Option("--endpoint", help="Endpoint name.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be deployed; change nothing.")] = False,
    port: Annotated[
        int | None, typer.Option("--port", help="Local target: port (default $DETOPS_LOCAL_PORT or 8080).")
    ] = None,
    runtime: Annotated[
        str,
        typer.Option("--runtime", help="Serving runtime: savedmodel, tflite-float or tflite-int8 (TFLite only if "
                     "the version's parity check passed; docs/serving.md)."),
    ] = "savedmodel",
    registry: RegistryOpt = None,
    skip_preflight: Annotated[
        bool, typer.Option("--skip-preflight", help="SageMaker: deploy without first checking the endpoint quota.")
    ] = False,
) -> None:
    """Deploy an Approved model version (any other status is refused, exit 4).

    On SageMaker the endpoint-usage quota of the instance type is checked first (exit 4 with the
    numbers when short; ``--skip-preflight`` deploys anyway).
    """
    from deployment import deploy as deploy_mod
    from deployment.registry import get_registry

    kwargs: dict = {"port": port} if (target == "local" and port) else {}
    if target == "sagemaker" and skip_preflight:
        kwargs["preflight"] = False
    d = deploy_mod.deploy(name, version, target, endpoint, dry_run=dry_run, registry=get_registry(registry),
                          runtime=runtime, **kwargs)
    out.print_json(json.dumps(d.to_dict(), default=str))


@app.command()
def rollback(
    target: Annotated[str, typer.Option("--target", help="local, azureml or sagemaker.")],
    name: NameOpt,
    endpoint: Annotated[str | None, typer.Option("--endpoint", help="Endpoint name.")] = None,
    if_serving: Annotated[
        str | None,
        typer.Option(
            "--if-serving",
            help="Roll back only if the endpoint serves this version (the one a "
            "release tried to ship); otherwise change nothing.",
        ),
    ] = None,
    port: Annotated[int | None, typer.Option("--port", help="Local target: port.")] = None,
    registry: RegistryOpt = None,
) -> None:
    """Put back exactly the version that was live before the current one on an endpoint."""
    from deployment import deploy as deploy_mod
    from deployment.registry import get_registry

    kwargs = {"port": port} if (target == "local" and port) else {}
    d = deploy_mod.rollback(target, name, endpoint, if_serving=if_serving, registry=get_registry(registry), **kwargs)
    if d.details.get("rollback") == "none":
        out.print(f"nothing rolled back: {d.details.get('reason')}", highlight=False)
    out.print_json(json.dumps(d.to_dict(), default=str))


@app.command("smoke-test")
def smoke_test(
    image: Annotated[str, typer.Option("--image", help="JPEG or PNG to score (path or fsspec URL).")],
    url: Annotated[
        str | None, typer.Option("--url", help="Local: base URL. Azure ML: scoring URI (default: the endpoint's).")
    ] = None,
    target: Annotated[str, typer.Option("--target", help="local, azureml or sagemaker.")] = "local",
    endpoint: Annotated[str | None, typer.Option("--endpoint", help="Azure ML / SageMaker endpoint name.")] = None,
    api_key_env: Annotated[
        str | None,
        typer.Option(
            "--api-key-env",
            help="Variable holding the API key (local; default DETOPS_API_KEY) or the endpoint key (Azure ML; "
            "default: asked from the workspace).",
        ),
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per request.")] = 60.0,
    expect_version: Annotated[
        str | None,
        typer.Option("--expect-version", help="Fail unless this model version answers (the release's version)."),
    ] = None,
) -> None:
    """Check a deployed endpoint through its platform's front door (non-zero exit on any failure)."""
    from deployment.smoke import smoke_test as run

    # Azure ML: the endpoint key comes from the workspace unless a variable is named explicitly (DETOPS_API_KEY
    # is the container's own key, not the gateway's)
    key_env = api_key_env or ("DETOPS_API_KEY" if target == "local" else "DETOPS_SMOKE_UNSET_KEY")
    result = run(url, image, api_key_env=key_env, timeout=timeout, target=target, endpoint=endpoint,
                 expect_version=expect_version)
    out.print_json(json.dumps(result))


@app.command()
def promote(
    name: NameOpt,
    version: Annotated[str, typer.Option("--version", help="Approved version in the source registry.")],
    source_uri: Annotated[
        str,
        typer.Option(
            "--source-uri",
            help="Source (dev) registry: MLflow tracking URI (mlflow), s3:// metadata URI (sagemaker), or "
            "azureml://subscriptions/<sub>/resourceGroups/<rg>/workspaces/<ws> (azureml); the destination (prod) "
            "is the current settings.",
        ),
    ],
    artifact_root: Annotated[
        str, typer.Option("--artifact-root", help="Destination folder/URL (prod storage) the artifact is copied under.")
    ],
    print_version: Annotated[
        bool, typer.Option("--print-version", help="Print only the destination version number (for CI).")
    ] = False,
    source_name: Annotated[
        str | None,
        typer.Option("--source-name", help="The model's name in the source registry (default "
                     "$DETOPS_PROMOTE_SOURCE_NAME, else --name)."),
    ] = None,
    source_account: Annotated[
        str | None,
        typer.Option("--source-account", help="sagemaker: the dev AWS account owning the model package group "
                     "(default $DETOPS_PROMOTE_SOURCE_ACCOUNT; unset: this account)."),
    ] = None,
    registry: RegistryOpt = None,
) -> None:
    """Copy an Approved version (same digest, verified) from the dev registry into this one, Approved."""
    from deployment.promote import promote as run
    from deployment.registry import get_registry
    from training.settings import CommonSettings

    common = CommonSettings.load()
    dest = get_registry(registry)
    kwargs = _source_kwargs(registry, source_uri)
    account = source_account or common.promote_source_account
    if account and _kind(registry) == "sagemaker":
        kwargs["group_account_id"] = account
    source = get_registry(registry, **kwargs)
    mv = run(source, dest, name, version, artifact_root, by=_who(registry, None),
             source_name=source_name or common.promote_source_name)
    if print_version:
        print(mv.version)
        return
    _print_version(mv)


def _kind(kind: str | None) -> str:
    from training.settings import CommonSettings

    return kind or CommonSettings.load().registry


def _source_kwargs(kind: str | None, uri: str) -> dict:
    """Constructor argument naming the source registry of ``detops promote`` for the registry kind."""
    return {{"sagemaker": "metadata_uri", "azureml": "workspace_uri"}.get(_kind(kind), "tracking_uri"): uri}
