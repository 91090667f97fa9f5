"""Stack settings: valid files load, invalid ones fail with a message naming the file and the setting;
the programs' ``__main__.py`` read the settings the way the Pulumi CLI hands them over (strings, JSON)."""

from __future__ import annotations

import json
import re
import runpy
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from infra_helpers import REPO, stack_settings
from infra_mocks import RecordingMocks
from pulumi.runtime import config as runtime_config
from pulumi.runtime import settings as runtime_settings

from infra.settings import AwsSettings, AzureSettings, load_settings, read_stack_file, settings_from_pulumi_config
from training.errors import ConfigError


def _write_stack(tmp_path: Path, cloud: str, stack: str, **changes: Any) -> Path:
    """Copy ``infra/<cloud>/Pulumi.<stack>.yaml`` into a folder with spaces, applying ``changes``
    (key -> value; value None deletes the key)."""
    document = yaml.safe_load((REPO / "infra" / cloud / f"Pulumi.{stack}.yaml").read_text())
    for key, value in changes.items():
        full = f"detops-{cloud}:{key}"
        if value is None:
            document["config"].pop(full, None)
        else:
            document["config"][full] = value
    folder = tmp_path / "my stacks"
    folder.mkdir(exist_ok=True)
    path = folder / f"Pulumi.{stack}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.parametrize(("cloud", "stack"), [("azure", "dev"), ("azure", "prod"), ("aws", "dev"), ("aws", "prod")])
def test_committed_stack_files_are_valid(cloud: str, stack: str) -> None:
    settings = stack_settings(cloud, stack)
    assert settings.environment == stack
    subjects = settings.github.oidc_subjects()
    assert subjects and all(s.startswith(f"repo:{settings.github.repository}:environment:") for s in subjects)


@pytest.mark.parametrize("cloud", ["azure", "aws"])
def test_prod_identities_trust_prod_environments_only(cloud: str) -> None:
    dev, prod = stack_settings(cloud, "dev"), stack_settings(cloud, "prod")
    assert set(dev.github.oidc_subjects()).isdisjoint(prod.github.oidc_subjects())
    assert prod.github.subjects("trainer") == [] and prod.github.subjects("deployer")
    # the read-only preview identity shares no environment with any writer
    for settings in (dev, prod):
        reader = set(settings.github.subjects("infra_reader"))
        assert reader and all(reader.isdisjoint(settings.github.subjects(p)) for p in ("infra_deployer", "trainer", "registrar", "approver", "deployer"))


def test_an_environment_signs_in_as_one_identity_only(tmp_path: Path) -> None:
    github = {"repository": "o/r", "environments": {"infra_reader": ["pr"], "deployer": ["pr"]}}
    path = _write_stack(tmp_path, "aws", "prod", github=github)
    with pytest.raises(ConfigError, match="environment 'pr' is listed for infra_reader and deployer"):
        read_stack_file(path, AwsSettings, namespace="detops-aws")


@pytest.mark.parametrize(
    ("cloud", "changes", "expected"),
    [
        ("azure", {"private_endpoints": False}, "prod needs private_endpoints: true"),
        ("azure", {"aks_enabled": True}, "aks_enabled needs aks_ssl_cname"),
        ("azure", {"aks_enabled": True, "aks_ssl_cname": "ml.example.com", "aks_system_min_nodes": 1}, "aks_inference_router_ha needs at least 3 system nodes"),
        ("azure", {"subscription_id": "my-sub"}, "must be the subscription's GUID"),
        ("aws", {"account_id": "12345"}, "setting 'detops-aws:account_id': String should match pattern"),
        ("aws", {"budget_alert_emails": ["not-an-address"]}, "'not-an-address' is not an e-mail address"),
    ],
)
def test_pinned_accounts_and_fit_constraints(tmp_path: Path, cloud: str, changes: dict[str, Any], expected: str) -> None:
    path = _write_stack(tmp_path, cloud, "prod", **changes)
    with pytest.raises(ConfigError, match=re.escape(expected)):
        read_stack_file(path, AzureSettings if cloud == "azure" else AwsSettings, namespace=f"detops-{cloud}")


def test_stack_files_hold_no_secrets() -> None:
    for path in sorted((REPO / "infra").glob("*/Pulumi*.yaml")):
        text = path.read_text()
        assert "secure:" not in text, path
        for key in yaml.safe_load(text).get("config", {}) if path.name != "Pulumi.yaml" else {}:
            assert not any(word in key.lower() for word in ("secret", "password", "token", "accesskey")), (path, key)


@pytest.mark.parametrize(
    ("cloud", "changes", "expected"),
    [
        ("azure", {"gpu_max_nodes": 500}, "Pulumi.prod.yaml: setting 'detops-azure:gpu_max_nodes': Input should be less than or equal to 100 (got 500)"),
        ("azure", {"gpu_max_nodes": 0}, "setting 'detops-azure:gpu_max_nodes': Input should be greater than or equal to 1 (got 0)"),
        ("azure", {"region": "westeurop"}, "setting 'detops-azure:region': Value error, unknown Azure region 'westeurop'; did you mean 'westeurope'?"),
        ("azure", {"gpu_vm_size": "Standard_D4s_v5"}, "setting 'detops-azure:gpu_vm_size': Value error, 'Standard_D4s_v5' is not a GPU (N-series) VM size"),
        ("azure", {"name_prefix": "Detops_Prod"}, "setting 'detops-azure:name_prefix': String should match pattern"),
        ("azure", {"gpu_max_node": 3}, "setting 'detops-azure:gpu_max_node': unknown setting; did you mean 'gpu_max_nodes'?"),
        ("azure", {"region": None}, "setting 'detops-azure:region': required setting is missing"),
        ("azure", {"gpu_min_nodes": 5, "gpu_max_nodes": 2}, "gpu_min_nodes (5) is above gpu_max_nodes (2)"),
        ("azure", {"private_endpoints": True, "acr_sku": "Standard"}, "acr_sku must be 'Premium' when private_endpoints is true"),
        ("azure", {"github": {"repository": "detops"}}, "setting 'detops-azure:github.repository': String should match pattern"),
        ("azure", {"github": {"repository": "o/r", "environment": {"deployer": ["prod"]}}}, "setting 'detops-azure:github.environment': unknown setting; did you mean 'environments'?"),
        ("aws", {"training_instance_type": "ml.m5.large"}, "setting 'detops-aws:training_instance_type': Value error, 'ml.m5.large' is not a SageMaker GPU instance type"),
        ("aws", {"region": "europe-west1"}, "setting 'detops-aws:region': Value error, 'europe-west1' is not an AWS region name"),
        ("aws", {"max_training_instances": 50}, "setting 'detops-aws:max_training_instances': Input should be less than or equal to 20 (got 50)"),
        ("aws", {"name_prefix": "x"}, "setting 'detops-aws:name_prefix': String should match pattern"),
    ],
)
def test_invalid_settings_name_the_setting(tmp_path: Path, cloud: str, changes: dict[str, Any], expected: str) -> None:
    path = _write_stack(tmp_path, cloud, "prod", **changes)
    model = AzureSettings if cloud == "azure" else AwsSettings
    with pytest.raises(ConfigError) as info:
        read_stack_file(path, model, namespace=f"detops-{cloud}")
    message = str(info.value)
    assert message.startswith("Pulumi.prod.yaml: ")
    assert expected in message


def test_every_bad_setting_is_reported_at_once(tmp_path: Path) -> None:
    path = _write_stack(tmp_path, "azure", "dev", gpu_max_nodes=-1, log_retention_days=5000)
    with pytest.raises(ConfigError) as info:
        read_stack_file(path, AzureSettings, namespace="detops-azure")
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert any("detops-azure:gpu_max_nodes" in line for line in lines)
    assert any("detops-azure:log_retention_days" in line for line in lines)


def test_unreadable_stack_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="stack settings file not found"):
        read_stack_file(tmp_path / "Pulumi.qa.yaml", AzureSettings, namespace="detops-azure")
    bad = tmp_path / "Pulumi.qa.yaml"
    bad.write_text("config: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_stack_file(bad, AzureSettings, namespace="detops-azure")
    bad.write_text("encryptionsalt: x\n")
    with pytest.raises(ConfigError, match="no 'config:' mapping"):
        read_stack_file(bad, AzureSettings, namespace="detops-azure")


def test_load_settings_error_is_a_usage_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(AwsSettings, {}, namespace="detops-aws", source="pulumi config")
    assert info.value.exit_code == 2
    assert "pulumi config: setting 'detops-aws:environment': required setting is missing" in str(info.value)


def _cli_config(cloud: str, stack: str, **changes: Any) -> dict[str, str]:
    """The stack file's config as the Pulumi CLI hands it to a program: every value a string, objects as JSON."""
    document = yaml.safe_load((REPO / "infra" / cloud / f"Pulumi.{stack}.yaml").read_text())["config"]
    document.update({f"detops-{cloud}:{key}": value for key, value in changes.items()})
    return {
        key: json.dumps(value) if isinstance(value, (dict, list, bool)) else str(value) for key, value in document.items()
    }


@pytest.fixture
def pulumi_config(monkeypatch: pytest.MonkeyPatch):
    """Set the runtime config like the CLI does; restore it afterwards."""
    previous = dict(runtime_config.CONFIG.get())

    def apply(values: dict[str, str]) -> None:
        runtime_config.set_all_config(values)

    monkeypatch.delenv("PULUMI_CONFIG", raising=False)
    yield apply
    runtime_config.set_all_config(previous)


def test_settings_from_pulumi_config_decodes_cli_strings(pulumi_config) -> None:
    pulumi_config(_cli_config("azure", "prod"))
    settings = settings_from_pulumi_config(AzureSettings, namespace="detops-azure", stack="prod")
    assert settings == stack_settings("azure", "prod")
    assert settings.gpu_max_nodes == 4 and settings.gpu_low_priority is False
    assert settings.github.environments.deployer == ("production",)


def test_settings_from_pulumi_config_reports_typos(pulumi_config) -> None:
    pulumi_config({**_cli_config("aws", "dev"), "detops-aws:max_training_instance": "2"})
    with pytest.raises(ConfigError, match=r"Pulumi\.dev\.yaml \(pulumi config\): setting 'detops-aws:max_training_instance': unknown setting; did you mean 'max_training_instances'\?"):
        settings_from_pulumi_config(AwsSettings, namespace="detops-aws", stack="dev")


def _run_main(cloud: str, stack: str, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, Any], RecordingMocks]:
    """Run ``infra/<cloud>/__main__.py`` as the Pulumi language host would, under mocks."""
    exported: dict[str, Any] = {}
    monkeypatch.setattr(pulumi, "export", lambda name, value: exported.__setitem__(name, value))
    mocks = RecordingMocks()
    runtime_settings.ROOT.set(None)
    pulumi.runtime.set_mocks(mocks, project=f"detops-{cloud}", stack=stack, preview=False)
    resolved: dict[str, Any] = {}

    @pulumi.runtime.test
    def body():
        runpy.run_path(str(REPO / "infra" / cloud / "__main__.py"), run_name="__main__")
        keys = list(exported)
        return pulumi.Output.all(*[exported[k] for k in keys]).apply(lambda values: resolved.update(zip(keys, values)))

    body()
    return resolved, mocks


@pytest.mark.parametrize("cloud", ["azure", "aws"])
def test_program_entry_point_exports_the_outputs(pulumi_config, monkeypatch: pytest.MonkeyPatch, cloud: str) -> None:
    pulumi_config(_cli_config(cloud, "dev"))
    outputs, mocks = _run_main(cloud, "dev", monkeypatch)
    key = "runs_container" if cloud == "azure" else "s3_runs_bucket"
    assert outputs["environment"] == "dev" and outputs[key]
    assert len(mocks.resources) > 20


def test_program_entry_point_stops_on_invalid_settings(pulumi_config, monkeypatch: pytest.MonkeyPatch) -> None:
    pulumi_config(_cli_config("azure", "dev", gpu_max_nodes=0))
    with pytest.raises(pulumi.RunError, match=r"setting 'detops-azure:gpu_max_nodes'"):
        _run_main("azure", "dev", monkeypatch)


def _commented_example(path: Path, key: str) -> Any:
    """The value of the commented-out ``key:`` example block of a stack file (lines ``  #   ...`` under
    ``  # key:``), parsed as YAML: what a user gets by uncommenting it."""
    lines = path.read_text().splitlines()
    start = lines.index(f"  # {key}:")
    block = [f"{key}:"]
    for line in lines[start + 1:]:
        if not line.startswith("  #   "):
            break
        block.append(line.removeprefix("  # "))
    return yaml.safe_load("\n".join(block))[key]


def test_the_azure_devops_example_of_the_stack_file_is_valid() -> None:
    from infra_helpers import with_settings

    example = _commented_example(REPO / "infra" / "azure" / "Pulumi.dev.yaml", "detops-azure:azure_devops")
    settings = with_settings(stack_settings("azure", "dev"), azure_devops=example)
    assert settings.azure_devops is not None and settings.azure_devops.issuer == "entra"
    assert settings.azure_devops.issuer_url("t") == "https://login.microsoftonline.com/t/v2.0"
    assert settings.azure_devops.subject("trainer") == example["subjects"]["trainer"]
    assert settings.azure_devops.subject("deployer") is None  # no subject yet: no credential


@pytest.mark.parametrize(
    ("azure_devops", "expected"),
    [
        ({"subjects": {"trainer": "sc://contoso/detops/detops-azureml-trainer"}}, "sc:// is the Azure DevOps issuer's"),
        ({"issuer": "azure-devops"}, "issuer 'azure-devops' needs organization_id"),
        ({"subjects": {"deployer": "/eid1/c/pub/t/x"}}, "'deployer' has no service connection"),
        ({"service_connection": "detops-dev"}, "unknown setting"),
    ],
)
def test_azure_devops_settings_are_checked(azure_devops: dict[str, Any], expected: str) -> None:
    values = {**stack_settings("azure", "dev").model_dump(),
              "azure_devops": {"organization": "contoso", "project": "detops",
                               "service_connections": {"trainer": "detops-azureml-trainer"}, **azure_devops}}
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_settings(AzureSettings, values, namespace="detops-azure", source="Pulumi.dev.yaml")
