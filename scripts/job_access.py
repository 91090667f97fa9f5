"""Write (or check) docs/cicd.md's table of every CI job -> the identity it runs as -> what its commands need,
from the same source tests/infra/test_job_access.py reads: the workflow YAML (tests/ci/ci_jobs.py), the
requests each command makes (tests/ci/job_access.py) and the Pulumi programs under mocks.

    python scripts/job_access.py          # rewrite the section between the markers
    python scripts/job_access.py --check  # exit 1 when the section is not up to date
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "infra"), str(ROOT / "tests" / "ci")]
DOCS = ROOT / "docs" / "cicd.md"


def main(argv: list[str]) -> int:
    """Exit 0 when written or up to date, 1 when ``--check`` finds it stale, 2 on a bad argument."""
    if argv not in ([], ["--check"]):
        print(__doc__, file=sys.stderr)
        return 2
    import job_access

    body = job_access.docs_body({name: job_access.AwsStack(name) for name in ("dev", "prod")},
                                {name: job_access.AzureStack(name) for name in ("dev", "prod")})
    text = DOCS.read_text(encoding="utf-8")
    new = job_access.replace_section(text, body)
    if argv == ["--check"]:
        if new != text:
            print(f"{DOCS.relative_to(ROOT)} is not up to date: run python scripts/job_access.py", file=sys.stderr)
            return 1
        return 0
    DOCS.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
