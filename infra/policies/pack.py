"""CrossGuard policies built from :mod:`rules` -- no rule logic lives here.

Each :class:`rules.ResourceRule` becomes a ``ResourceValidationPolicy`` and each
:class:`rules.StackRule` a ``StackValidationPolicy`` with the same name and description, so a
violation in ``pulumi preview --policy-pack infra/policies`` names the same rule as a failing unit test.
Properties still unknown during a preview raise ``UnknownValueError`` inside a rule; CrossGuard reports
those as "can't run policy during preview" and checks them again at ``pulumi up``.
"""

from __future__ import annotations

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

try:  # imported as part of the repository (tests) ...
    from infra.policies import rules
except ImportError:  # ... or from the policy pack folder by the Pulumi CLI
    import rules  # type: ignore[no-redef]

PACK_NAME = "detops-security"


def _resource_policy(rule: rules.ResourceRule) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        if args.resource_type not in rule.resource_types:
            return
        for message in rule.check(args.props):
            report_violation(message)

    return ResourceValidationPolicy(name=rule.name, description=rule.description, validate=validate)


def _stack_policy(rule: rules.StackRule) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        by_name = {resource.name: resource for resource in args.resources}
        listed = [rules.StackResource(r.resource_type, r.name, r.props) for r in args.resources]
        for name, message in rule.check(listed):
            resource = by_name.get(name)
            report_violation(message, resource.urn if resource is not None else None)

    return StackValidationPolicy(name=rule.name, description=rule.description, validate=validate)


def build_policies() -> list[Policy]:
    """Every rule of :mod:`rules` as a CrossGuard policy (resource rules first, then stack rules)."""
    return [_resource_policy(rule) for rule in rules.RESOURCE_RULES] + [
        _stack_policy(rule) for rule in rules.STACK_RULES
    ]


ENFORCEMENT_LEVEL = EnforcementLevel.MANDATORY
