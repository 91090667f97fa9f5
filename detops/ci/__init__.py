"""Setting up the CI systems from the repository's pipeline files and a stack's outputs (``detops ci setup ...``)."""
