"""Pulumi entry point of the bootstrap program: read and validate the settings, then declare it.

All logic is in :mod:`infra.bootstrap.program`; settings are validated by :mod:`infra.settings`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from infra.bootstrap.program import create_bootstrap  # noqa: E402
from infra.settings import BootstrapSettings, declare_program  # noqa: E402

declare_program(BootstrapSettings, create_bootstrap)
