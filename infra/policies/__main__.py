"""CrossGuard policy pack entry point: ``pulumi preview --policy-pack infra/policies``.

Serves the policies of :mod:`pack` (built from :mod:`rules`) to the Pulumi engine; every rule is
mandatory (a violation fails the preview/update).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pack import ENFORCEMENT_LEVEL, PACK_NAME, build_policies  # noqa: E402
from pulumi_policy import PolicyPack  # noqa: E402

PolicyPack(name=PACK_NAME, enforcement_level=ENFORCEMENT_LEVEL, policies=build_policies())
