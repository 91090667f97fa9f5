"""A fake GitHub REST API that keeps state, as an ``httpx.MockTransport`` handler (no network).

It serves the endpoints ``detops ci setup github`` uses, with the shapes GitHub documents (REST API
2026-03-10: environments, deployment branch policies, Actions variables, branch protection, OIDC
subject customization, users and teams). Every request body is validated against githubkit's request
model for that endpoint (``githubkit_schemas``, generated from GitHub's OpenAPI description), keys the
model does not know refused; a bad body answers 422 and is recorded in :attr:`FakeGitHub.invalid`.

What this cannot show: GitHub's own semantic checks beyond the schema (permissions of the token, a
reviewer who lacks read access, org rulesets overriding branch protection), rate limits, or that the
response shapes here are complete (only the fields the command reads are served).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import httpx

_ROUTES = [
    ("PUT", r"/repos/[^/]+/[^/]+/environments/[^/]+", "ReposOwnerRepoEnvironmentsEnvironmentNamePutBody"),
    (
        "POST",
        r"/repos/[^/]+/[^/]+/environments/[^/]+/deployment-branch-policies",
        "DeploymentBranchPolicyNamePatternWithType",
    ),
    (
        "POST",
        r"/repos/[^/]+/[^/]+/environments/[^/]+/variables",
        "ReposOwnerRepoEnvironmentsEnvironmentNameVariablesPostBody",
    ),
    (
        "PATCH",
        r"/repos/[^/]+/[^/]+/environments/[^/]+/variables/[^/]+",
        "ReposOwnerRepoEnvironmentsEnvironmentNameVariablesNamePatchBody",
    ),
    ("POST", r"/repos/[^/]+/[^/]+/actions/variables", "ReposOwnerRepoActionsVariablesPostBody"),
    ("PATCH", r"/repos/[^/]+/[^/]+/actions/variables/[^/]+", "ReposOwnerRepoActionsVariablesNamePatchBody"),
    ("PUT", r"/repos/[^/]+/[^/]+/branches/[^/]+/protection", "ReposOwnerRepoBranchesBranchProtectionPutBody"),
    ("PUT", r"/repos/[^/]+/[^/]+/actions/oidc/customization/sub", "OidcCustomSubRepo"),
]


def check_body(method: str, path: str, body: Any) -> str | None:
    """None when ``body`` fits GitHub's request model of ``method path``, else the problem."""
    from githubkit.versions.latest import models
    from pydantic import TypeAdapter, ValidationError

    for m, pattern, name in _ROUTES:
        if m == method and re.fullmatch(pattern, path):
            model = getattr(models, name)
            try:
                TypeAdapter(model).validate_python(body)
            except ValidationError as exc:
                return f"{name}: {exc}"
            known = {f.alias or n for n, f in model.model_fields.items()} | set(model.model_fields)
            extra = set(body) - known
            return f"{name}: unknown keys {sorted(extra)}" if extra else None
    return f"no such endpoint {method} {path}"


@dataclass
class FakeGitHub:
    """State: ``environments`` ``{name: {"reviewers", "prevent_self_review", "policy", "branches", "variables"}}``,
    ``variables`` (repository), ``protection`` (per branch), ``oidc``; ``requests``: every (method, path, body)."""

    users: dict[str, int] = field(default_factory=lambda: {"ada": 101, "grace": 102})
    teams: dict[str, int] = field(default_factory=lambda: {"detops/release-approvers": 501})
    environments: dict[str, dict[str, Any]] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)
    protection: dict[str, dict[str, Any]] = field(default_factory=dict)
    oidc: dict[str, Any] = field(default_factory=lambda: {"use_default": True})
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)

    def writes(self) -> list[tuple[str, str, Any]]:
        return [r for r in self.requests if r[0] != "GET"]

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    # -- dispatch ------------------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        if not request.headers.get("authorization", "").startswith(("token ", "Bearer ")):
            return self._json(401, {"message": "Requires authentication"})
        path, method = request.url.path, request.method
        body = json.loads(request.content) if request.content else None
        self.requests.append((method, path, body))
        if method != "GET":
            problem = check_body(method, path, body)
            if problem:
                self.invalid.append(problem)
                return self._json(422, {"message": problem})
        query = dict(request.url.params)
        for pattern, handler in (
            (r"/users/([^/]+)", self._user),
            (r"/orgs/([^/]+)/teams/([^/]+)", self._team),
            (r"/repos/[^/]+/[^/]+/environments/([^/]+)/deployment-branch-policies", self._policies),
            (r"/repos/[^/]+/[^/]+/environments/([^/]+)/variables(?:/([^/]+))?", self._env_variables),
            (r"/repos/[^/]+/[^/]+/environments/([^/]+)", self._environment),
            (r"/repos/[^/]+/[^/]+/actions/variables(?:/([^/]+))?", self._repo_variables),
            (r"/repos/[^/]+/[^/]+/branches/([^/]+)/protection", self._protection),
            (r"/repos/[^/]+/[^/]+/actions/oidc/customization/sub", self._oidc),
        ):
            m = re.fullmatch(pattern, path)
            if m:
                return handler(method, body, query, *m.groups())
        return self._json(404, {"message": "Not Found"})

    @staticmethod
    def _json(status: int, data: Any = None) -> httpx.Response:
        return httpx.Response(status, json=data) if data is not None else httpx.Response(status)

    # -- endpoints -----------------------------------------------------------------------------------

    def _user(self, method, body, query, login):
        uid = self.users.get(login)
        return (
            self._json(200, {"login": login, "id": uid, "type": "User"})
            if uid
            else self._json(404, {"message": "Not Found"})
        )

    def _team(self, method, body, query, org, slug):
        tid = self.teams.get(f"{org}/{slug}")
        return self._json(200, {"id": tid, "slug": slug}) if tid else self._json(404, {"message": "Not Found"})

    def _environment(self, method, body, query, name):
        if method == "PUT":
            env = self.environments.setdefault(name, {"branches": [], "variables": {}})
            env["reviewers"] = list(body.get("reviewers") or [])
            env["prevent_self_review"] = bool(body.get("prevent_self_review"))
            env["policy"] = body.get("deployment_branch_policy")
            if not (env["policy"] or {}).get("custom_branch_policies"):
                env["branches"] = []  # GitHub drops the custom policies with the setting
        env = self.environments.get(name)
        if env is None:
            return self._json(404, {"message": "Not Found"})
        rules = []
        if env["reviewers"]:
            rules.append(
                {
                    "id": 1,
                    "type": "required_reviewers",
                    "prevent_self_review": env["prevent_self_review"],
                    "reviewers": [{"type": r["type"], "reviewer": {"id": r["id"]}} for r in env["reviewers"]],
                }
            )
        return self._json(200, {"name": name, "protection_rules": rules, "deployment_branch_policy": env["policy"]})

    def _policies(self, method, body, query, name):
        env = self.environments.get(name)
        if env is None:
            return self._json(404, {"message": "Not Found"})
        if method == "POST":
            if not (env["policy"] or {}).get("custom_branch_policies"):
                return self._json(404, {"message": "custom_branch_policies is not enabled"})
            env["branches"].append({"id": len(env["branches"]) + 1, **body})
        return self._json(200, {"total_count": len(env["branches"]), "branch_policies": env["branches"]})

    def _variables(self, store, method, body, query, key):
        if method == "GET" and key is None:
            page, per = int(query.get("page", 1)), int(query.get("per_page", 30))
            items = [{"name": k, "value": v} for k, v in sorted(store.items())]
            return self._json(200, {"total_count": len(items), "variables": items[(page - 1) * per : page * per]})
        if method == "POST":
            if body["name"] in store:
                return self._json(409, {"message": "Already exists"})
            store[body["name"]] = body["value"]
            return self._json(201, {})
        if method == "PATCH":
            if key not in store:
                return self._json(404, {"message": "Not Found"})
            store[key] = body["value"]
            return self._json(204)
        return self._json(405, {"message": "method"})

    def _env_variables(self, method, body, query, name, key=None):
        env = self.environments.get(name)
        if env is None:
            return self._json(404, {"message": "Not Found"})
        return self._variables(env["variables"], method, body, query, key)

    def _repo_variables(self, method, body, query, key=None):
        return self._variables(self.variables, method, body, query, key)

    def _protection(self, method, body, query, branch):
        if method == "PUT":
            self.protection[branch] = body
        have = self.protection.get(branch)
        if have is None:
            return self._json(404, {"message": "Branch not protected"})
        return self._json(
            200,
            {
                "required_status_checks": have["required_status_checks"],
                "enforce_admins": {"enabled": have["enforce_admins"]},
                "required_pull_request_reviews": have["required_pull_request_reviews"],
            },
        )

    def _oidc(self, method, body, query):
        if method == "PUT":
            self.oidc = body
            return self._json(201, {})
        return self._json(200, self.oidc)
