"""Pulumi entry point of the bootstrap program: read and validate the settings, then declare it.

All logic is in :mod:`infra.bootstrap.program`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pulumi  # noqa: E402

from infra.bootstrap.program import create_bootstrap  # noqa: E402
from infra.settings import BootstrapSettings, settings_from_pulumi_config  # noqa: E402
from training.errors import ConfigError  # noqa: E402

try:
    settings = settings_from_pulumi_config(BootstrapSettings, namespace=pulumi.get_project(), stack=pulumi.get_stack())
except ConfigError as exc:
    raise pulumi.RunError(str(exc)) from None

for name, value in create_bootstrap(settings).items():
    pulumi.export(name, value)
