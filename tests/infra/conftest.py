"""Fixtures for the infrastructure tests: the Pulumi programs run once per (cloud, stack) under mocks.

No Pulumi CLI, provider plugin or cloud credential is used: ``infra_mocks.run_program`` runs each
program in-process with ``pulumi.runtime.set_mocks``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from infra_helpers import CLOUDS, STACKS, aks_settings, run_cloud, stack_settings  # noqa: E402
from infra_mocks import ProgramRun, ensure_event_loop  # noqa: E402


@pytest.fixture(autouse=True)
def _current_event_loop() -> None:
    """Every infra test starts with a current event loop (see ``infra_mocks.ensure_event_loop``)."""
    ensure_event_loop()


@pytest.fixture(scope="session")
def program_runs() -> dict[tuple[str, str], ProgramRun]:
    """Each program run once with its dev and prod settings, keyed ``(cloud, stack)``; the Azure program also
    with the AKS option on (``("azure-aks", stack)``)."""
    runs = {(cloud, stack): run_cloud(cloud, stack_settings(cloud, stack)) for cloud in CLOUDS for stack in STACKS}
    runs.update({("azure-aks", stack): run_cloud("azure", aks_settings(stack)) for stack in STACKS})
    return runs
