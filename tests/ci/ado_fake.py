"""A fake Azure DevOps project behind an ``httpx.MockTransport``: keeps state, checks every request and
every answer against Microsoft's REST descriptions (:mod:`ado_spec`).

It serves the operations ``detops ci setup azure-devops`` uses, shaped as the descriptions' response
schemas say (``{"count", "value"}`` lists, ``ServiceEndpoint``, ``CheckConfiguration``, ...). A request the
descriptions do not allow is answered 400 and recorded in :attr:`FakeAzureDevOps.problems`.

What it cannot show: the real service's checks beyond the schemas (permissions of the token, which
fields it requires, uniqueness rules other than names), the real form of the subject it generates
(``/eid1/c/pub/t/<tenant>/a/<app>/sc/<organization id>/<connection id>``; here the tenant and app parts are
placeholders), how it keeps secret variables on a PUT (a real group answers ``value: null`` for secrets),
and whether a check's ``settings`` are ones the service accepts (they follow Microsoft's examples).
"""

from __future__ import annotations

import itertools
import json
import re
import uuid
from collections.abc import Mapping
from typing import Any

import httpx
from ado_spec import Spec

ORG_ID = "0a1b2c3d-0000-4000-8000-00000000a0a0"
PROJECT_ID = "5e6f7a8b-0000-4000-8000-00000000b0b0"
ENTRA_ISSUER = "https://login.microsoftonline.com/{tenant}/v2.0"


class FakeAzureDevOps:
    """One organization ``org`` with one project ``project`` and one Azure Repos repository ``repo``."""

    def __init__(self, org: str = "my-org", project: str = "detops", repo: str = "detops") -> None:
        self.org, self.project, self.repo = org, project, repo
        self.repo_id = str(uuid.uuid4())
        self.spec = Spec()
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.environments: dict[int, dict[str, Any]] = {}
        self.checks: dict[int, dict[str, Any]] = {}
        self.groups: dict[int, dict[str, Any]] = {}
        self.pipelines: dict[int, dict[str, Any]] = {}
        self.permissions: dict[tuple[str, str], dict[int, bool]] = {}
        self.requests: list[tuple[str, str]] = []
        self.writes: list[tuple[str, str, Any]] = []
        self.problems: list[str] = []
        self._ids = itertools.count(1)

    def client(self) -> httpx.Client:
        """An httpx client whose requests this fake answers."""
        return httpx.Client(transport=httpx.MockTransport(self.handle))

    # -- the transport ---------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        method, path = request.method, request.url.path
        query = dict(request.url.params)
        body = json.loads(request.content) if request.content else None
        self.requests.append((method, path))
        if method == "GET" and any(re.match(p, path) for p in self.undescribed()):
            problems = [] if query == {"api-version": "7.1"} else [f"{path}: query {query}"]
        else:
            problems = self.spec.check(method, path, query, body)
        if problems:
            self.problems += problems
            return httpx.Response(400, json={"message": "; ".join(problems)})
        if method != "GET":
            self.writes.append((method, path, body))
        status, answer = self.route(method, path, query, body)
        if status == 200:
            bad = self.spec.check_response(method, path, answer)
            if bad:
                self.problems += bad
        return httpx.Response(status, json=answer)

    def undescribed(self) -> list[str]:
        """:data:`detops.ci.azure_devops.UNDESCRIBED_GETS` as patterns (answered without a description)."""
        from detops.ci.azure_devops import UNDESCRIBED_GETS

        return [
            "^"
            + re.sub(
                r"\\\{[^}]+\\\}",
                "[^/]+",
                re.escape(t.replace("{organization}", self.org).replace("{project}", self.project)),
            )
            + "$"
            for t in UNDESCRIBED_GETS
        ]

    def route(self, method: str, path: str, query: Mapping[str, str], body: Any) -> tuple[int, Any]:
        org, proj = f"/{self.org}/_apis/", f"/{self.org}/{self.project}/_apis/"
        rest = path.removeprefix(proj) if path.startswith(proj) else path.removeprefix(org)
        scope = "project" if path.startswith(proj) else "org"
        tail = rest.rsplit("/", 1)[-1]
        if (method, scope) == ("GET", "org") and rest == f"projects/{self.project}":
            return 200, {"id": PROJECT_ID, "name": self.project}
        if (method, scope) == ("GET", "project") and rest.startswith("git/repositories/"):
            return (
                (200, {"id": self.repo_id, "name": self.repo}) if tail == self.repo else (404, {"message": "not found"})
            )
        handlers = {
            ("GET", "project", "serviceendpoint/endpoints"): lambda: self.list_endpoints(query),
            ("POST", "org", "serviceendpoint/endpoints"): lambda: self.create_endpoint(body),
            ("PUT", "org", "serviceendpoint/endpoints/{id}"): lambda: self.update_endpoint(tail, body),
            ("GET", "project", "distributedtask/environments"): lambda: self.listing(self.environments.values()),
            ("POST", "project", "distributedtask/environments"): lambda: self.create_environment(body),
            ("GET", "project", "pipelines/checks/configurations"): lambda: self.list_checks(query),
            ("POST", "project", "pipelines/checks/configurations"): lambda: self.create_check(body),
            ("PATCH", "project", "pipelines/checks/configurations/{id}"): lambda: self.update_check(int(tail), body),
            ("GET", "project", "distributedtask/variablegroups"): lambda: self.listing(self.groups.values()),
            ("POST", "org", "distributedtask/variablegroups"): lambda: self.create_group(body),
            ("PUT", "org", "distributedtask/variablegroups/{id}"): lambda: self.update_group(int(tail), body),
            ("GET", "project", "pipelines"): lambda: self.listing(
                {k: v for k, v in p.items() if k != "configuration"} for p in self.pipelines.values()
            ),
            ("GET", "project", "pipelines/{id}"): lambda: self.get(self.pipelines, int(tail)),
            ("POST", "project", "pipelines"): lambda: self.create_pipeline(body),
        }
        if rest.startswith("pipelines/pipelinepermissions/"):
            _, _, kind, rid = rest.split("/")
            return self.permission(method, kind, rid, body)
        handler = handlers.get((method, scope, rest)) or handlers.get(
            (method, scope, re.sub(r"/[^/]+$", "/{id}", rest))
        )
        if handler is None:
            self.problems.append(f"the fake does not serve {method} {path}")
            return 404, {"message": "the fake does not serve this"}
        return handler()

    # -- resources --------------------------------------------------------------------------------

    def next_id(self) -> int:
        return next(self._ids)

    @staticmethod
    def listing(items: Any) -> tuple[int, Any]:
        value = list(items)
        return 200, {"count": len(value), "value": value}

    @staticmethod
    def get(table: Mapping[int, Any], key: int) -> tuple[int, Any]:
        return (200, table[key]) if key in table else (404, {"message": "not found"})

    def conflict(self, table: Mapping[Any, Mapping[str, Any]], name: str) -> bool:
        return any(item["name"] == name for item in table.values())

    def list_endpoints(self, query: Mapping[str, str]) -> tuple[int, Any]:
        names = set(query["endpointNames"].split(","))
        return self.listing(e for e in self.endpoints.values() if e["name"] in names)

    def create_endpoint(self, body: dict[str, Any]) -> tuple[int, Any]:
        if self.conflict(self.endpoints, body["name"]):
            return 400, {"message": f"Service connection with name {body['name']} already exists"}
        endpoint_id = str(uuid.uuid4())
        made = {**body, "id": endpoint_id, "isReady": True}
        if body["authorization"]["scheme"] == "WorkloadIdentityFederation":
            tenant = body["authorization"]["parameters"]["tenantid"]
            made["authorization"] = {
                "scheme": "WorkloadIdentityFederation",
                "parameters": {
                    **body["authorization"]["parameters"],
                    "workloadIdentityFederationIssuer": ENTRA_ISSUER.format(tenant=tenant),
                    "workloadIdentityFederationSubject": f"/eid1/c/pub/t/TENANT/a/APP/sc/{ORG_ID}/{endpoint_id}",
                },
            }
        self.endpoints[endpoint_id] = made
        return 200, made

    def update_endpoint(self, endpoint_id: str, body: dict[str, Any]) -> tuple[int, Any]:
        if endpoint_id not in self.endpoints:
            return 404, {"message": "not found"}
        old = self.endpoints[endpoint_id]["authorization"]["parameters"]
        generated = {k: v for k, v in old.items() if k.startswith("workloadIdentityFederation")}
        made = {**body, "id": endpoint_id}
        made["authorization"] = {
            **body["authorization"],
            "parameters": {**body["authorization"]["parameters"], **generated},
        }
        self.endpoints[endpoint_id] = made
        return 200, made

    def create_environment(self, body: dict[str, Any]) -> tuple[int, Any]:
        if self.conflict(self.environments, body["name"]):
            return 400, {"message": f"Environment {body['name']} already exists"}
        env_id = self.next_id()
        self.environments[env_id] = {
            "id": env_id,
            "name": body["name"],
            "description": body.get("description", ""),
            "project": {"id": PROJECT_ID, "name": self.project},
        }
        return 200, self.environments[env_id]

    def list_checks(self, query: Mapping[str, str]) -> tuple[int, Any]:
        return self.listing(
            c
            for c in self.checks.values()
            if c["resource"]["type"] == query.get("resourceType") and c["resource"]["id"] == query.get("resourceId")
        )

    def create_check(self, body: dict[str, Any]) -> tuple[int, Any]:
        check_id = self.next_id()
        self.checks[check_id] = {**body, "id": check_id, "isDisabled": body.get("isDisabled", False)}
        return 200, self.checks[check_id]

    def update_check(self, check_id: int, body: dict[str, Any]) -> tuple[int, Any]:
        if check_id not in self.checks:
            return 404, {"message": "not found"}
        self.checks[check_id] = {**self.checks[check_id], **body, "id": check_id}
        return 200, self.checks[check_id]

    def create_group(self, body: dict[str, Any]) -> tuple[int, Any]:
        if self.conflict(self.groups, body["name"]):
            return 400, {"message": f"Variable group {body['name']} already exists"}
        group_id = self.next_id()
        self.groups[group_id] = {**body, "id": group_id}
        return 200, self.groups[group_id]

    def update_group(self, group_id: int, body: dict[str, Any]) -> tuple[int, Any]:
        if group_id not in self.groups:
            return 404, {"message": "not found"}
        self.groups[group_id] = {**body, "id": group_id}
        return 200, self.groups[group_id]

    def create_pipeline(self, body: dict[str, Any]) -> tuple[int, Any]:
        if self.conflict(self.pipelines, body["name"]):
            return 400, {"message": f"Pipeline {body['name']} already exists"}
        repo = body["configuration"].get("repository") or {}
        if repo.get("type") == "azureReposGit" and repo.get("id") != self.repo_id:
            return 400, {"message": "repository not found"}
        pipeline_id = self.next_id()
        self.pipelines[pipeline_id] = {
            "id": pipeline_id,
            "name": body["name"],
            "folder": body.get("folder", "\\"),
            "revision": 1,
            "configuration": dict(body["configuration"]),
        }
        return 200, self.pipelines[pipeline_id]

    def permission(self, method: str, kind: str, rid: str, body: Any) -> tuple[int, Any]:
        table = self.permissions.setdefault((kind, rid), {})
        if method == "PATCH":
            for p in body.get("pipelines") or []:
                table[p["id"]] = p["authorized"]
        return 200, {
            "resource": {"type": kind, "id": rid},
            "pipelines": [{"id": k, "authorized": v} for k, v in sorted(table.items())],
        }

    # -- what tests ask -------------------------------------------------------------------------------

    def endpoint(self, name: str) -> dict[str, Any]:
        """The service connection named ``name``."""
        return next(e for e in self.endpoints.values() if e["name"] == name)

    def environment_id(self, name: str) -> str:
        """The id (as text, as check resources carry it) of environment ``name``."""
        return str(next(e["id"] for e in self.environments.values() if e["name"] == name))

    def checks_on(self, kind: str, resource_id: str) -> list[dict[str, Any]]:
        """The check configurations on a resource."""
        return [c for c in self.checks.values() if c["resource"]["type"] == kind and c["resource"]["id"] == resource_id]

    def group(self, name: str) -> dict[str, Any]:
        """The variable group named ``name``."""
        return next(g for g in self.groups.values() if g["name"] == name)

    def pipeline_id(self, name: str) -> int:
        """The id of pipeline ``name``."""
        return next(p["id"] for p in self.pipelines.values() if p["name"] == name)

    def authorized(self, kind: str, resource_id: str) -> set[int]:
        """The pipelines authorized on a resource."""
        return {k for k, v in self.permissions.get((kind, resource_id), {}).items() if v}
