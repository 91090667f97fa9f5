"""Print a Pulumi program's stack outputs as `pulumi stack output --json` would, from a run under
Pulumi's unit-test mocks (no Pulumi CLI, no cloud): the input of `detops settings ci-variables` in
the rehearsal (scripts/rehearse.sh sagemaker|azureml).

    python scripts/mock_stack_outputs.py azure|aws [dev|prod] > outputs.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "infra")]


def main(argv: list[str]) -> int:
    """Exit 2 on a bad argument."""
    if not argv or argv[0] not in ("azure", "aws"):
        print(__doc__, file=sys.stderr)
        return 2
    from infra_helpers import run_cloud, stack_settings

    run = run_cloud(argv[0], stack_settings(argv[0], argv[1] if len(argv) > 1 else "dev"))
    json.dump(run.outputs, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
