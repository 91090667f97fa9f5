"""Every `detops` command a CI script calls exists, with the options it uses (both CI systems).

The commands are read from the YAML (``run:``, ``script:``, ``bash:``, ``inlineScript:`` and step
templates' ``script`` parameters), split with shlex and checked against the click command the
console script runs (``typer.main.get_command(detops.cli.app)``). The checker itself is tested on
scripts made here, so it cannot pass by finding nothing.
"""

from __future__ import annotations

import pytest
from cicd_helpers import (
    EXPR,
    SUBST,
    all_calls,
    check_call,
    cli_root,
    detops_calls,
    workflow_files,
)


@pytest.fixture(scope="module")
def root():
    return cli_root()


def _problems(root, calls):
    out = []
    for call in calls:
        _, problems = check_call(root, call.args)
        out.extend(f"{call}\n    -> {p}" for p in problems)
    return out


@pytest.mark.parametrize("system", ["github", "azure"])
def test_every_detops_call_matches_the_cli(root, system):
    calls = all_calls(workflow_files()[system])
    assert calls, f"no detops call found in the {system} files"
    problems = _problems(root, calls)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "system, name, expected",
    [
        ("github", "train", ["submit", "wait", "cancel", "wait", "evaluate", "gate", "reviewer", "register", "models list"]),
        ("azure", "train", ["submit", "wait", "cancel", "wait", "evaluate", "gate", "cancel", "register", "models list"]),
        ("github", "release",
         ["models show", "deploy", "smoke-test", "rollback", "promote", "deploy", "smoke-test", "rollback"]),
        # Azure's failure hook asks the (idempotent) promote again for the production version number
        ("azure", "release",
         ["models show", "deploy", "smoke-test", "rollback", "promote", "deploy", "smoke-test", "promote", "rollback"]),
    ],
)
def test_workflows_run_the_pipeline_stages_in_order(root, system, name, expected):
    """The train and release workflows call these commands, in this order (deduplicated by branch)."""
    path = next(p for p in workflow_files()[system] if p.stem == name and p.parent.name != "templates")
    seen = []
    for call in all_calls([path]):
        cmd_path, _ = check_call(root, call.args)
        if not seen or seen[-1] != cmd_path:  # the if/else branches of one submit step count once
            seen.append(cmd_path)
    assert seen == expected


def test_shell_splitting_handles_continuations_expressions_and_substitutions():
    script = (
        'run_dir="$(.venv/bin/detops submit configs/bccd.yaml --backend ${{ vars.B }} \\\n'
        '   --wait | tail -n 1)"\n'
        "echo done && detops evaluate --run-dir $(Pipeline.Workspace)/run --split val # a comment\n"
        'STEPS=3 /opt/x/bin/detops train --run-dir "a b" --steps=$((1+2)) 2>&1 | tee log\n'
        "echo 'detops is not called here'\n"
    )
    calls = detops_calls(script)
    assert ["evaluate", "--run-dir", f"{EXPR}/run", "--split", "val"] in calls
    assert ["train", "--run-dir", "a b", f"--steps={EXPR}"] in calls
    assert ["submit", "configs/bccd.yaml", "--backend", EXPR, "--wait"] in calls
    assert len(calls) == 3
    assert SUBST not in str(calls)


def test_checker_reports_unknown_commands_options_and_bad_values(root):
    def problems(line):
        (args,) = detops_calls(line)
        return " | ".join(check_call(root, args)[1])

    assert "no command 'detops nosuchcommand'" in problems("detops nosuchcommand --x 1")
    assert "unknown option --bogus" in problems("detops train --run-dir r --bogus 3")
    assert "bad value 'many' for --steps" in problems("detops train --run-dir r --steps many")
    assert "required option --run-dir is missing" in problems("detops train --steps 3")
    assert "argument(s) expected" in problems("detops prepare")
    assert "option --run-dir needs a value" in problems("detops evaluate --run-dir")
    assert problems('detops train --run-dir "$RUN" --steps 2') == ""
    assert problems("detops --debug evaluate --run-dir r --split val --split test") == ""


@pytest.mark.parametrize("system", ["github", "azure"])
def test_release_rolls_back_exactly_and_smoke_tests_through_the_platform(root, system):
    """Every release rollback is conditional on the endpoint serving this release (--if-serving), and
    every smoke test goes through the target's own front door (--target, no local-only X-API-Key URL)."""
    path = next(p for p in workflow_files()[system] if p.stem == "release" and p.parent.name != "templates")
    calls = [(check_call(root, c.args)[0], c.args) for c in all_calls([path])]
    rollbacks = [a for cmd, a in calls if cmd == "rollback"]
    smokes = [a for cmd, a in calls if cmd == "smoke-test"]
    assert len(rollbacks) == 2 and all("--if-serving" in a for a in rollbacks)
    assert len(smokes) == 2 and all("--target" in a and "--endpoint" in a and "--url" not in a for a in smokes)
