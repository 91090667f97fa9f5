"""An offline evaluator of AWS identity policies: the IAM policy evaluation logic for one principal.

Decision (AWS IAM User Guide, "Policy evaluation logic", identity-based policies only): an explicit
``Deny`` that matches wins; otherwise an ``Allow`` that matches allows; otherwise the request is
implicitly denied. A statement matches when its ``Action``/``NotAction`` matches the action (glob,
case-insensitive), its ``Resource``/``NotResource`` matches the resource ARN (glob, case-sensitive)
and every condition holds.

Conditions: the string, ARN, Bool, Numeric and Null operators, the ``...IfExists`` suffix and the
``ForAllValues:``/``ForAnyValue:`` set prefixes. A key absent from the request makes a condition false,
except for negated operators (``StringNotEquals``...), ``...IfExists`` and ``ForAllValues:``, which are
true then ("Condition operators" and "Single-valued vs. multivalued context keys" in the User Guide).
Unknown operators raise, so a policy using one is never silently treated as allowed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _glob(pattern: str, value: str, *, case: bool) -> bool:
    # IAM wildcards: '*' any run of characters, '?' one character; nothing else is special.
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, 0 if case else re.IGNORECASE) is not None


def _string_op(name: str):
    base = {
        "StringEquals": lambda a, e: a == e,
        "StringEqualsIgnoreCase": lambda a, e: a.lower() == e.lower(),
        "StringLike": lambda a, e: _glob(e, a, case=True),
        "ArnEquals": lambda a, e: a == e,
        "ArnLike": lambda a, e: _glob(e, a, case=True),
        "Bool": lambda a, e: str(a).lower() == str(e).lower(),
        "NumericEquals": lambda a, e: float(a) == float(e),
        "NumericLessThan": lambda a, e: float(a) < float(e),
        "NumericLessThanEquals": lambda a, e: float(a) <= float(e),
        "NumericGreaterThan": lambda a, e: float(a) > float(e),
        "NumericGreaterThanEquals": lambda a, e: float(a) >= float(e),
    }
    negated = {
        "StringNotEquals": "StringEquals",
        "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
        "StringNotLike": "StringLike",
        "ArnNotEquals": "ArnEquals",
        "ArnNotLike": "ArnLike",
        "NumericNotEquals": "NumericEquals",
    }
    if name in base:
        return base[name], False
    if name in negated:
        return base[negated[name]], True
    raise ValueError(f"condition operator {name!r} is not supported by this evaluator")


def _condition_holds(operator: str, key: str, expected: Any, context: Mapping[str, Any]) -> bool:
    prefix = ""
    if ":" in operator:
        prefix, operator = operator.split(":", 1)
    if_exists = operator.endswith("IfExists")
    if if_exists:
        operator = operator.removesuffix("IfExists")
    present = key in context and context[key] is not None
    if operator == "Null":
        return (not present) == (str(expected).lower() == "true")
    compare, negated = _string_op(operator)
    expected_values = [str(v) for v in _as_list(expected)]
    if not present:
        return if_exists or negated or prefix == "ForAllValues"
    actual_values = [str(v) for v in _as_list(context[key])]

    def one(actual: str) -> bool:
        hit = any(compare(actual, e) for e in expected_values)
        return not hit if negated else hit

    if prefix == "ForAllValues":
        return all(one(a) for a in actual_values)
    if prefix == "ForAnyValue":
        return any(one(a) for a in actual_values)
    if prefix:
        raise ValueError(f"condition set operator {prefix!r} is not supported")
    return all(one(a) for a in actual_values)


def _matches(statement: Mapping[str, Any], action: str, resource: str, context: Mapping[str, Any]) -> bool:
    if "Action" in statement:
        if not any(_glob(str(p), action, case=False) for p in _as_list(statement["Action"])):
            return False
    elif "NotAction" in statement:
        if any(_glob(str(p), action, case=False) for p in _as_list(statement["NotAction"])):
            return False
    else:
        return False
    if "Resource" in statement:
        if not any(_glob(str(p), resource, case=True) for p in _as_list(statement["Resource"])):
            return False
    elif "NotResource" in statement:
        if any(_glob(str(p), resource, case=True) for p in _as_list(statement["NotResource"])):
            return False
    for operator, entries in (statement.get("Condition") or {}).items():
        for key, expected in entries.items():
            if not _condition_holds(operator, key, expected, context):
                return False
    return True


@dataclass(frozen=True)
class Decision:
    """``allowed``; ``reason`` as AWS words it (``explicit deny in ... (Sid)``, ``no identity-based policy allows``)."""

    allowed: bool
    reason: str


def evaluate(
    policies: Iterable[Mapping[str, Any]], action: str, resource: str, context: Mapping[str, Any] | None = None
) -> Decision:
    """Evaluate ``action`` on ``resource`` (an ARN or ``*``) with request ``context`` against ``policies``."""
    context = context or {}
    allowed_by = None
    for policy in policies:
        statements: Sequence[Mapping[str, Any]] = _as_list(policy.get("Statement"))
        for index, statement in enumerate(statements):
            if not _matches(statement, action, resource, context):
                continue
            sid = statement.get("Sid") or f"statement {index}"
            if statement.get("Effect") == "Deny":
                return Decision(False, f"with an explicit deny in an identity-based policy ({sid})")
            if statement.get("Effect") == "Allow":
                allowed_by = sid
    if allowed_by is not None:
        return Decision(True, f"allowed by {allowed_by}")
    return Decision(False, f"because no identity-based policy allows the {action} action")


__all__ = ["Decision", "evaluate"]
