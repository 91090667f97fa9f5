"""Read the CI definitions of both systems and the `detops` commands their scripts call.

Used by the tests in tests/ci/. Three pieces:

- :func:`workflow_files` lists the GitHub workflows and the Azure Pipelines files (templates included);
- :func:`script_blocks` yields every shell script of a file: GitHub ``run:``, Azure ``script:``,
  ``bash:``, ``inlineScript:`` (task inputs) and the ``script`` parameter passed to a step template;
- :func:`detops_calls` splits a script into simple commands with :mod:`shlex` and returns the
  argument lists of those that run ``detops`` (``detops``, ``.venv/bin/detops`` ...). Line
  continuations are joined; GitHub / Azure template expressions ``${{ ... }}`` and Azure macros
  ``$(Name.Sub)`` become the placeholder :data:`EXPR`; command substitutions ``$( ... )`` become
  :data:`SUBST` and their inner command is parsed as one more command (so
  ``run_dir="$(detops submit ...)"`` is seen).

:func:`check_call` then checks one argument list against the CLI's own click parser
(``typer.main.get_command(detops.cli.app)``): the subcommand path exists, each option exists on it,
options that take a value get one, literal values convert with the parameter's own coercion
(``process_value``: choices, ints, floats...), required options are given and the number of
positional arguments fits. Typer 0.29 builds its commands on its own fork of click
(``typer._click``), so the walk is duck-typed (``list_commands``/``get_command``, ``opts``) and
works with plain click commands too.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
GITHUB_DIR = REPO / ".github" / "workflows"
AZURE_DIR = REPO / ".azure-pipelines"

#: Placeholder for a CI expression (``${{ ... }}``, ``$(Var.Name)``) whose value is only known in CI.
EXPR = "__CI_EXPR__"
#: Placeholder for the output of a shell command substitution.
SUBST = "__SHELL_SUBST__"

SCRIPT_KEYS = {"run", "script", "bash", "inlineScript", "onCancel"}
_SEPARATORS = {";", "&&", "||", "|", "&", "(", ")", "()", ";;", "|&"}
_REDIRECTS = {">", ">>", "<", ">&", "<&", "&>", ">|", "<<", "<<<"}
_KEYWORDS = {"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "exec", "time", "{", "}"}
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\[[^]]*\])?\+?=")
_MACRO = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


def workflow_files() -> dict[str, list[Path]]:
    """``{"github": [...], "azure": [...]}``: every YAML file of both CI systems, sorted."""
    return {
        "github": sorted(GITHUB_DIR.glob("*.yml")) + sorted(GITHUB_DIR.glob("*.yaml")),
        "azure": sorted(AZURE_DIR.rglob("*.yml")) + sorted(AZURE_DIR.rglob("*.yaml")),
    }


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader whose booleans are YAML 1.2's (true/false only), as GitHub and Azure read them:
    PyYAML's YAML 1.1 rules would turn the keys ``on:`` (triggers, deployment hooks) into ``True``."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml(path: Path) -> Any:
    """Parse one YAML file with YAML 1.2 booleans (``on:`` stays the string ``"on"``)."""
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_Yaml12Loader)


def script_blocks(doc: Any, where: str = "$") -> Iterator[tuple[str, str]]:
    """Yield ``(location, script text)`` for every shell script in a parsed CI document."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            loc = f"{where}.{key}"
            if key in SCRIPT_KEYS and isinstance(value, str):
                yield loc, value
            else:
                yield from script_blocks(value, loc)
    elif isinstance(doc, list):
        for i, item in enumerate(doc):
            yield from script_blocks(item, f"{where}[{i}]")


def _replace_expressions(text: str, extra: list[str]) -> str:
    """Replace ``${{ }}`` and ``$( )``; inner commands of substitutions are appended to ``extra``."""
    text = re.sub(r"\$\{\{.*?\}\}", EXPR, text, flags=re.DOTALL)
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$((", i):  # arithmetic expansion: not a command
            end = text.find("))", i)
            end = len(text) if end < 0 else end + 2
            out.append(EXPR)
            i = end
            continue
        if text.startswith("$(", i):
            depth, j = 1, i + 2
            while j < len(text) and depth:
                depth += {"(": 1, ")": -1}.get(text[j], 0)
                j += 1
            inner = text[i + 2 : j - 1]
            if _MACRO.match(inner.strip()):
                out.append(EXPR)  # Azure Pipelines macro such as $(Build.BuildId)
            else:
                extra.append(inner)
                out.append(SUBST)
            i = j
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


def simple_commands(script: str) -> list[list[str]]:
    """Split a bash script into simple commands (lists of words), command substitutions included."""
    pending = [script]
    commands: list[list[str]] = []
    while pending:
        text = pending.pop(0)
        text = re.sub(r"\\\r?\n", " ", text)  # line continuations
        extra: list[str] = []
        text = _replace_expressions(text, extra)
        pending.extend(extra)
        for line in text.splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()<>")
            lexer.whitespace_split = True
            lexer.commenters = "#"
            try:
                tokens = list(lexer)
            except ValueError as e:  # unbalanced quotes: report the line, never skip it
                raise ValueError(f"cannot split shell line {line!r}: {e}") from e
            current: list[str] = []
            skip_next = False
            for tok in tokens:
                if skip_next:
                    skip_next = False
                    continue
                if tok in _SEPARATORS:
                    if current:
                        commands.append(current)
                    current = []
                    continue
                if tok in _REDIRECTS:
                    if current and current[-1].isdigit():
                        current.pop()  # the fd number of 2>&1 and friends
                    skip_next = True
                    continue
                if not current and (tok in _KEYWORDS or _ASSIGNMENT.match(tok)):
                    continue
                current.append(tok)
            if current:
                commands.append(current)
    return commands


def detops_calls(script: str, wrapped: bool = False) -> list[list[str]]:
    """Argument lists (program name dropped) of every ``detops`` command in a script.

    With ``wrapped``, a ``detops`` word anywhere in a command counts too (``expect_exit 4 detops
    deploy ...`` in scripts/rehearse.sh); a bare ``detops`` with no arguments (a function
    definition) is left out.
    """
    calls = []
    for cmd in simple_commands(script):
        names = [Path(w).name for w in cmd]
        if not names or "detops" not in names:
            continue
        i = 0 if names[0] == "detops" else (names.index("detops") if wrapped else -1)
        if i >= 0 and (cmd[i + 1 :] or not wrapped):
            calls.append(cmd[i + 1 :])
    return calls


@dataclass
class Call:
    """One ``detops`` command found in a CI file."""

    file: Path
    where: str
    args: list[str]

    def __str__(self) -> str:
        rel = self.file.relative_to(REPO) if self.file.is_relative_to(REPO) else self.file
        return f"{rel} {self.where}: detops {' '.join(self.args)}"


def all_calls(paths: list[Path]) -> list[Call]:
    """Every ``detops`` call in the given CI files, in file order."""
    calls: list[Call] = []
    for path in paths:
        for where, text in script_blocks(load_yaml(path)):
            calls.extend(Call(path, where, args) for args in detops_calls(text))
    return calls


def _is_literal(value: str) -> bool:
    return EXPR not in value and SUBST not in value and "$" not in value


def _is_group(cmd: Any) -> bool:
    return hasattr(cmd, "list_commands") and hasattr(cmd, "get_command")


def _is_option(param: Any) -> bool:
    return any(o.startswith("-") for o in param.opts)


def _options(cmd: Any) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    for p in cmd.params:
        if _is_option(p):
            for name in [*p.opts, *p.secondary_opts]:
                opts[name] = p
    return opts


def _check_value(param: Any, value: str, ctx: Any) -> list[str]:
    """Coerce a literal value with the parameter's own conversion; placeholders are not checked."""
    if not _is_literal(value):
        return []
    try:
        param.process_value(ctx, [value] if (param.multiple or param.nargs == -1) else value)
    except Exception as e:  # noqa: BLE001 - the fork's BadParameter, pydantic errors: any refusal is a problem
        message = getattr(e, "message", None) or str(e)
        return [f"bad value {value!r} for {param.opts[0]}: {message}"]
    return []


def check_call(root: Any, args: list[str]) -> tuple[str, list[str]]:
    """Check one argument list against the CLI; return ``(command path, problems)``."""
    problems: list[str] = []
    cmd = root
    path: list[str] = []
    ctx = root.context_class(root, info_name="detops", resilient_parsing=True)
    i = 0
    while _is_group(cmd):
        while i < len(args) and args[i].startswith("-"):
            opts = _options(cmd)
            name = args[i].split("=", 1)[0]
            if name not in opts:
                problems.append(f"unknown option {name} of 'detops {' '.join(path)}'".replace(" '", "'"))
            elif not (opts[name].is_flag or opts[name].count) and "=" not in args[i]:
                i += 1
            i += 1
        if i >= len(args):
            problems.append(f"no subcommand after 'detops {' '.join(path)}'")
            return " ".join(path), problems
        sub = cmd.get_command(ctx, args[i])
        if sub is None:
            known = ", ".join(sorted(cmd.list_commands(ctx)))
            problems.append(f"no command 'detops {' '.join([*path, args[i]])}' (known: {known})")
            return " ".join([*path, args[i]]), problems
        path.append(args[i])
        cmd = sub
        i += 1

    label = "detops " + " ".join(path)
    opts = _options(cmd)
    given: set[str] = set()
    positionals: list[str] = []
    rest = args[i:]
    j = 0
    while j < len(rest):
        tok = rest[j]
        if tok == "--":
            positionals.extend(rest[j + 1 :])
            break
        if tok.startswith("-") and tok != "-":
            name, eq, inline = tok.partition("=")
            param = opts.get(name)
            if param is None:
                problems.append(f"{label}: unknown option {name} (has: {', '.join(sorted(opts))})")
                j += 1
                continue
            given.add(param.name or name)
            if param.is_flag or param.count:
                if eq:
                    problems.append(f"{label}: flag {name} takes no value")
                j += 1
                continue
            if eq:
                value = inline
                j += 1
            elif j + 1 < len(rest):
                value = rest[j + 1]
                j += 2
            else:
                problems.append(f"{label}: option {name} needs a value")
                break
            problems.extend(f"{label}: {p}" for p in _check_value(param, value, ctx))
            continue
        positionals.append(tok)
        j += 1

    for p in cmd.params:
        if _is_option(p) and p.required and p.name not in given and p.default is None:
            problems.append(f"{label}: required option {p.opts[0]} is missing")
    arguments = [p for p in cmd.params if not _is_option(p)]
    unbounded = any(a.nargs == -1 for a in arguments)
    needed = sum(a.nargs for a in arguments if a.required and a.nargs > 0)
    allowed = sum(a.nargs for a in arguments if a.nargs > 0)
    # A placeholder (e.g. "${overrides[@]}" expanding to options) may stand for several words.
    expanding = any(not _is_literal(p) for p in positionals)
    if len(positionals) < needed:
        problems.append(f"{label}: {needed} argument(s) expected, got {len(positionals)}: {positionals}")
    if not unbounded and len(positionals) > allowed and not expanding:
        problems.append(f"{label}: at most {allowed} argument(s) expected, got {positionals}")
    for a, value in zip([a for a in arguments if a.nargs == 1], positionals):
        problems.extend(f"{label}: {p}" for p in _check_value(a, value, ctx))
    return " ".join(path), problems


def cli_root() -> Any:
    """The click command behind the ``detops`` console script (typer app -> click)."""
    import typer

    import detops.cli

    return typer.main.get_command(detops.cli.app)
