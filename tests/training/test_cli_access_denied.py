"""A cloud's refusal that no adapter wrapped (an object store's 403 deep in a stage, botocore's AccessDenied)
reaches the terminal as one ``error: access denied ...`` line with AccessDeniedError's exit code, not as an
"unexpected error" (which the CLI keeps for bugs)."""

from __future__ import annotations

import pytest


def _failing_command(exc: BaseException):
    import typer

    from detops import cli

    app = typer.Typer()

    @app.command()
    def boom() -> None:
        raise exc

    return cli, app


@pytest.mark.parametrize("kind", ["azure", "aws"])
def test_a_cloud_refusal_is_one_access_denied_line(kind, monkeypatch, capsys) -> None:
    from azure.core.exceptions import HttpResponseError
    from botocore.exceptions import ClientError

    from training.errors import AccessDeniedError

    if kind == "azure":
        exc = HttpResponseError(message="This request is not authorized to perform this operation using this permission.")
        exc.status_code, exc.error_code = 403, "AuthorizationPermissionMismatch"
    else:
        exc = ClientError({"Error": {"Code": "AccessDenied", "Message": "not authorized"}}, "PutObject")
    cli, app = _failing_command(exc)
    monkeypatch.setattr(cli, "app", app)
    with pytest.raises(SystemExit) as done:
        cli.main([])
    assert done.value.code == int(AccessDeniedError("x").exit_code)
    out = capsys.readouterr().err
    assert "access denied" in out and ("AuthorizationPermissionMismatch" in out or "AccessDenied" in out)
    assert "unexpected error" not in out


def test_other_errors_stay_unexpected(monkeypatch, capsys) -> None:
    cli, app = _failing_command(RuntimeError("a bug"))
    monkeypatch.setattr(cli, "app", app)
    with pytest.raises(SystemExit):
        cli.main([])
    assert "unexpected error: RuntimeError: a bug" in capsys.readouterr().err
