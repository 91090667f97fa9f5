"""The AWS program: ``program.create_stack(settings)``; ``__main__.py`` is the Pulumi entry point."""
