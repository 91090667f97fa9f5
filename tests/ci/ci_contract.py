"""The CI contract checker (issue 10, items 3, 5, 6): for every job of both CI systems, each `detops`
call's required settings are in the job's environment, every DETOPS_/AZURE_/AWS_ name the job sets is
a known setting (under its own name: ``X: ${{ vars.X }}``), the job logs in as the identity its
environment stands for, and every `pulumi preview`/`up` runs the policy pack.

A job's environment:
- GitHub: the workflow's ``env``, the job's ``env`` and the step's ``env``; ``${{ vars.X }}`` values are
  the CI variables ``detops settings ci-variables`` makes from the stack outputs;
- Azure Pipelines: the variables of the pipeline, stage and job, and the variable groups they link:
  ``detops-common`` holds :func:`detops.contract.common_variables`, ``detops-<environment>`` the
  identity's variables (and, for staging/production, the endpoint and its API key).
Backends and registries chosen by a CI variable or a pipeline parameter are checked for both clouds.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cicd_helpers import EXPR, detops_calls, load_yaml

from detops import contract

PREFIXED = re.compile(r"^(DETOPS|AZURE|AZUREML|AWS)_[A-Z0-9_]+$")
VAR_EXPR = re.compile(r"^\$\{\{\s*vars\.([A-Za-z0-9_]+)\s*\}\}$")
SHELL_VAR = re.compile(r"^\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?$")
CLOUDS = ("azureml", "sagemaker")
LOGIN_ACTIONS = ("azure/login@", "aws-actions/configure-aws-credentials@", "pulumi/actions@")
#: Per environment group (Azure DevOps): the identity's variables, plus what release stages hold.
ENV_GROUP_EXTRA = {"staging": {"ENDPOINT_NAME", "ENDPOINT_URL", "DETOPS_API_KEY"},
                   "production": {"ENDPOINT_NAME", "ENDPOINT_URL", "DETOPS_API_KEY"}}


def _known() -> set[str]:
    return contract.known_names()


def _check_names(env: dict[str, Any], where: str) -> list[str]:
    problems = []
    known = _known()
    for name, value in (env or {}).items():
        if PREFIXED.match(name) and name not in known:
            problems.append(f"{where}: {name} is not a setting (docs/settings.md)")
        m = VAR_EXPR.match(str(value))
        if m and PREFIXED.match(name) and m.group(1) != name:
            problems.append(f"{where}: {name} reads vars.{m.group(1)}: a setting's variable has the setting's name")
        if name in contract.IDENTITY_SETTINGS:
            problems.append(f"{where}: {name} is per identity (an environment variable of the job's environment)")
    return problems


def _resolve(token: str, env: dict[str, Any], cloud: str) -> str:
    m = SHELL_VAR.match(token)
    if m and m.group(1) in env:
        value = str(env[m.group(1)])
        return cloud if "${{" in value else value
    return cloud if EXPR in token else token


def _call_problems(args: list[str], available: set[str], env: dict[str, Any], where: str) -> list[str]:
    problems = []
    for cloud in CLOUDS:
        argv = [_resolve(a, env, cloud) for a in args]
        registry = {"DETOPS_REGISTRY": cloud} if "DETOPS_REGISTRY" in available else {}
        for s in contract.required_for(argv, registry):
            if not any(n in available for n in s.env):
                problems.append(f"{where}: `detops {' '.join(args)}` ({cloud}) needs {s.name}, which this job does not set")
    return problems


STACKS = ("dev", "prod")
_STACK_CHOICE = re.compile(r"^\$\{\{\s*vars\.PULUMI_STACK == '(\w+)' && '([\w-]+)' \|\| '([\w-]+)'\s*\}\}$")


def _env_names(job: dict[str, Any]) -> list[str | None]:
    """The job's GitHub environment, for each stack when it is an expression of ``vars.PULUMI_STACK``."""
    env = job.get("environment")
    name = env.get("name") if isinstance(env, dict) else env
    if not name or "${{" not in str(name):
        return [name]
    m = _STACK_CHOICE.match(name)
    if m:
        return [m.group(2) if stack == m.group(1) else m.group(3) for stack in STACKS]
    return [re.sub(r"\$\{\{\s*vars\.PULUMI_STACK\s*\}\}", stack, name) for stack in STACKS]


def github_problems(doc: dict[str, Any], name: str, expected_identity: dict[str, str]) -> list[str]:
    """Problems of one GitHub workflow; ``expected_identity`` maps job id -> identity."""
    problems = _check_names(doc.get("env") or {}, f"{name}: env")
    on = doc.get("on") or {}
    on_pr = isinstance(on, dict) and ("pull_request" in on or "pull_request_target" in on)
    for job_id, job in doc["jobs"].items():
        where = f"{name}:{job_id}"
        if "uses" in job:
            continue
        problems += _check_names(job.get("env") or {}, f"{where}: env")
        job_env = {**(doc.get("env") or {}), **(job.get("env") or {})}
        steps = job.get("steps", [])
        logs_in = any(str(s.get("uses", "")).startswith(LOGIN_ACTIONS) for s in steps)
        for envname in _env_names(job) if logs_in else []:
            identity = contract.ENVIRONMENT_IDENTITY.get(envname or "")
            if identity is None:
                problems.append(f"{where}: logs in outside a known environment ({envname!r}): which identity?")
            elif expected_identity.get(job_id) not in (None, identity):
                problems.append(f"{where}: logs in as {identity} (environment {envname}), expected {expected_identity[job_id]}")
            if on_pr and "github.event_name != 'pull_request'" not in str(job.get("if", "")) and identity != "infra-reader":
                problems.append(f"{where}: may run on a pull request with the write identity {identity}")
        for i, step in enumerate(steps):
            problems += _check_names(step.get("env") or {}, f"{where}: step {i} env")
            env = {**job_env, **(step.get("env") or {})}
            if str(step.get("uses", "")).startswith("pulumi/actions@"):
                if not (step.get("with") or {}).get("policyPacks"):
                    problems.append(f"{where}: pulumi {step.get('with', {}).get('command')} without the policy pack")
            run = step.get("run")
            if not run:
                continue
            if re.search(r"(?m)^\s*pulumi (preview|up)\b", run) and "--policy-pack" not in run:
                problems.append(f"{where}: pulumi without --policy-pack")
            for args in detops_calls(run):
                problems += _call_problems(args, set(env), env, f"{where}: step {i}")
    return problems


def _variables(node: Any) -> tuple[set[str], dict[str, Any], list[str]]:
    """(names, name -> value, linked groups) of an Azure ``variables:`` block (list or mapping)."""
    names: set[str] = set()
    values: dict[str, Any] = {}
    groups: list[str] = []
    if isinstance(node, dict):
        values.update(node)
    for item in node if isinstance(node, list) else []:
        if "group" in item:
            groups.append(item["group"])
        elif "name" in item:
            values[item["name"]] = item.get("value")
    names |= set(values)
    return names, values, groups


def group_variables(group: str) -> set[str]:
    """What a variable group made by `detops settings ci-variables` (and the hand-set CI variables) holds."""
    if group == "detops-common":
        return contract.common_variables() | {"DETOPS_REVIEWERS"}
    if group == "detops-infra":
        return {"PULUMI_BACKEND_URL", "PULUMI_STACK", "AWS_REGION"}
    env = group.removeprefix("detops-")
    if contract.group_identity(env):
        return set(contract.IDENTITY_SETTINGS) | ENV_GROUP_EXTRA.get(env, set())
    return set()


def _template_steps(steps: list[dict[str, Any]], base: Path) -> list[tuple[str, str, str]]:
    """(identity, script, key) of every cloud-template script among ``steps`` (and setup steps' scripts)."""
    out = []
    for step in steps:
        tpl = str(step.get("template", ""))
        params = step.get("parameters") or {}
        if "cloud-" in tpl:
            for key in ("script", "onCancel"):
                if params.get(key):
                    out.append((str(params.get("identity")), params[key], key))
        elif step.get("script"):
            out.append(("", step["script"], "script"))
    return out


def _job_steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    if "steps" in job:
        return job["steps"]
    strategy = job.get("strategy") or {}
    run_once = strategy.get("runOnce") or {}
    steps = list((run_once.get("deploy") or {}).get("steps", []))
    for hook in (run_once.get("on") or {}).values():
        steps += hook.get("steps", [])
    return steps


def azure_problems(doc: dict[str, Any], name: str, expected_identity: dict[str, str], base: Path) -> list[str]:
    """Problems of one Azure Pipelines file; ``expected_identity`` maps ``stage/job`` -> identity."""
    problems = []
    top_names, top_values, top_groups = _variables(doc.get("variables") or [])
    on_pr = doc.get("pr") not in (None, "none")
    for stage in doc.get("stages", []):
        s_names, s_values, s_groups = _variables(stage.get("variables") or [])
        problems += _check_names({k: v for k, v in s_values.items()}, f"{name}:{stage['stage']}: variables")
        jobs = stage.get("jobs", [])
        for job in jobs:
            if "template" in job:
                tpl = load_yaml(base / job["template"])
                inner = tpl.get("jobs", [])
            else:
                inner = [job]
            for j in inner:
                jid = j.get("job") or j.get("deployment")
                where = f"{name}:{stage['stage']}/{jid}"
                j_names, j_values, j_groups = _variables(j.get("variables") or {})
                problems += _check_names(j_values, f"{where}: variables")
                groups = top_groups + s_groups + j_groups
                available = top_names | s_names | j_names
                for g in groups:
                    available |= group_variables(g)
                values = {**top_values, **s_values, **j_values}
                for identity, script, key in _template_steps(_job_steps(j), base):
                    if "template" in job and identity.startswith("$"):
                        identity = str((job.get("parameters") or {}).get("identity", identity))
                    if identity:
                        want = expected_identity.get(f"{stage['stage']}/{jid}")
                        if want and identity != want:
                            problems.append(f"{where}: runs as {identity}, expected {want}")
                        excludes_pr = "ne(variables['Build.Reason'], 'PullRequest')" in str(stage.get("condition", ""))
                        if on_pr and not excludes_pr and identity != "infra-reader":
                            problems.append(f"{where}: may run on a pull request with the write identity {identity}")
                        envs = [g.removeprefix("detops-") for g in groups if contract.group_identity(g.removeprefix("detops-"))]
                        for envname in envs:
                            if contract.group_identity(envname) != identity:
                                problems.append(f"{where}: links detops-{envname} ({contract.group_identity(envname)}) but runs as {identity}")
                        if not envs:
                            problems.append(f"{where}: runs as {identity} without its variable group detops-<environment>")
                    if re.search(r"(?m)^\s*pulumi (preview|up)\b", script) and "--policy-pack" not in script:
                        problems.append(f"{where}: pulumi without --policy-pack")
                    for args in detops_calls(script):
                        problems += _call_problems(args, available, values, f"{where} ({key})")
                for step in _job_steps(j):
                    if step.get("env"):
                        problems += _check_names(step["env"], f"{where}: step env")
                        for args in detops_calls(str(step.get("script", ""))):
                            problems += _call_problems(args, available | set(step["env"]), values, f"{where}: step")
    return problems
