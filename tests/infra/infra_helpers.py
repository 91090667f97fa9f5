"""Helpers shared by the infrastructure tests: stack settings from the real YAML files, program runs."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # the infra/ package lives at the repository root
    sys.path.insert(0, str(REPO))

from infra_mocks import ProgramRun, run_program  # noqa: E402

from infra.settings import AwsSettings, AzureSettings, BootstrapSettings, read_stack_file  # noqa: E402

CLOUDS = {"azure": AzureSettings, "aws": AwsSettings}
STACKS = ("dev", "prod")


def stack_settings(cloud: str, stack: str):
    """Validated settings of ``infra/<cloud>/Pulumi.<stack>.yaml``."""
    return read_stack_file(REPO / "infra" / cloud / f"Pulumi.{stack}.yaml", CLOUDS[cloud], namespace=f"detops-{cloud}")


def run_cloud(cloud: str, settings) -> ProgramRun:
    """Run the ``cloud`` program with ``settings`` under fresh mocks."""
    if cloud == "azure":
        from infra.azure.program import create_stack
    else:
        from infra.aws.program import create_stack
    return run_program(create_stack, settings, project=f"detops-{cloud}", stack=settings.environment)


def with_settings(settings, **updates):
    """A copy of ``settings`` with ``updates``, validated again (``model_copy`` alone would not)."""
    return type(settings).model_validate({**settings.model_dump(), **updates})


def aks_settings(stack: str):
    """The Azure ``stack`` settings with the AKS serving option on (as docs/infra.md describes it)."""
    return with_settings(stack_settings("azure", stack), aks_enabled=True, aks_ssl_cname=f"ml-{stack}.detops.example.com")


def bootstrap_settings(cloud: str, stack: str):
    """Validated settings of ``infra/bootstrap/Pulumi.<cloud>-<stack>.yaml``."""
    return read_stack_file(REPO / "infra" / "bootstrap" / f"Pulumi.{cloud}-{stack}.yaml", BootstrapSettings, namespace="detops-bootstrap")


def run_bootstrap(settings) -> ProgramRun:
    from infra.bootstrap.program import create_bootstrap

    return run_program(create_bootstrap, settings, project="detops-bootstrap", stack=f"{settings.cloud}-{settings.environment}")
