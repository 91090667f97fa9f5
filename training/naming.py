"""Names of the SageMaker resources detops creates: ONE function per kind, used by the application and by
the IAM policies of the Pulumi AWS program (``infra/components/aws_policies.py``).

Every SageMaker resource detops creates starts with a *name prefix*: the AWS stack's ``name_prefix``
(``detops-dev``, exported as the stack output ``sagemaker_name_prefix``; the application reads it from
``DETOPS_SM_NAME_PREFIX``, default ``detops`` for a local run). The CI roles may touch only
``<prefix>-*`` names, so a job, model or endpoint named any other way is refused by IAM; these functions
make sure the application never does that.

SageMaker names: 1-63 characters, letters, digits and hyphens, starting with a letter or digit
(``[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}``, the API reference's pattern). SageMaker lower-cases names in ARNs.
"""

from __future__ import annotations

import re

__all__ = [
    "DEFAULT_PREFIX",
    "NAME_PREFIX_ENV",
    "endpoint_name",
    "model_package_group_name",
    "name_pattern",
    "name_prefix",
    "sagemaker_name",
    "training_job_name",
]

NAME_PREFIX_ENV = "DETOPS_SM_NAME_PREFIX"
DEFAULT_PREFIX = "detops"
MAX_LENGTH = 63
_VALID = re.compile(r"[A-Za-z0-9](-*[A-Za-z0-9]){0,62}")


def name_prefix(prefix: str | None = None) -> str:
    """``prefix``, else the ``DETOPS_SM_NAME_PREFIX`` setting (default ``detops``); ValueError when malformed."""
    if prefix is None:
        from training.settings import AwsSettings

        prefix = AwsSettings.load().sm_name_prefix
    value = prefix or DEFAULT_PREFIX
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,29}", value) or value.endswith("-"):
        raise ValueError(f"SageMaker name prefix {value!r}: 1-30 lowercase letters, digits or '-', starting with a letter")
    return value


def sagemaker_name(prefix: str, *parts: str) -> str:
    """``<prefix>-<part>-<part>...`` made a valid SageMaker name: other characters become '-', runs of
    '-' collapse, the result is cut to 63 characters. The prefix is never cut (a name keeps matching
    the IAM pattern ``<prefix>-*``)."""
    tail = "-".join(part for part in parts if part)
    tail = re.sub(r"[^A-Za-z0-9-]+", "-", tail)
    tail = re.sub(r"-{2,}", "-", tail).strip("-")
    name = f"{prefix}-{tail}"[:MAX_LENGTH].rstrip("-")
    if not tail or not _VALID.fullmatch(name):
        raise ValueError(f"cannot make a SageMaker name from {prefix!r} and {parts!r}")
    return name


def name_pattern(prefix: str) -> str:
    """The IAM resource-name pattern every name made from ``prefix`` matches: ``<prefix>-*``."""
    return f"{prefix}-*"


def training_job_name(project: str, run_id: str, prefix: str | None = None) -> str:
    """Training job of run ``run_id`` of ``project``: ``<prefix>-<project>-<run id>``."""
    return sagemaker_name(name_prefix(prefix), project, run_id)


def endpoint_name(stage: str, prefix: str | None = None) -> str:
    """Real-time endpoint of a release stage (``staging``, ``production``): ``<prefix>-<stage>``.
    Models and endpoint configs deployed to it are named ``<endpoint>-v<version>-<time>``."""
    return sagemaker_name(name_prefix(prefix), stage)


def model_package_group_name(prefix: str | None = None) -> str:
    """The model package group (the registered model's name on SageMaker): ``<prefix>-detector``."""
    return sagemaker_name(name_prefix(prefix), "detector")
