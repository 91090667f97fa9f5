"""The CLI's top-level error handling: exit codes and one-line messages."""

from __future__ import annotations

import pytest

from detops.cli import main
from training.errors import ExitCode


def test_missing_required_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train"])
    assert e.value.code == ExitCode.USAGE
    assert "--run-dir" in capsys.readouterr().err


def test_detops_error_is_one_line_with_its_exit_code(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["prepare", str(tmp_path / "missing.yaml")])
    assert e.value.code == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "missing.yaml does not exist" in err and "Traceback" not in err


def test_unknown_run_is_not_found(tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--run-dir", str(tmp_path / "nope")])
    assert e.value.code == ExitCode.NOT_FOUND
