"""Fixtures for the infrastructure tests: the Pulumi programs run once per (cloud, stack) under mocks.

No Pulumi CLI, provider plugin or cloud credential is used: ``infra_mocks.run_program`` runs each
program in-process with ``pulumi.runtime.set_mocks``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # the infra/ package lives at the repository root
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from infra_mocks import ProgramRun, run_program  # noqa: E402

from infra.settings import AwsSettings, AzureSettings, read_stack_file  # noqa: E402

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


@pytest.fixture(scope="session")
def program_runs() -> dict[tuple[str, str], ProgramRun]:
    """Each program run once with its dev and prod settings, keyed ``(cloud, stack)``."""
    return {(cloud, stack): run_cloud(cloud, stack_settings(cloud, stack)) for cloud in CLOUDS for stack in STACKS}
