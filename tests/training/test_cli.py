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


def test_ctrl_c_exits_130(tmp_path, monkeypatch, capsys):
    from training import pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.Run, "open", interrupted)
    with pytest.raises(SystemExit) as e:
        main(["export", "--run-dir", str(tmp_path)])
    assert e.value.code == ExitCode.INTERRUPTED == 130
    assert "interrupted" in capsys.readouterr().err


def test_each_command_group_is_a_typer_app_usable_alone():
    """A group's commands can be imported and run without the root app (no closure to reach into)."""
    from typer.testing import CliRunner

    from detops import cli_cloud, cli_deploy, cli_training

    runner = CliRunner()
    for group, command in ((cli_training.app, "export"), (cli_deploy.app, "approve"), (cli_cloud.app, "finish")):
        result = runner.invoke(group, [command, "--help"])
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.output
    result = runner.invoke(cli_deploy.app, ["models", "list", "--help"])
    assert result.exit_code == 0 and "--status" in result.output
    assert callable(cli_deploy.approve) and callable(cli_training.prepare)


def test_root_app_keeps_every_command_name_top_level():
    import typer.main

    from detops.cli import app

    names = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    assert {
        "prepare", "train", "evaluate", "export", "run", "gate", "register", "approve", "reject", "models",
        "serve", "deploy", "rollback", "smoke-test", "submit", "finish", "dataset",
    } <= names


def test_registry_help_lists_every_registry_kind():
    from typer.testing import CliRunner

    from deployment.registry import REGISTRIES
    from detops import cli_deploy

    result = CliRunner().invoke(cli_deploy.app, ["approve", "--help"], env={"COLUMNS": "300"})
    for kind in REGISTRIES:
        assert kind in result.output


@pytest.mark.parametrize("command", ["train", "evaluate", "export"])
def test_stage_commands_keep_library_noise_in_the_log(command, tmp_path, monkeypatch, capfd):
    import warnings

    from training import pipeline
    from training.errors import NotFoundError

    monkeypatch.setenv("DETOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(pipeline.Run, "open", lambda url: url)

    def noisy(run, **kwargs):
        warnings.warn("library noise", UserWarning, stacklevel=1)
        raise NotFoundError(f"no checkpoint in {run}")

    monkeypatch.setattr(pipeline, command, noisy)
    with pytest.raises(SystemExit) as e:
        main([command, "--run-dir", "the-run"])
    assert e.value.code == ExitCode.NOT_FOUND
    err = capfd.readouterr().err
    assert "no checkpoint in the-run" in err and "full log:" in err
    assert "library noise" not in err
    (log,) = (tmp_path / "home" / "logs").glob("detops-*.log")
    assert "library noise" in log.read_text()
