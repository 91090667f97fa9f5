"""Print ``run_dir=...`` and ``job=...`` from the output of ``detops submit`` (its last JSON object).

    detops submit ... | tee submit.log; python scripts/submission.py submit.log >> "$GITHUB_OUTPUT"
    python scripts/submission.py --azure-pipelines submit.log   # ##vso[task.setvariable ...;isOutput=true]
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    """Exit 2 when the log holds no submission JSON."""
    ado = "--azure-pipelines" in argv
    path = [a for a in argv if not a.startswith("--")][0]
    text = "\n" + open(path, encoding="utf-8").read()
    try:
        result = json.loads(text[text.rindex("\n{") + 1 :])
        values = {"run_dir": result["run_url"], "job": result["name"]}
    except (ValueError, KeyError) as e:
        print(f"{path}: no `detops submit` result JSON ({e})", file=sys.stderr)
        return 2
    for key, value in values.items():
        print(f"##vso[task.setvariable variable={key};isOutput=true]{value}" if ado else f"{key}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
