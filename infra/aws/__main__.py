"""Pulumi entry point of the AWS program: read and validate the settings, then declare it.

All logic is in :mod:`infra.aws.program`; settings are validated by :mod:`infra.settings`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from infra.aws.program import create_stack  # noqa: E402
from infra.settings import AwsSettings, declare_program  # noqa: E402

declare_program(AwsSettings, create_stack)
