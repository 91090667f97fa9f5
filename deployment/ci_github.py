"""``detops ci setup github``: everything the GitHub workflows rely on, from the stack outputs, idempotently.

What is set (GitHub REST API, version 2026-03-10, through githubkit):

- every environment the workflows name (:mod:`training.github_oidc`, expressions resolved against the stack's
  environments), ``PUT /repos/{o}/{r}/environments/{name}``: required reviewers and ``prevent_self_review``
  on the gated ones (:data:`GATED`), and on every environment that hands out a write identity a deployment
  branch policy of custom branches, ``POST .../deployment-branch-policies`` naming ``main`` only;
- the environment variables (the stack output ``CI_ENVIRONMENTS``) and the repository variables (the
  outputs named like a setting): ``detops settings ci-variables``' mapping, computed by the CLI;
- branch protection on ``main`` (pull request with one approving review, the ``ci`` checks, admins too);
- the repository's OIDC subject claim template ``repo, context, job_workflow_ref``
  (``PUT /repos/{o}/{r}/actions/oidc/customization/sub``), which the trust policies of infra/ expect.

It first GETs the current state and sends only what differs (:func:`plan`), returning each write as a
:class:`Request` whose body was validated against githubkit's request model for that endpoint (models
generated from GitHub's OpenAPI description). :func:`apply` sends them; a dry run prints them only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training import github_oidc
from training.errors import ConfigError

#: Environments whose jobs wait for a person (docs/cicd.md "Environments and their reviewers").
GATED = ("model-registration", "model-approval", "production", "infra-dev", "infra-production")
#: Environments any branch may use: the read-only pull-request preview's.
ANY_BRANCH_PREFIX = "infra-preview-"
#: The httpx transport :func:`connect` uses from the CLI (None: the network); tests put a fake GitHub here.
TRANSPORT: Any = None


def required_checks(workflows_dir: Path | None = None) -> list[str]:
    """The check names main's protection requires: each ``ci.yml`` job's ``name:`` (GitHub reports a job's
    check under its name, else its id)."""
    import yaml

    path = Path(workflows_dir or github_oidc.WORKFLOWS_DIR) / "ci.yml"
    jobs = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("jobs") or {}
    return [str((spec or {}).get("name") or job) for job, spec in jobs.items()]


@dataclass(frozen=True)
class Request:
    """One write: ``method``, ``path`` (``/repos/...``), ``body`` (JSON, validated), ``why`` (one line)."""

    method: str
    path: str
    body: Any
    why: str

    def line(self) -> str:
        """``PUT /repos/o/r/... {json}`` for printing."""
        return f"{self.method} {self.path} {json.dumps(self.body, sort_keys=True)}"


# path template -> githubkit request model (githubkit_schemas, generated from GitHub's OpenAPI description)
_MODELS = {
    ("PUT", "/repos/{o}/{r}/environments/{e}"): "ReposOwnerRepoEnvironmentsEnvironmentNamePutBody",
    ("POST", "/repos/{o}/{r}/environments/{e}/deployment-branch-policies"): "DeploymentBranchPolicyNamePatternWithType",
    ("POST", "/repos/{o}/{r}/environments/{e}/variables"): "ReposOwnerRepoEnvironmentsEnvironmentNameVariablesPostBody",
    (
        "PATCH",
        "/repos/{o}/{r}/environments/{e}/variables/{n}",
    ): "ReposOwnerRepoEnvironmentsEnvironmentNameVariablesNamePatchBody",
    ("POST", "/repos/{o}/{r}/actions/variables"): "ReposOwnerRepoActionsVariablesPostBody",
    ("PATCH", "/repos/{o}/{r}/actions/variables/{n}"): "ReposOwnerRepoActionsVariablesNamePatchBody",
    ("PUT", "/repos/{o}/{r}/branches/{b}/protection"): "ReposOwnerRepoBranchesBranchProtectionPutBody",
    ("PUT", "/repos/{o}/{r}/actions/oidc/customization/sub"): "OidcCustomSubRepo",
}


def request_model(method: str, template: str) -> type:
    """githubkit's pydantic model of the request body of ``method`` ``template`` (a key of the table above)."""
    from githubkit.versions.latest import models

    return getattr(models, _MODELS[method, template])


def validated(method: str, template: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` checked against the endpoint's request model: a wrong type or missing field raises
    :class:`pydantic.ValidationError`, and so does a key the model does not know (githubkit's models
    ignore extras; GitHub would too, silently, which is how a setting gets lost)."""
    from githubkit.compat import type_validate_python

    model = request_model(method, template)
    type_validate_python(model, dict(body))
    known = {f.alias or name for name, f in model.model_fields.items()} | set(model.model_fields)
    extra = sorted(set(body) - known)
    if extra:
        raise ConfigError(f"{method} {template}: {', '.join(extra)} not in GitHub's request model {model.__name__}")
    return dict(body)


def merge_outputs(documents: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """One stack-outputs document from several ``(source name, outputs)``: an application stack's and its
    bootstrap's (which holds the infra environments' identities). ``CI_ENVIRONMENTS`` are joined; an
    environment or a setting-named (upper-case) output given twice with different values raises
    :class:`ConfigError` naming both sources; descriptive (lower-case) outputs keep the first value."""
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for source, outputs in documents:
        for key, value in outputs.items():
            if key == "CI_ENVIRONMENTS":
                envs = merged.setdefault(key, {})
                for env, variables in (value or {}).items():
                    if env in envs and envs[env] != variables:
                        raise ConfigError(f"{source}: CI_ENVIRONMENTS.{env} differs from {origin[f'env:{env}']}'s")
                    envs[env], origin[f"env:{env}"] = variables, source
            elif key not in merged:
                merged[key], origin[key] = value, source
            elif key.isupper() and merged[key] != value:
                raise ConfigError(f"{source}: output {key} differs from {origin[key]}'s ({merged[key]!r})")
    return merged


@dataclass
class Wanted:
    """The state to reach. ``environments``: ``{name: {"reviewers": [login | org/team], "main_only": bool,
    "variables": {NAME: value}}}``; ``variables``: repository variables."""

    repository: str
    environments: dict[str, dict[str, Any]] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)
    branch: str = "main"
    checks: list[str] = field(default_factory=list)


def wanted(
    repository: str,
    repository_variables: Mapping[str, str],
    environment_variables: Mapping[str, Mapping[str, str]],
    reviewers: Mapping[str, list[str]],
    workflows_dir: Path | None = None,
) -> Wanted:
    """The state for ``repository`` (``owner/name``): every environment the workflows name or the stack
    gives variables for, each gated one (:data:`GATED`) with ``reviewers[env]`` (or ``reviewers["*"]``),
    every environment but the preview's main-only.

    Raises:
        ConfigError: a gated environment has no reviewer (a gate nobody can pass, or one that passes itself).
    """
    names = github_oidc.environment_workflows(environment_variables, workflows_dir)
    out = Wanted(repository, variables=dict(repository_variables), checks=required_checks(workflows_dir))
    for name in sorted(names):
        gate = name in GATED
        people = list(reviewers.get(name) or reviewers.get("*") or []) if gate else []
        if gate and not people:
            raise ConfigError(
                f"environment {name!r} is a gate: give its reviewers (--reviewer {name}=LOGIN or --reviewer '*=LOGIN')"
            )
        out.environments[name] = {
            "reviewers": people,
            "main_only": not name.startswith(ANY_BRANCH_PREFIX),
            "variables": dict(environment_variables.get(name, {})),
        }
    return out


class Api:
    """The few calls :func:`plan` needs, over a githubkit :class:`githubkit.GitHub` client (``request``)."""

    def __init__(self, github: Any) -> None:
        self.github = github

    def get(self, path: str) -> Any | None:
        """JSON of ``GET path``, or None on 404."""
        from githubkit.exception import RequestFailed

        try:
            return self.github.request("GET", path).json()
        except RequestFailed as exc:
            if exc.response.status_code == 404:
                return None
            raise

    def send(self, request: Request) -> None:
        """Send one write (its body validated already)."""
        self.github.request(request.method, request.path, json=request.body)

    def variables(self, path: str) -> dict[str, str]:
        """``{name: value}`` of every variable at ``path`` (``.../variables``; pages of 30, GitHub's maximum)."""
        out: dict[str, str] = {}
        page = 1
        while True:
            got = self.get(f"{path}?per_page=30&page={page}") or {}
            items = got.get("variables") or []
            out.update({v["name"]: v["value"] for v in items})
            if len(items) < 30 or len(out) >= int(got.get("total_count") or 0):
                return out
            page += 1


def connect(token: str, base_url: str | None = None, transport: Any = None) -> Api:
    """An :class:`Api` over githubkit with ``token`` (``GITHUB_TOKEN`` / ``GH_TOKEN``); ``base_url``: GitHub
    Enterprise's API (``GITHUB_API_URL``); ``transport``: an ``httpx`` transport (tests). No HTTP cache and
    no automatic retry, so what was read is what the server holds now."""
    from githubkit import GitHub

    if not token:
        raise ConfigError(
            "no GitHub token: set GITHUB_TOKEN or GH_TOKEN (a token with repository administration rights)"
        )
    return Api(GitHub(token, base_url=base_url, transport=transport, http_cache=False, auto_retry=False))


def _reviewer_ids(api: Api, owner: str, logins: Iterable[str]) -> list[dict[str, Any]]:
    out = []
    for who in logins:
        if "/" in who:
            org, slug = who.split("/", 1)
            team = api.get(f"/orgs/{org}/teams/{slug}")
            if not team:
                raise ConfigError(f"reviewer {who!r}: no such team")
            out.append({"type": "Team", "id": team["id"]})
        else:
            user = api.get(f"/users/{who}")
            if not user:
                raise ConfigError(f"reviewer {who!r}: no such GitHub user")
            out.append({"type": "User", "id": user["id"]})
    return sorted(out, key=lambda r: (r["type"], r["id"]))


def _current_env(current: Mapping[str, Any] | None) -> dict[str, Any]:
    if not current:
        return {}
    reviewers, prevent = [], False
    for rule in current.get("protection_rules") or []:
        if rule.get("type") == "required_reviewers":
            prevent = bool(rule.get("prevent_self_review"))
            reviewers = sorted(
                ({"type": r["type"], "id": (r.get("reviewer") or {}).get("id")} for r in rule.get("reviewers") or []),
                key=lambda r: (r["type"], r["id"]),
            )
    policy = current.get("deployment_branch_policy")
    return {"reviewers": reviewers, "prevent_self_review": prevent, "deployment_branch_policy": policy}


def _env_requests(api: Api, owner: str, repo: str, name: str, want: Mapping[str, Any]) -> list[Request]:
    base = f"/repos/{owner}/{repo}/environments/{name}"
    have = _current_env(api.get(base))
    reviewers = _reviewer_ids(api, owner, want["reviewers"])
    policy = {"protected_branches": False, "custom_branch_policies": True} if want["main_only"] else None
    body: dict[str, Any] = {"deployment_branch_policy": policy}
    if reviewers:
        body.update(reviewers=reviewers, prevent_self_review=True)
    current = {
        "deployment_branch_policy": have.get("deployment_branch_policy")
        and {k: have["deployment_branch_policy"].get(k) for k in ("protected_branches", "custom_branch_policies")}
    }
    if reviewers:  # a gate's reviewers are managed; another environment's, set by hand, are left alone
        current.update(reviewers=have.get("reviewers", []), prevent_self_review=have.get("prevent_self_review", False))
    out = []
    if not have or current != body:
        out.append(
            Request(
                "PUT",
                base,
                validated("PUT", "/repos/{o}/{r}/environments/{e}", body),
                f"environment {name}: reviewers {want['reviewers'] or 'none'}, "
                f"{'main only' if want['main_only'] else 'any branch'}",
            )
        )
    if want["main_only"]:
        listed = (api.get(f"{base}/deployment-branch-policies") or {}).get("branch_policies", []) if have else []
        if not any(p.get("name") == "main" and p.get("type", "branch") == "branch" for p in listed):
            out.append(
                Request(
                    "POST",
                    f"{base}/deployment-branch-policies",
                    validated(
                        "POST",
                        "/repos/{o}/{r}/environments/{e}/deployment-branch-policies",
                        {"name": "main", "type": "branch"},
                    ),
                    f"environment {name}: deploy from main only",
                )
            )
    existing = api.variables(f"{base}/variables") if have else {}
    out += _variable_requests(
        existing,
        want["variables"],
        f"{base}/variables",
        "/repos/{o}/{r}/environments/{e}/variables",
        f"environment {name}",
    )
    return out


def _variable_requests(
    existing: Mapping[str, str], want: Mapping[str, str], path: str, template: str, where: str
) -> list[Request]:
    out = []
    for key, value in sorted(want.items()):
        if key not in existing:
            out.append(
                Request("POST", path, validated("POST", template, {"name": key, "value": value}), f"{where}: add {key}")
            )
        elif existing[key] != value:
            out.append(
                Request(
                    "PATCH",
                    f"{path}/{key}",
                    validated("PATCH", template + "/{n}", {"name": key, "value": value}),
                    f"{where}: change {key}",
                )
            )
    return out


def _protection(api: Api, owner: str, repo: str, branch: str, checks: list[str]) -> list[Request]:
    path = f"/repos/{owner}/{repo}/branches/{branch}/protection"
    body = {
        "required_status_checks": {"strict": True, "contexts": list(checks)},
        "enforce_admins": True,
        "required_pull_request_reviews": {"required_approving_review_count": 1, "dismiss_stale_reviews": True},
        "restrictions": None,
    }
    have = api.get(path)
    if have:
        checks = have.get("required_status_checks") or {}
        reviews = have.get("required_pull_request_reviews") or {}
        current = {
            "required_status_checks": {
                "strict": bool(checks.get("strict")),
                "contexts": list(checks.get("contexts") or []),
            },
            "enforce_admins": bool((have.get("enforce_admins") or {}).get("enabled")),
            "required_pull_request_reviews": {
                "required_approving_review_count": reviews.get("required_approving_review_count"),
                "dismiss_stale_reviews": bool(reviews.get("dismiss_stale_reviews")),
            },
            "restrictions": None if not have.get("restrictions") else have["restrictions"],
        }
        if current == body:
            return []
    return [
        Request(
            "PUT",
            path,
            validated("PUT", "/repos/{o}/{r}/branches/{b}/protection", body),
            f"branch {branch}: pull request with 1 approval, checks {', '.join(checks)}",
        )
    ]


def _oidc(api: Api, owner: str, repo: str) -> list[Request]:
    path = f"/repos/{owner}/{repo}/actions/oidc/customization/sub"
    body = {"use_default": False, "include_claim_keys": list(github_oidc.SUBJECT_CLAIM_KEYS)}
    have = api.get(path) or {}
    if have.get("use_default") is False and list(have.get("include_claim_keys") or []) == body["include_claim_keys"]:
        return []
    return [
        Request(
            "PUT",
            path,
            validated("PUT", "/repos/{o}/{r}/actions/oidc/customization/sub", body),
            "OIDC subject template: " + ", ".join(body["include_claim_keys"]),
        )
    ]


def plan(api: Api, want: Wanted) -> list[Request]:
    """The writes that take the repository from its current state (GETs only) to ``want``; empty when it is
    there already. The subject template comes LAST: GitHub's docs ask for the cloud's trust first."""
    owner, repo = want.repository.split("/", 1)
    out: list[Request] = []
    for name, spec in want.environments.items():
        out += _env_requests(api, owner, repo, name, spec)
    existing = api.variables(f"/repos/{owner}/{repo}/actions/variables")
    out += _variable_requests(
        existing,
        want.variables,
        f"/repos/{owner}/{repo}/actions/variables",
        "/repos/{o}/{r}/actions/variables",
        "repository",
    )
    out += _protection(api, owner, repo, want.branch, want.checks)
    out += _oidc(api, owner, repo)
    return out


def apply(api: Api, requests: Iterable[Request], report: Callable[[Request], None] = lambda r: None) -> int:
    """Send ``requests`` in order, calling ``report`` after each; return how many were sent."""
    count = 0
    for request in requests:
        api.send(request)
        report(request)
        count += 1
    return count
