"""Pulumi entry point of the AWS program: read and validate the stack settings, then declare the stack.

All logic is in :mod:`infra.aws.program`; settings are validated by :mod:`infra.settings`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pulumi  # noqa: E402

from infra.aws.program import create_stack  # noqa: E402
from infra.settings import AwsSettings, settings_from_pulumi_config  # noqa: E402
from training.errors import ConfigError  # noqa: E402

try:
    settings = settings_from_pulumi_config(AwsSettings, namespace=pulumi.get_project(), stack=pulumi.get_stack())
except ConfigError as exc:
    raise pulumi.RunError(str(exc)) from None

for name, value in create_stack(settings).items():
    pulumi.export(name, value)
