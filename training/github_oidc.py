"""GitHub Actions OIDC subjects of the project's own workflows: which workflow files name which deployment
environment, and the ``sub`` claim a job of such a workflow presents on ``main``.

The repository's subject claim template is :data:`SUBJECT_CLAIM_KEYS` (``detops ci setup github`` sets it with
``PUT /repos/{owner}/{repo}/actions/oidc/customization/sub``). GitHub then assembles ``sub`` from those
claims in order, ``key:value`` joined by ``:`` (GitHub docs, "OpenID Connect reference", "Customizing the
subject claims ... Example: Requiring a reusable workflow and other claims")::

    repo:ORG/REPO:environment:ENV:job_workflow_ref:ORG/REPO/.github/workflows/FILE@refs/heads/main

``context`` is the part that follows the repository in the default subject: ``environment:ENV`` when the
job names an environment (on any branch and for pull requests alike), else ``pull_request`` for a
pull-request event, else ``ref:refs/heads/BRANCH`` / ``ref:refs/tags/TAG``. ``job_workflow_ref`` is the
workflow FILE the job is defined in (for a called workflow, ``uses: ./.github/workflows/x.yml``, the
called file) at the ref the run is for (``refs/heads/<branch>``, ``refs/pull/<n>/merge``). So the ref and
the workflow file of a token are both in ``job_workflow_ref``; a ``:`` inside a value becomes ``%3A``.

The Pulumi programs (infra/) trust exactly :func:`main_subjects`; ``detops ci setup github`` reads
:func:`environment_workflows` to know which environments exist.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from training.errors import ConfigError

#: The repository's OIDC subject claim template (``include_claim_keys``).
SUBJECT_CLAIM_KEYS = ("repo", "context", "job_workflow_ref")
#: The only ref whose runs may act as a write identity.
MAIN_REF = "refs/heads/main"
#: Where the project's workflows are (a checkout: the Pulumi programs and the CLI run from one).
WORKFLOWS_DIR = Path(__file__).resolve().parents[1] / ".github" / "workflows"

_EXPR = re.compile(r"\$\{\{.*?\}\}", re.S)
_QUOTED = re.compile(r"'([A-Za-z0-9_.-]+)'")


def _escape(value: str) -> str:
    return value.replace(":", "%3A")


def subject(repository: str, environment: str, workflow: str, ref: str = MAIN_REF) -> str:
    """The ``sub`` of a job in ``environment`` defined in ``.github/workflows/<workflow>`` of ``repository``
    (``owner/name``), run for ``ref``, under :data:`SUBJECT_CLAIM_KEYS`."""
    return (
        f"repo:{_escape(repository)}:environment:{_escape(environment)}"
        f":job_workflow_ref:{_escape(f'{repository}/.github/workflows/{workflow}@{ref}')}"
    )


def claims_subject(claims: dict[str, str]) -> str:
    """``sub`` from a token's claims under :data:`SUBJECT_CLAIM_KEYS`: ``repository`` (the ``repo`` key),
    ``context`` (``environment:ENV`` / ``pull_request`` / ``ref:REF``) and ``job_workflow_ref``."""
    context = claims["context"]
    kind, _, value = context.partition(":")
    context = f"{kind}:{_escape(value)}" if value else kind
    return f"repo:{_escape(claims['repository'])}:{context}:job_workflow_ref:{_escape(claims['job_workflow_ref'])}"


@dataclass(frozen=True)
class EnvironmentUse:
    """A job's ``environment:`` as written (``spec``: a name or an expression) in ``workflow`` (file name)."""

    workflow: str
    job: str
    spec: str

    def names(self, name: str) -> bool:
        """Whether this job can run in environment ``name``: the same literal; an expression whose quoted
        literals include it (``${{ cond && 'infra-production' || 'infra-dev' }}``); or a template whose
        ``${{ ... }}`` parts stand for any name characters (``infra-preview-${{ vars.PULUMI_STACK }}``)."""
        if "${{" not in self.spec:
            return self.spec == name
        if name in _QUOTED.findall(self.spec):
            return True
        pattern = "".join(
            "[A-Za-z0-9_.-]+" if part == "\0" else re.escape(part)
            for part in re.split(r"(\0)", _EXPR.sub("\0", self.spec))
            if part
        )
        literal = _EXPR.sub("", self.spec).strip()
        return bool(literal) and re.fullmatch(pattern, name) is not None


def _load(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: workflow file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: not a GitHub workflow (no mapping)")
    return doc


def environment_uses(workflows_dir: Path | None = None) -> list[EnvironmentUse]:
    """Every job of every ``*.yml`` / ``*.yaml`` under ``workflows_dir`` that names an environment, with the
    file it is DEFINED in (a caller's ``uses: ./.github/workflows/x.yml`` job is listed under ``x.yml``,
    which is what ``job_workflow_ref`` names). Raises :class:`ConfigError` for a missing folder or bad YAML."""
    folder = Path(workflows_dir or WORKFLOWS_DIR)
    if not folder.is_dir():
        raise ConfigError(
            f"{folder}: no GitHub workflows folder (the programs read the environments' workflows from it)"
        )
    out = []
    for path in sorted([*folder.glob("*.yml"), *folder.glob("*.yaml")]):
        for job, spec in (_load(path).get("jobs") or {}).items():
            env = (spec or {}).get("environment") if isinstance(spec, dict) else None
            if isinstance(env, dict):
                env = env.get("name")
            if env:
                out.append(EnvironmentUse(path.name, str(job), str(env)))
    return out


def workflows_naming(environment: str, workflows_dir: Path | None = None) -> list[str]:
    """The workflow files (sorted, unique) with a job that can run in ``environment``."""
    return sorted({u.workflow for u in environment_uses(workflows_dir) if u.names(environment)})


def main_subjects(repository: str, environments: Iterable[str], workflows_dir: Path | None = None) -> list[str]:
    """The exact subjects of ``environments`` on ``main``: one per (environment, workflow file naming it),
    in the order given, then by file. An environment no workflow names contributes none."""
    uses = environment_uses(workflows_dir)
    return [
        subject(repository, env, wf)
        for env in environments
        for wf in sorted({u.workflow for u in uses if u.names(env)})
    ]


def environment_workflows(candidates: Iterable[str], workflows_dir: Path | None = None) -> dict[str, list[str]]:
    """``{environment: [workflow files]}`` for each of ``candidates`` (e.g. the stack's ``CI_ENVIRONMENTS``
    names) and every literal environment name the workflows write; expressions resolve against ``candidates``."""
    uses = environment_uses(workflows_dir)
    names = list(dict.fromkeys([*candidates, *(u.spec for u in uses if "${{" not in u.spec)]))
    return {n: sorted({u.workflow for u in uses if u.names(n)}) for n in names}
