"""Reusable Pulumi ComponentResources: :mod:`infra.components.azure` and :mod:`infra.components.aws`."""
