"""detops infrastructure as code: Pulumi Python programs for Azure (``infra/azure``) and AWS (``infra/aws``).

Layout:

- :mod:`infra.settings` -- per-stack settings (``Pulumi.<stack>.yaml``), validated with pydantic when read.
- :mod:`infra.components` -- reusable ``ComponentResource`` classes, each with an ``...Args`` class.
- :mod:`infra.azure.program` / :mod:`infra.aws.program` -- ``create_stack(settings)``: the whole
  environment, returning the stack outputs that ``detops`` reads to configure its backends.
- :mod:`infra.policies.rules` -- the security rules (plain Python, one source of truth), used by the
  CrossGuard policy pack in ``infra/policies`` and by the unit tests in ``tests/infra``.

Nothing here needs the Pulumi CLI or cloud credentials to be imported or unit-tested.
"""
