"""The settings contract as data: every setting of every class, which ``detops`` call needs which,
docs/settings.md, and stack outputs -> CI variables.

The classes themselves live in :mod:`training.settings` (common, Azure, AWS) and
:mod:`deployment.serving.settings` (the scoring service); this module only reads them, so the CLI,
the docs and the CI contract test (tests/ci/test_settings_contract.py) see one list.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from training import settings as contract
from training.errors import ConfigError


def classes() -> list[tuple[str, type[BaseSettings]]]:
    """``[(concern, class)]`` in docs order: common, Azure, AWS, serving."""
    from deployment.serving.settings import ServerSettings, ServingSettings

    return [("common", contract.CommonSettings), ("azure", contract.AzureSettings), ("aws", contract.AwsSettings),
            ("serving", ServingSettings), ("serving", ServerSettings), ("ci", contract.AzureDevOpsSettings)]


#: Settings of the serving classes that a command needs (they carry no ``required_by`` metadata).
SERVING_REQUIRED = {"DETOPS_API_KEY": ("serve", "deploy --target local")}


@dataclass(frozen=True)
class SettingInfo:
    """One setting: its environment names (first = canonical), type, default, description, commands."""

    concern: str
    cls: str
    field: str
    env: tuple[str, ...]
    type: str
    default: Any
    description: str
    required_by: tuple[str, ...] = ()
    used_by: tuple[str, ...] = ()
    source: str = ""
    secret: bool = False

    @property
    def name(self) -> str:
        """The canonical environment name."""
        return self.env[0]


def _env_names(cls: type[BaseSettings], name: str, f: Any) -> tuple[str, ...]:
    extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
    if extra.get("env"):
        return tuple(extra["env"])
    alias = f.validation_alias
    if isinstance(alias, AliasChoices):
        names = [a for a in alias.choices if isinstance(a, str) and a.isupper()]
        if names:
            return tuple(names)
    if isinstance(alias, str):
        return (alias,)
    return ((cls.model_config.get("env_prefix") or "") + name.upper(),)


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if not getattr(annotation, "__args__", None) else None
    text = text or str(annotation).replace("typing.", "").replace("pathlib.", "").replace("pydantic.types.", "")
    return text.replace("NoneType", "None").replace("Annotated[", "").replace(", NoDecode]", "")


def all_settings() -> list[SettingInfo]:
    """Every setting of every class of the contract, in docs order."""
    out = []
    for concern, cls in classes():
        for name, f in cls.model_fields.items():
            env = _env_names(cls, name, f)
            extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
            required_by = tuple(extra.get("required_by") or ())
            for var, cmds in SERVING_REQUIRED.items():
                if var in env:
                    required_by = cmds
            default = None if f.is_required() else (f.default_factory() if f.default_factory else f.default)  # type: ignore[call-arg]
            out.append(SettingInfo(
                concern, cls.__name__, name, env, _type_name(f.annotation), default, f.description or "",
                required_by, tuple(extra.get("used_by") or ()), str(extra.get("source") or contract.USER),
                secret="SecretStr" in str(f.annotation),
            ))
    return out


def known_names() -> set[str]:
    """Every environment name of the contract (aliases included)."""
    return {n for s in all_settings() for n in s.env}


# -- which call needs what -------------------------------------------------------------------------

#: Commands with a ``--registry`` option (its default is DETOPS_REGISTRY, then mlflow).
REGISTRY_COMMANDS = {"gate", "register", "approve", "reject", "models", "serve", "deploy", "rollback"}


@dataclass
class Call:
    """A parsed ``detops`` call: command word, selecting options, dry run."""

    command: str
    options: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False


def parse_call(argv: list[str], env: Mapping[str, str] | None = None) -> Call:
    """``["submit", "c.yaml", "--backend", "azureml"]`` -> :class:`Call` with the defaults filled in
    (``--backend local``; ``--registry`` from ``DETOPS_REGISTRY`` in ``env``, else ``mlflow``)."""
    args = [a for a in argv if a != "--debug"]
    command = args[0] if args else ""
    opts: dict[str, str] = {}
    for i, a in enumerate(args):
        if a.startswith("--") and "=" in a:
            k, _, v = a.partition("=")
            opts[k] = v
        elif a.startswith("--") and i + 1 < len(args) and not args[i + 1].startswith("--"):
            opts.setdefault(a, args[i + 1])
    if command == "submit":
        opts.setdefault("--backend", "local")
    if command in REGISTRY_COMMANDS:
        opts.setdefault("--registry", contract.CommonSettings.load(env or {}).registry)
    return Call(command, opts, dry_run="--dry-run" in args)


def _matches(pattern: str, call: Call) -> bool:
    words = shlex.split(pattern)
    if words[0] not in ("*", call.command):
        return False
    pairs = dict(zip(words[1::2], words[2::2], strict=False))
    return all(call.options.get(k) == v for k, v in pairs.items())


def required_for(argv: list[str], env: Mapping[str, str] | None = None) -> list[SettingInfo]:
    """The settings a ``detops`` call cannot run without (none for a ``--dry-run``).

    Each returned setting is satisfied by any of its ``env`` names. ``smoke-test`` needs the
    variable named by ``--api-key-env``.
    """
    call = parse_call(argv, env)
    if call.dry_run:
        return []
    need = [s for s in all_settings() if any(_matches(p, call) for p in s.required_by)]
    if call.command == "smoke-test":  # local: DETOPS_API_KEY; Azure ML / SageMaker: from the platform unless named
        key_env = call.options.get("--api-key-env") or (
            "DETOPS_API_KEY" if call.options.get("--target", "local") == "local" else None)
        if key_env:
            need.append(SettingInfo("serving", "smoke-test", "api_key_env", (key_env,), "str", None,
                                    "API key of the endpoint under test", ("smoke-test",)))
    return need


# -- docs/settings.md ------------------------------------------------------------------------------

_TITLES = {"common": "Common", "azure": "Azure (Azure ML)", "aws": "AWS (SageMaker)", "serving": "Serving (scoring service)",
           "ci": "CI setup (`detops ci setup`)"}


def render_markdown() -> str:
    """docs/settings.md, generated from the classes (``detops settings docs --write``)."""
    lines = [
        "# Settings",
        "",
        "<!-- Generated by `detops settings docs --write` from training/settings.py and",
        "     deployment/serving/settings.py; tests/ci/test_settings_contract.py fails when it is stale. -->",
        "",
        "Every environment variable detops reads, declared once (pydantic-settings). No other module reads",
        "a `DETOPS_*`, `AZURE_*` or `AWS_*` variable. An empty value counts as unset. **Required by** lists",
        "the calls that stop without it (never a `--dry-run`); **used by** the ones that read it with a default.",
        "Values marked *stack output* are exported by the Pulumi programs under the same name and turned into",
        "CI variables by `detops settings ci-variables` (docs/cicd.md).",
        "",
    ]
    by_concern: dict[str, list[SettingInfo]] = {}
    for s in all_settings():
        by_concern.setdefault(s.concern, []).append(s)
    for concern, items in by_concern.items():
        lines += [f"## {_TITLES[concern]}", "", "| variable | type | default | required by | used by | from | description |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for s in items:
            names = " / ".join(f"`{n}`" for n in s.env)
            default = "*(secret, required)*" if s.secret else ("" if s.default in (None, [], "") else f"`{s.default}`")
            cell = lambda xs: "<br>".join(f"`{x}`" for x in xs)  # noqa: E731
            desc = s.description.replace("|", "\\|")
            lines.append(f"| {names} | {s.type.replace('|', 'or')} | {default} | {cell(s.required_by)} | "
                         f"{cell(s.used_by)} | {s.source} | {desc} |")
        lines.append("")
    return "\n".join(lines)


# -- identities and variables of the CI jobs -------------------------------------------------------

#: GitHub environment (and Azure DevOps variable group ``detops-<environment>``) -> the identity its jobs
#: log in as: the stack files' ``github.environments`` (infra/*/Pulumi.<stack>.yaml, docs/infra.md).
#: infra-reader is read-only; only its environments may run on a pull request.
ENVIRONMENT_IDENTITY = {
    "infra-preview-dev": "infra-reader",
    "infra-preview-prod": "infra-reader",
    "infra-dev": "infra-deployer",
    "infra-production": "infra-deployer",
    "training": "trainer",
    "model-registration": "registrar",
    "model-approval": "approver",
    "staging": "deployer",
    "production": "deployer",
}
#: The identities (infra/settings.py PURPOSES, with hyphens): Azure DevOps service connections are
#: ``detops-<cloud>-<identity>``; a variable group ``detops-<identity>`` may hold its AWS_ROLE_ARN.
IDENTITIES = ("infra-reader", "infra-deployer", "trainer", "registrar", "approver", "deployer")


def group_identity(suffix: str) -> str | None:
    """The identity of variable group ``detops-<suffix>`` (a CI environment's or an identity's own), or None."""
    return ENVIRONMENT_IDENTITY.get(suffix) or (suffix if suffix in IDENTITIES else None)
#: Settings that differ per identity: environment-level variables (GitHub) / per-environment
#: variable groups (Azure DevOps), never repository-level or workflow-level.
IDENTITY_SETTINGS = ("AZURE_CLIENT_ID", "AWS_ROLE_ARN")
#: CI variables that are not detops settings (docs/cicd.md): the model's name and the ones set by hand, and
#: those the workflows read that a stack exports per environment (:data:`ENVIRONMENT_CI_VARIABLES`).
CI_ONLY_VARIABLES = {"DETOPS_MODEL_NAME", "INFRA_CLOUD", "PULUMI_STACK", "PULUMI_BACKEND_URL", "DETOPS_REVIEWERS", "ENDPOINT_NAME",
                     "ENDPOINT_URL", "MODEL_VERSION", "SMOKE_IMAGE"}
#: Not settings, but per-environment values of the stacks' ``CI_ENVIRONMENTS`` output: ``ENDPOINT_NAME``, the
#: endpoint a release environment deploys to and smoke-tests (``--endpoint "${ENDPOINT_NAME}"`` in both
#: release workflows; the same name as the environment's ``DETOPS_SM_ENDPOINT`` / ``DETOPS_AML_ENDPOINT``).
ENVIRONMENT_CI_VARIABLES = {"ENDPOINT_NAME"}


def common_variables() -> set[str]:
    """Names a deployment's shared CI variables hold (repository variables / the detops-common group):
    every setting that comes from a stack output or is set by hand in CI, minus the per-identity ones."""
    sources = {contract.STACK, contract.STACK_AZURE, contract.STACK_AWS, contract.CI}
    return {s.name for s in all_settings() if s.source in sources and s.name not in IDENTITY_SETTINGS}


# -- stack outputs -> CI variables -----------------------------------------------------------------

#: Stack output holding per-CI-environment variables: ``{environment: {SETTING: value}}``
#: (each job's identity: AZURE_CLIENT_ID / AWS_ROLE_ARN of the preview, deploy, training,
#: registration and release identities).
CI_ENVIRONMENTS_OUTPUT = "CI_ENVIRONMENTS"


@dataclass
class CiVariables:
    """Repository-level variables and per-environment variables made from one stack's outputs."""

    repository: dict[str, str] = field(default_factory=dict)
    environments: dict[str, dict[str, str]] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)

    def all_for(self, environment: str | None) -> dict[str, str]:
        """What a job in ``environment`` sees: repository variables overlaid by the environment's."""
        return {**self.repository, **(self.environments.get(environment or "", {}))}


def ci_variables(outputs: Mapping[str, Any], extra_names: Iterable[str] = ()) -> CiVariables:
    """Map ``pulumi stack output --json`` to CI variables.

    An output whose name is a setting's environment name becomes a variable of that name; the
    ``CI_ENVIRONMENTS`` output (``{environment: {NAME: value}}``) becomes per-environment variables
    (settings, and the workflows' :data:`ENVIRONMENT_CI_VARIABLES`); every other output (lower-case
    descriptive outputs) is listed in ``ignored``.

    Raises:
        ConfigError: a ``CI_ENVIRONMENTS`` entry names something that is neither a setting nor one of
            :data:`ENVIRONMENT_CI_VARIABLES`.
    """
    known = known_names() | set(extra_names)
    out = CiVariables()
    for key, value in sorted(outputs.items()):
        if key == CI_ENVIRONMENTS_OUTPUT:
            if not isinstance(value, Mapping):
                raise ConfigError(f"stack output {key} must be an object {{environment: {{NAME: value}}}}")
            for envname, variables in sorted(value.items()):
                if envname not in ENVIRONMENT_IDENTITY:
                    raise ConfigError(f"stack output {key}: unknown CI environment {envname!r} "
                                      f"(known: {', '.join(ENVIRONMENT_IDENTITY)})")
                bad = sorted(set(variables) - known - ENVIRONMENT_CI_VARIABLES)
                if bad:
                    raise ConfigError(f"stack output {key}.{envname}: {', '.join(bad)} is not a setting (docs/settings.md)")
                out.environments[envname] = {k: _text(v) for k, v in sorted(variables.items())}
        elif key in known:
            out.repository[key] = _text(value)
        else:
            out.ignored.append(key)
    return out


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def github_commands(v: CiVariables, repo: str | None = None) -> list[str]:
    """``gh variable set`` commands (repository variables, then ``--env`` ones)."""
    r = f" --repo {shlex.quote(repo)}" if repo else ""
    cmds = [f"gh variable set {k} --body {shlex.quote(val)}{r}" for k, val in v.repository.items()]
    for envname, variables in v.environments.items():
        cmds += [f"gh variable set {k} --env {shlex.quote(envname)} --body {shlex.quote(val)}{r}" for k, val in variables.items()]
    return cmds


def azure_devops_commands(v: CiVariables, group: str = "detops-common") -> list[str]:
    """``az pipelines variable-group`` commands: the shared group, and ``detops-<environment>`` per environment."""
    def create(name: str, variables: Mapping[str, str]) -> str:
        pairs = " ".join(f"{k}={shlex.quote(val)}" for k, val in variables.items())
        return f"az pipelines variable-group create --name {shlex.quote(name)} --authorize false --variables {pairs}"

    cmds = [create(group, v.repository)] if v.repository else []
    cmds += [create(f"detops-{envname}", variables) for envname, variables in v.environments.items() if variables]
    return cmds


def dotenv(v: CiVariables, environment: str | None = None) -> str:
    """The variables one job sees, as ``NAME=value`` lines (for a rehearsal or a local shell)."""
    return "".join(f"{k}={val}\n" for k, val in sorted(v.all_for(environment).items()))
