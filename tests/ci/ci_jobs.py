"""Every job of every CI workflow, read from the YAML files (the source of truth): what it runs as, what it sees
and what it runs.

:func:`jobs` reads .github/workflows/*.yml and .azure-pipelines/{train,release,infra,ci}.yml with PyYAML
(:func:`cicd_helpers.load_yaml`, YAML 1.2 booleans) and returns one :class:`Job` per job, in the order the
file lists them (which is also the order of their ``needs:`` / ``dependsOn:``):

- GitHub: a job's environment is the workflow's ``env:`` merged with the job's (raw values such as
  ``${{ vars.X }}``; a job sees only these names, :func:`Job.environ` resolves them), its identity is its
  ``environment:`` (the stack output ``CI_ENVIRONMENTS`` gives each environment its ``AWS_ROLE_ARN`` /
  ``AZURE_CLIENT_ID``: :func:`identity`), a ``uses: ./.github/workflows/x.yml`` job is the called
  workflow's jobs (named ``<caller job>/<called job>``; a called workflow does not inherit the caller's
  ``env:``), its steps are the ``run:`` scripts in order, and ``logs_in`` says whether a step logs in to a
  cloud (``azure/login``, ``aws-actions/configure-aws-credentials``).
- Azure DevOps: stages and their jobs (``job:`` and ``deployment:``, named ``<stage>.<job>``), the variable
  groups linked at pipeline, stage and job level (every variable of a linked group reaches every script),
  the inline variables, and the steps of ``templates/cloud-<backend>.yml`` with their ``identity:``
  parameter (the service connection ``detops-<backend>-<identity>``) and ``script`` / ``onCancel``
  (``on: failure:`` steps are kept with ``when="failure"``). ``template: templates/images.yml`` at job level
  is expanded. ``${{ parameters.backend }}`` is left in the scripts; :func:`Job.script_for` substitutes it.

What this reader does not model: ``if:`` conditions of GitHub steps (both login steps are listed; the one
for the other cloud is skipped at run time), GitHub ``strategy.matrix`` (one job stands for its attempts)
and template expressions other than ``parameters.backend``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from cicd_helpers import AZURE_DIR, GITHUB_DIR, load_yaml

#: The Azure Pipelines files that are pipelines (the rest of the folder are templates and scripts).
AZURE_PIPELINES = ("ci.yml", "infra.yml", "train.yml", "release.yml")
#: GitHub actions that log a job in to a cloud with its OIDC token.
LOGIN_ACTIONS = ("azure/login@", "aws-actions/configure-aws-credentials@")
_VAR = re.compile(r"^\$\{\{\s*vars\.([A-Za-z0-9_]+)\s*\}\}$")
_CLOUD_TEMPLATE = re.compile(r"^(?:templates/)?cloud-\$\{\{\s*parameters\.backend\s*\}\}\.yml$")


@dataclass(frozen=True)
class Step:
    """One shell script of a job. ``env``: the step's own ``env:`` (GitHub; raw values); ``when``: ``"success"``
    (the normal path), ``"failure"`` (GitHub ``if: failure() ...``, Azure ``on: failure:``) or ``"cancelled"``
    (GitHub ``if: cancelled()``, Azure ``onCancel``). Other ``if:`` conditions are not evaluated."""

    name: str
    script: str
    env: Mapping[str, str] = field(default_factory=dict)
    when: str = "success"
    id: str | None = None


@dataclass(frozen=True)
class Job:
    """One CI job as its workflow file defines it.

    ``system``: ``"github"``, ``"azure-devops"`` (or ``"person"``: a person's step between the workflows); ``workflow``: the file name (``train.yml``); ``name``: the
    job id (GitHub ``train``, ``images/build``; Azure ``Train.Submit``); ``environment``: the GitHub
    environment (its name when the YAML gives a mapping) or the Azure DevOps environment of a deployment
    job; ``identity``: the Azure DevOps ``identity:`` parameter of the job's cloud steps (GitHub: None, the
    identity comes from ``environment`` and the stack outputs: :func:`identity`); ``env``: GitHub's merged
    workflow and job ``env:`` (raw values); ``groups``: the Azure DevOps variable groups linked to the job;
    ``variables``: Azure inline variables; ``logs_in``: a step logs in to a cloud; ``outputs``: GitHub's job
    ``outputs:`` (raw values such as ``${{ steps.submit.outputs.run_dir }}``; empty for Azure DevOps)."""

    system: str
    workflow: str
    name: str
    environment: str | None
    identity: str | None
    env: Mapping[str, str]
    groups: tuple[str, ...]
    variables: Mapping[str, str]
    steps: tuple[Step, ...]
    logs_in: bool
    outputs: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """``<system>:<workflow>:<job>``, e.g. ``github:train.yml:register``."""
        return f"{self.system}:{self.workflow}:{self.name}"

    def environ(self, variables: Mapping[str, str], passed: Mapping[str, str] | None = None,
                step: Step | None = None) -> dict[str, str]:
        """The environment a step of this job sees, given the CI variables of its environment or groups.

        GitHub: exactly the names the workflow's, the job's and the step's ``env:`` map; ``${{ vars.X }}`` is
        ``variables[X]`` ("" when unset, as GitHub expands it); any other expression is ``passed[name]``
        (job outputs, inputs) or "". Azure DevOps: every variable given (the linked groups' variables, which
        the caller selects with :attr:`groups`) and the inline variables (``$[ ... ]`` runtime expressions
        taken from ``passed`` by name, else "")."""
        passed = passed or {}
        if self.system == "person":  # a person's shell: every variable exported
            return dict(variables)
        if self.system == "azure-devops":
            inline = {k: passed.get(k, "") if str(v).startswith("$[") else str(v) for k, v in self.variables.items()}
            return {**variables, **inline}
        mapping = {**self.env, **(step.env if step else {})}
        out = {}
        for name, value in mapping.items():
            m = _VAR.match(str(value))
            out[name] = variables.get(m.group(1), "") if m else passed.get(name, "" if "${{" in str(value) else str(value))
        return out

    def scripts(self, backend: str, when: str = "success") -> list[str]:
        """The job's scripts for ``when`` in order, ``${{ parameters.backend }}`` replaced by ``backend``."""
        return [re.sub(r"\$\{\{\s*parameters\.backend\s*\}\}", backend, s.script) for s in self.steps if s.when == when]


def identity(job: Job, outputs: Mapping[str, Any]) -> str | None:
    """The purpose (``trainer``, ``registrar``, ``approver``, ``deployer``, ...) ``job`` runs as on a stack
    whose outputs are ``outputs`` (``pulumi stack output --json``), or None for a job that logs in nowhere.

    GitHub: ``CI_ENVIRONMENTS[environment]`` gives the environment's ``AWS_ROLE_ARN`` / ``AZURE_CLIENT_ID``; the
    purpose is the one whose output ``<purpose>_role_arn`` / ``<purpose>_client_id`` has that value. Azure
    DevOps: the job's ``identity:`` parameter (its service connection).

    Raises:
        LookupError: a job logs in but its environment has no identity in the stack (names the job).
    """
    if not job.logs_in:
        return None
    if job.system == "azure-devops":
        return job.identity
    given = (outputs.get("CI_ENVIRONMENTS") or {}).get(job.environment or "", {})
    for name, value in given.items():
        if name in ("AWS_ROLE_ARN", "AZURE_CLIENT_ID"):
            suffix = "_role_arn" if name == "AWS_ROLE_ARN" else "_client_id"
            for key, out in outputs.items():
                if key.endswith(suffix) and out == value and key != "sagemaker_role_arn":
                    return key.removesuffix(suffix).replace("_", "-")
    raise LookupError(f"{job.key}: environment {job.environment!r} has no identity in the stack outputs "
                      f"(CI_ENVIRONMENTS names {sorted(outputs.get('CI_ENVIRONMENTS') or {})})")


def jobs() -> list[Job]:
    """Every job of every workflow of both CI systems, GitHub first, each file's jobs in file order."""
    out: list[Job] = []
    for path in sorted(GITHUB_DIR.glob("*.yml")):
        out += _github_jobs(path.name, load_yaml(path))
    for name in AZURE_PIPELINES:
        out += list(_azure_jobs(name, load_yaml(AZURE_DIR / name)))
    return out


def job(key: str) -> Job:
    """The job ``<system>:<workflow>:<name>`` (:attr:`Job.key`). Raises KeyError naming the known keys."""
    found = {j.key: j for j in jobs()}
    if key not in found:
        raise KeyError(f"no CI job {key!r}; known: {sorted(found)}")
    return found[key]


# --- GitHub -------------------------------------------------------------------------------------------


def github_jobs(workflow: str, doc: dict[str, Any]) -> list[Job]:
    """The jobs of the GitHub workflow ``workflow`` (its file name) from its parsed YAML ``doc`` (which a caller
    may have changed, e.g. to rehearse a broken mapping); called workflows are read from their files."""
    return _github_jobs(workflow, doc)


def _github_jobs(workflow: str, doc: dict[str, Any], prefix: str = "") -> list[Job]:
    out = []
    for name, spec in (doc.get("jobs") or {}).items():
        uses = spec.get("uses", "")
        if uses.startswith("./.github/workflows/"):
            called = uses.rsplit("/", 1)[1]
            out += _github_jobs(workflow, load_yaml(GITHUB_DIR / called), f"{prefix}{name}/")
            continue
        environment = spec.get("environment")
        if isinstance(environment, dict):
            environment = environment.get("name")
        steps = tuple(_github_step(s) for s in spec.get("steps") or [] if "run" in s)
        logs_in = any(str(s.get("uses", "")).startswith(LOGIN_ACTIONS) for s in spec.get("steps") or [])
        out.append(Job("github", workflow, prefix + name, environment, None,
                       {**(doc.get("env") or {}), **(spec.get("env") or {})}, (), {}, steps, logs_in,
                       dict(spec.get("outputs") or {})))
    return out


def _github_step(spec: dict[str, Any]) -> Step:
    condition = str(spec.get("if", ""))
    when = "cancelled" if "cancelled()" in condition else "failure" if "failure()" in condition else "success"
    return Step(spec.get("name", ""), spec["run"], dict(spec.get("env") or {}), when, spec.get("id"))


# --- Azure DevOps -------------------------------------------------------------------------------------


def azure_jobs(pipeline: str, doc: dict[str, Any]) -> list[Job]:
    """The jobs of the Azure DevOps pipeline ``pipeline`` (its file name) from its parsed YAML ``doc`` (which a
    caller may have changed); job templates are read from their files."""
    return list(_azure_jobs(pipeline, doc))


def _groups_and_variables(spec: Any) -> tuple[list[str], dict[str, str]]:
    """Azure ``variables:`` in list form (``- group: x`` / ``- name: n, value: v``) or mapping form."""
    groups, inline = [], {}
    if isinstance(spec, dict):
        return [], {k: str(v) for k, v in spec.items()}
    for item in spec or []:
        if "group" in item:
            groups.append(item["group"])
        elif "name" in item:
            inline[item["name"]] = str(item.get("value", ""))
    return groups, inline


def _azure_jobs(workflow: str, doc: dict[str, Any]) -> Iterator[Job]:
    top_groups, top_vars = _groups_and_variables(doc.get("variables"))
    stages = doc.get("stages") or [{"stage": "", "jobs": doc.get("jobs") or []}]
    for stage in stages:
        s_groups, s_vars = _groups_and_variables(stage.get("variables"))
        for spec in _expand_job_templates(stage.get("jobs") or []):
            j_groups, j_vars = _groups_and_variables(spec.get("variables"))
            name = spec.get("job") or spec.get("deployment")
            steps = list(_azure_steps(_job_steps(spec)))
            steps += [Step(s.name, s.script, {}, "failure") for s in _azure_steps(_job_steps(spec, "failure"))]
            identities = {i for i, _ in _cloud_steps(_job_steps(spec))}
            environment = spec.get("environment")
            yield Job("azure-devops", workflow, f"{stage['stage']}.{name}" if stage["stage"] else name,
                      environment.get("name") if isinstance(environment, dict) else environment,
                      next(iter(identities)) if len(identities) == 1 else None, {},
                      tuple(top_groups + s_groups + j_groups), {**top_vars, **s_vars, **j_vars},
                      tuple(steps), bool(identities))


def _expand_job_templates(specs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for spec in specs:
        if "template" in spec:
            yield from load_yaml(AZURE_DIR / spec["template"]).get("jobs") or []
        else:
            yield spec


def _job_steps(spec: dict[str, Any], hook: str = "deploy") -> list[dict[str, Any]]:
    """A job's steps (``steps:``) or a deployment job's ``strategy.runOnce.<hook>.steps`` (``deploy``) /
    ``on.<hook>.steps`` (``failure``)."""
    if "steps" in spec:
        return spec["steps"] if hook == "deploy" else []
    run_once = (spec.get("strategy") or {}).get("runOnce") or {}
    if hook == "deploy":
        return (run_once.get("deploy") or {}).get("steps") or []
    return ((run_once.get("on") or {}).get(hook) or {}).get("steps") or []


def _cloud_steps(steps: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for step in steps:
        template = str(step.get("template", ""))
        if _CLOUD_TEMPLATE.match(template):
            params = step.get("parameters") or {}
            yield params.get("identity"), params


def _azure_steps(steps: list[dict[str, Any]]) -> Iterator[Step]:
    for step in steps:
        if "script" in step or "bash" in step:
            yield Step(step.get("displayName", ""), step.get("script") or step.get("bash"))
        elif _CLOUD_TEMPLATE.match(str(step.get("template", ""))):
            params = step.get("parameters") or {}
            yield Step(params.get("displayName", ""), params.get("script", ""))
            if params.get("onCancel"):
                yield Step(params.get("displayName", "") + " (cancelled)", params["onCancel"], {}, "cancelled")
