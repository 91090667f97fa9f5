"""Microsoft's Azure DevOps REST 7.1 descriptions (Swagger 2.0, vsts-rest-api-specs) as a request validator.

The files are read where they are kept (``../shared/vendor-specs/azure-devops-rest-7.1/``, SOURCE.md), not
copied into the repository. :meth:`Spec.check` matches a request to an operation by method and path
template (the most literal template wins: ``/pipelines/checks/configurations`` before
``/pipelines/{pipelineId}``), then checks the ``api-version`` the operation declares
(``#/parameters/api-Version`` = ``7.1``, ``api-Version-preview.N`` = ``7.1-preview.N``), the query
parameters (required ones present, no undeclared one), and the JSON body against the operation's body
schema with jsonschema (Draft 4, Swagger's dialect) plus one rule Swagger leaves out: a body may not carry a
property its schema does not declare (Swagger objects are open, so a misspelled name would pass), except the
few that the descriptions model as open subtypes (:data:`OPEN_SUBTYPES`).

What it cannot show: the service's own rules beyond the schema (which names are unique, which fields the
server requires in practice, what ``settings`` a check type takes: those follow the examples quoted in
detops/ci/azure_devops.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

SPEC_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "vendor-specs" / "azure-devops-rest-7.1"
#: Properties a description leaves to subtypes it does not list: ``CheckConfiguration.settings`` (each check
#: type's settings; the description's own examples POST__AddApprovalCheckConfiguration /
#: POST__AddTaskCheckConfiguration carry them) and the YAML configuration's ``path`` / ``repository``
#: (``CreateYamlPipelineConfigurationParameters`` in requests, ``YamlConfiguration`` in answers; neither in the
#: 7.1 file).
OPEN_SUBTYPES = {
    ("CheckConfiguration", "settings"),
    ("CreatePipelineConfigurationParameters", "path"),
    ("CreatePipelineConfigurationParameters", "repository"),
    ("PipelineConfiguration", "path"),
    ("PipelineConfiguration", "repository"),
}


@dataclass(frozen=True)
class Operation:
    """One operation of one description file."""

    file: str
    method: str
    template: str
    op: Mapping[str, Any]
    spec: Mapping[str, Any]

    @property
    def api_version(self) -> str:
        """The ``api-version`` the operation declares."""
        for p in self.op.get("parameters", []):
            ref = p.get("$ref", "")
            if ref.endswith("/api-Version"):
                return "7.1"
            if "/api-Version-preview." in ref:
                return "7.1-preview." + ref.rsplit(".", 1)[1]
        raise AssertionError(f"{self.file} {self.method} {self.template}: no api-version parameter")

    def parameters(self, where: str) -> list[Mapping[str, Any]]:
        """The operation's parameters ``in: where`` (``query``, ``body``)."""
        return [p for p in self.op.get("parameters", []) if p.get("in") == where]


class Spec:
    """Every operation of every file in :data:`SPEC_DIR`."""

    def __init__(self, folder: Path = SPEC_DIR) -> None:
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: Microsoft's Azure DevOps REST descriptions (../shared/vendor-specs)")
        self.operations: list[tuple[re.Pattern[str], Operation]] = []
        for path in sorted(folder.glob("*.json")):
            spec = json.loads(path.read_text(encoding="utf-8-sig"))
            for template, ops in spec["paths"].items():
                pattern = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$")
                for method, op in ops.items():
                    if method != "parameters":
                        self.operations.append((pattern, Operation(path.name, method.upper(), template, op, spec)))

    def operation(self, method: str, path: str) -> Operation | None:
        """The operation ``method path`` is, the most literal template first; None if none."""
        found = [o for p, o in self.operations if o.method == method and p.match(path)]
        return min(found, key=lambda o: o.template.count("{")) if found else None

    def check(self, method: str, path: str, query: Mapping[str, str], body: Any) -> list[str]:
        """Every way the request departs from the descriptions (empty: it conforms)."""
        op = self.operation(method, path)
        if op is None:
            return [f"{method} {path}: no such operation in {SPEC_DIR.name}"]
        where = f"{method} {op.template} ({op.file})"
        problems = []
        if query.get("api-version") != op.api_version:
            problems.append(
                f"{where}: api-version {query.get('api-version')!r}, the description says {op.api_version!r}"
            )
        declared = {p["name"] for p in op.parameters("query")} | {"api-version"}
        problems += [f"{where}: query parameter {k!r} is not declared" for k in query if k not in declared]
        problems += [
            f"{where}: required query parameter {p['name']!r} missing"
            for p in op.parameters("query")
            if p.get("required") and p["name"] not in query
        ]
        body_params = op.parameters("body")
        if body is None:
            if any(p.get("required") for p in body_params):
                problems.append(f"{where}: the body is required")
            return problems
        if not body_params:
            return problems + [f"{where}: takes no body"]
        problems += self.validate(op, body_params[0]["schema"], body, where)
        return problems

    def validate(self, op: Operation, schema: Mapping[str, Any], instance: Any, where: str) -> list[str]:
        """``instance`` against ``schema`` of ``op``'s file: jsonschema errors and undeclared properties."""
        root = {**schema, "definitions": op.spec["definitions"]}
        problems = [
            f"{where}: {'/'.join(map(str, e.absolute_path)) or 'body'}: {e.message}"
            for e in jsonschema.Draft4Validator(root).iter_errors(instance)
        ]
        problems += [f"{where}: {p}" for p in _undeclared(instance, schema, op.spec["definitions"], "body", None)]
        return problems

    def check_response(self, method: str, path: str, instance: Any) -> list[str]:
        """The fake's answer against the operation's 200 response schema (keeps the fake honest). A list is
        described as an array but sent wrapped, ``{"count": n, "value": [...]}`` (the descriptions'
        ``VssJsonCollectionWrapper``): the array checked is ``value``."""
        op = self.operation(method, path)
        schema = ((op.op.get("responses") or {}).get("200") or {}).get("schema") if op else None
        if (
            schema
            and schema.get("type") == "array"
            and isinstance(instance, dict)
            and set(instance) == {"count", "value"}
        ):
            instance = instance["value"]
        return self.validate(op, schema, instance, f"response of {method} {op.template}") if op and schema else []


def _resolve(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> tuple[Mapping[str, Any], str | None]:
    name = None
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = defs[name]
    return schema, name


def _properties(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> dict[str, Any]:
    props = dict(schema.get("properties") or {})
    for part in schema.get("allOf") or []:
        props.update(_properties(_resolve(part, defs)[0], defs))
    return props


def _undeclared(
    instance: Any, schema: Mapping[str, Any], defs: Mapping[str, Any], at: str, name: str | None
) -> list[str]:
    schema, ref = _resolve(schema, defs)
    name = ref or name
    out = []
    if isinstance(instance, dict):
        props = _properties(schema, defs)
        extra = schema.get("additionalProperties")
        if not props:  # a free-form object (``data``, ``parameters``) or a map
            if isinstance(extra, dict):
                for k, v in instance.items():
                    out += _undeclared(v, extra, defs, f"{at}/{k}", None)
            return out
        for k, v in instance.items():
            if k in props:
                out += _undeclared(v, props[k], defs, f"{at}/{k}", None)
            elif (name, k) not in OPEN_SUBTYPES:
                out.append(f"{at}: property {k!r} is not declared by {name or 'the schema'}")
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(instance):
            out += _undeclared(v, schema["items"], defs, f"{at}/{i}", None)
    return out
