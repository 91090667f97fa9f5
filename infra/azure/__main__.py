"""Pulumi entry point of the Azure program: read and validate the settings, then declare it.

All logic is in :mod:`infra.azure.program`; settings are validated by :mod:`infra.settings`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from infra.azure.program import create_stack  # noqa: E402
from infra.settings import AzureSettings, declare_program  # noqa: E402

declare_program(AzureSettings, create_stack)
