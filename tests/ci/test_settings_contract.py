"""The settings contract (issue 10, item 1): one declaration per variable, nothing read elsewhere,
docs generated from the classes, one error naming the missing setting and where it comes from."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from detops import contract
from training import settings as S
from training.cloud import aws, azure
from training.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
#: The only modules allowed to read DETOPS_/AZURE_/AWS_ variables.
SETTINGS_MODULES = {"training/settings.py", "deployment/serving/settings.py"}
SCANNED = ("training", "deployment", "detops", "benchmarks", "scripts", "infra", "docker")
PREFIXED = re.compile(r"^(DETOPS|AZURE|AZUREML|AWS)_[A-Z0-9_]+$")


def env_reads(source: str) -> list[tuple[int, str]]:
    """``(line, name)`` of every read of a prefixed variable: ``os.environ[...]``, ``os.environ.get``,
    ``os.getenv``, ``"X" in os.environ`` and ``<mapping>.get("X")`` / ``<mapping>["X"]``."""
    hits = []
    for node in ast.walk(ast.parse(source)):
        name = None
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            attr = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if attr in ("get", "getenv", "pop") and isinstance(node.args[0].value, str):
                name = node.args[0].value
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and isinstance(node.slice, ast.Constant):
            name = node.slice.value if isinstance(node.slice.value, str) else None
        elif isinstance(node, ast.Compare) and isinstance(node.left, ast.Constant) and any(
            isinstance(op, ast.In | ast.NotIn) for op in node.ops
        ):
            name = node.left.value if isinstance(node.left.value, str) else None
        if name and PREFIXED.match(name):
            hits.append((node.lineno, name))
    return hits


def python_files() -> list[Path]:
    return sorted(p for d in SCANNED for p in (ROOT / d).rglob("*.py") if ".venv" not in p.parts)


def test_no_module_outside_the_settings_modules_reads_a_prefixed_variable():
    offenders = []
    for path in python_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel in SETTINGS_MODULES:
            continue
        offenders += [f"{rel}:{line}: {name}" for line, name in env_reads(path.read_text(encoding="utf-8"))]
    assert not offenders, "read these through training.settings / deployment.serving.settings:\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    "code",
    [
        'import os\nx = os.environ.get("DETOPS_X")',
        'import os\nx = os.environ["AZURE_RESOURCE_GROUP"]',
        'import os\nx = os.getenv("AWS_REGION")',
        'import os\nx = "AZUREML_WORKSPACE" in os.environ',
        'def f(env):\n    return env.get("DETOPS_SM_ROOT", "/opt/ml")',
    ],
)
def test_the_grep_sees_every_kind_of_read(code):
    assert env_reads(code), code


def test_the_grep_ignores_writes_and_other_names():
    assert not env_reads('import os\nos.environ["DETOPS_X"] = "1"\nenv = {"DETOPS_Y": 1}\nos.environ.get("HOME")')


def test_docs_settings_md_is_generated_from_the_classes():
    text = (ROOT / "docs" / "settings.md").read_text()
    assert text == contract.render_markdown(), "docs/settings.md is stale: run `detops settings docs --write`"


def test_docs_staleness_check_fails_on_a_changed_description(monkeypatch):
    field = S.AzureSettings.model_fields["resource_group"]
    monkeypatch.setattr(field, "description", "something else")
    assert (ROOT / "docs" / "settings.md").read_text() != contract.render_markdown()


def test_every_setting_is_documented_with_type_description_and_commands():
    infos = contract.all_settings()
    names = [n for s in infos for n in s.env]
    assert len(names) == len(set(names)), "a variable is declared twice"
    for s in infos:
        assert s.description, s.name
        if s.concern != "serving":
            assert s.required_by or s.used_by, f"{s.name}: which commands need it?"
            assert s.source, s.name


def test_one_resource_group_name():
    known = contract.known_names()
    assert "AZURE_RESOURCE_GROUP" in known
    assert "AZUREML_RESOURCE_GROUP" not in known


def test_missing_azure_settings_are_all_named_with_their_source(monkeypatch):
    for var in ("AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZUREML_WORKSPACE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", "00000000-0000-0000-0000-000000000000")
    with pytest.raises(ConfigError) as e:
        azure.ml_client(what="deploy")
    msg = str(e.value)
    assert "AZURE_RESOURCE_GROUP" in msg and "AZUREML_WORKSPACE" in msg
    assert "AZURE_SUBSCRIPTION_ID" not in msg
    assert "stack output of infra/azure" in msg and "docs/settings.md" in msg


def test_empty_value_counts_as_unset(monkeypatch):
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", "")  # an undefined ${{ vars.X }} expands to ""
    monkeypatch.setenv("AZURE_RESOURCE_GROUP", "rg")
    monkeypatch.setenv("AZUREML_WORKSPACE", "ws")
    with pytest.raises(ConfigError, match="AZURE_SUBSCRIPTION_ID"):
        S.AzureSettings.load().workspace_ids()


def test_boto3_session_without_region_names_aws_region(monkeypatch):
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    with pytest.raises(ConfigError, match=r"AWS_REGION .*stack output of infra/aws"):
        aws.boto3_session()


def test_boto3_session_takes_the_region_and_endpoint(monkeypatch):
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    client = aws.client("s3")
    assert client.meta.region_name == "eu-west-1"
    assert client.meta.endpoint_url == "http://127.0.0.1:1"


def test_invalid_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("DETOPS_AML_INSTANCE_COUNT", "zero")
    with pytest.raises(ConfigError, match="DETOPS_AML_INSTANCE_COUNT='zero'"):
        S.AzureSettings.load()


def test_load_from_a_job_environment_mapping():
    aws = S.AwsSettings.load({"DETOPS_SM_ROOT": "/x", "DETOPS_WORKER_PORT": "2345"})
    assert aws.sm_root == "/x" and aws.worker_port == 2345


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["submit", "c.yaml", "--backend", "azureml"], {},
         {"DETOPS_TRAINING_IMAGE", "AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZUREML_WORKSPACE"}),
        (["submit", "c.yaml", "--backend", "azureml", "--dry-run"], {}, set()),
        (["submit", "c.yaml", "--backend=sagemaker"], {}, {"DETOPS_TRAINING_IMAGE", "DETOPS_SM_ROLE_ARN", "AWS_REGION"}),
        (["register", "--run-dir", "x", "--name", "m", "--by", "me"], {"DETOPS_REGISTRY": "sagemaker"},
         {"DETOPS_SM_REGISTRY_URI", "DETOPS_SERVING_IMAGE", "AWS_REGION"}),
        (["register", "--run-dir", "x", "--name", "m", "--by", "me"], {}, set()),
        (["deploy", "--target", "azureml", "--name", "m", "--version", "1"], {"DETOPS_REGISTRY": "azureml"},
         {"DETOPS_SERVING_IMAGE", "AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZUREML_WORKSPACE"}),
        (["smoke-test", "--url", "u", "--image", "i", "--api-key-env", "MY_KEY"], {}, {"MY_KEY"}),
        (["smoke-test", "--target", "azureml", "--endpoint", "e", "--image", "i"], {}, set()),
        (["smoke-test", "--url", "u", "--image", "i"], {}, {"DETOPS_API_KEY"}),
    ],
)
def test_required_for_a_call(argv, env, expected):
    assert {s.name for s in contract.required_for(argv, env)} == expected


def test_settings_docs_check_command(tmp_path, monkeypatch):
    from detops import cli_settings

    monkeypatch.setattr(cli_settings, "DOCS", tmp_path / "settings.md")
    from detops.cli import main

    with pytest.raises(SystemExit) as e:
        main(["settings", "docs", "--check"])
    assert e.value.code == 2
    main(["settings", "docs", "--write"])
    assert main(["settings", "docs", "--check"]) == 0
