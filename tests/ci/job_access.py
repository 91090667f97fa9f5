"""What each CI job's commands need of its cloud identity, and whether that identity has it.

For a job (:mod:`ci_jobs`, read from the workflow YAML) on a stack (the Pulumi program under mocks), the
job's environment is built exactly as its CI system builds it (:meth:`ci_jobs.Job.environ`), and each
``detops`` command of its success path is turned into the requests it makes with THAT environment: the
resource names come from the code's own settings and naming (``training.settings.AwsSettings.load(env)``,
``training.naming``), so a variable the job does not map changes the request (a training job named
``detops-...`` instead of ``<stack prefix>-...``, a ``ml.g5.xlarge`` instance) or stops the command (a
required setting missing). Each request is then checked against the job's own identity:

- AWS: the inline policy the AWS program attaches to the job's role (``<purpose>-access``), evaluated by the
  project's IAM evaluator (``tests/infra/iam_eval.py``: resource patterns, conditions, explicit deny);
- Azure: the role assignments the Azure program makes to the job's identity x Microsoft's built-in role
  definitions (``tests/infra/azure_rbac.py``), at the scope of the request.

Which requests a command makes (:data:`AWS_REQUESTS` / :data:`AZURE_REQUESTS`) is written down here from the
code it runs (the module of each entry is named); the rehearsal on the IAM-enforcing moto server
(scripts/rehearse.sh sagemaker) runs the same commands for real and catches a call this table misses.
What this table cannot show: calls made by code paths the commands take only on errors, and ECR layer
uploads' exact sequence (the Amazon ECR User Guide's list of a push's permissions is used).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: A run id and project as ``detops submit`` makes them (training/run.py: ``<yyyymmdd-hhmmss>-<6 hex>``).
RUN_ID = "20261207-120000-abc123"
PROJECT = "bccd"
MODEL_VERSION = "3"


class MissingSetting(Exception):
    """A command of a job cannot run with the environment its workflow gives it (names the setting)."""


def need(env: Mapping[str, str], name: str, what: str) -> str:
    """``env[name]``; MissingSetting naming the setting and ``what`` needs it when it is unset or empty."""
    value = env.get(name, "")
    if not value:
        raise MissingSetting(f"{what} needs {name}, which the job's environment does not set")
    return value


@dataclass(frozen=True)
class Request:
    """One authorization a command needs: IAM ``action`` on ``resource`` (an ARN, or ``*``) with the request's
    condition ``context`` (AWS), or an RBAC ``action`` at ``resource`` (an ARM scope; Azure). ``why`` names the
    command and the code that makes it."""

    action: str
    resource: str
    context: Mapping[str, Any] = field(default_factory=dict)
    why: str = ""


@dataclass(frozen=True)
class Denial:
    """A request the job's identity may not make: one line naming the job, the identity, the action and the
    resource, and why it was asked for."""

    job: str
    identity: str
    request: Request
    reason: str

    def __str__(self) -> str:
        return (f"job {self.job} as {self.identity}: {self.request.action} on {self.request.resource} denied "
                f"({self.reason}); needed by {self.request.why}")


# --- AWS ------------------------------------------------------------------------------------------------


def _s3(uri: str, key: str = "") -> str:
    """``s3://bucket/prefix`` (+ ``/key``) -> ``arn:aws:s3:::bucket/prefix/key``; the bucket alone when both
    are empty (ListBucket)."""
    path = uri.removeprefix("s3://").rstrip("/")
    return "arn:aws:s3:::" + (f"{path}/{key}" if key else path)


def _bucket(uri: str) -> str:
    return "arn:aws:s3:::" + uri.removeprefix("s3://").split("/")[0]


@dataclass(frozen=True)
class AwsJob:
    """What a command of one job sees: the settings loaded from the job's environment, the stack's account
    and key (from STS and the bucket's default encryption, not from the environment) and the run folder /
    training job the previous jobs passed on."""

    env: Mapping[str, str]
    account: str
    kms_key_arn: str
    passed: Mapping[str, str] = field(default_factory=dict)

    @property
    def settings(self):
        from training.settings import AwsSettings

        return AwsSettings.load(dict(self.env))

    def need(self, name: str, what: str) -> str:
        return need(self.env, name, what)

    @property
    def region(self) -> str:
        return self.need("AWS_REGION", "every AWS client")

    def sagemaker(self, kind: str, name: str) -> str:
        return f"arn:aws:sagemaker:{self.region}:{self.account}:{kind}/{name.lower()}"

    @property
    def group(self) -> str:
        """The model package group: the registered model's name (deployment/registry/sagemaker.py)."""
        return self.need("DETOPS_MODEL_NAME", "the model registry")

    @property
    def run_dir(self) -> str:
        """The run folder: the job's RUN_DIR, else the one submit makes under DETOPS_DATASTORE (the submit job)."""
        return self.env.get("RUN_DIR") or f"{self.need('DETOPS_DATASTORE', 'the run folder')}/{PROJECT}/{RUN_ID}"

    @property
    def artifact_dir(self) -> str:
        """Where a registered version's files are: the run folder the register job registered (its model package
        names it, so the release jobs need no datastore setting)."""
        return self.passed.get("RUN_DIR", "")

    @property
    def training_job(self) -> str:
        from training import naming

        return self.env.get("JOB") or naming.training_job_name(PROJECT, RUN_ID, self.settings.sm_name_prefix)

    def read(self, uri: str, key: str, why: str) -> list[Request]:
        return [Request("s3:GetObject", _s3(uri, key), {}, why), Request("kms:Decrypt", self.kms_key_arn, {}, why)]

    def write(self, uri: str, key: str, why: str) -> list[Request]:
        return [Request("s3:PutObject", _s3(uri, key), {}, why), Request("kms:GenerateDataKey", self.kms_key_arn, {}, why)]

    def registry_reads(self, why: str) -> list[Request]:
        """The registry's reads (deployment/registry/sagemaker.py): list the group's packages, describe one."""
        return [Request("sagemaker:ListModelPackages", "*", {}, why),
                Request("sagemaker:DescribeModelPackage", self.sagemaker("model-package", f"{self.group}/{MODEL_VERSION}"), {}, why),
                *self.read(self.need("DETOPS_SM_REGISTRY_URI", why), f"{self.group}/{MODEL_VERSION}.json", why)]


def _submit(job: AwsJob) -> list[Request]:
    why = "submit (training/backends/sagemaker.py, training/cloud/quota.py)"
    s = job.settings
    role = job.need("DETOPS_SM_ROLE_ARN", "submit --backend sagemaker")
    datasets = job.need("DETOPS_DATASETS", "submit (prepare reads the datasets)")
    kms = {"sagemaker:VolumeKmsKeyArn": s.sm_kms_key_id, "sagemaker:OutputKmsKeyArn": s.sm_kms_key_id} if s.sm_kms_key_id else {}
    return [
        Request("s3:ListBucket", _bucket(datasets), {}, why),
        *job.read(datasets, "bccd/BCCD/train/_annotations.coco.json", why),
        *job.write(job.run_dir, "tf_records/train-00000-of-00001.tfrecord", why),
        Request("servicequotas:ListServiceQuotas", "*", {}, why),
        Request("sagemaker:ListTrainingJobs", "*", {}, why),
        Request("iam:PassRole", role, {"iam:PassedToService": "sagemaker.amazonaws.com"}, why),
        Request("sagemaker:CreateTrainingJob", job.sagemaker("training-job", job.training_job),
                {"sagemaker:InstanceTypes": [s.sm_instance_type], **kms}, why),
        Request("sagemaker:AddTags", job.sagemaker("training-job", job.training_job), {}, why + ": tags on create"),
    ]


def _wait(job: AwsJob) -> list[Request]:
    return [Request("sagemaker:DescribeTrainingJob", job.sagemaker("training-job", job.training_job), {},
                    "wait (training/backends/sagemaker.py)")]


def _cancel(job: AwsJob) -> list[Request]:
    return [Request("sagemaker:StopTrainingJob", job.sagemaker("training-job", job.training_job), {},
                    "cancel (training/backends/sagemaker.py)")]


def _evaluate(job: AwsJob) -> list[Request]:
    why = "evaluate (training/evaluate.py on the run folder)"
    return [*job.read(job.run_dir, "export/saved_model/saved_model.pb", why),
            *job.write(job.run_dir, "metrics/test.json", why)]


def _gate(job: AwsJob) -> list[Request]:
    why = "gate (deployment/registry/approval.py: the current Approved version)"
    return [*job.read(job.run_dir, "metrics/test.json", why), *job.registry_reads(why)]


def _register(job: AwsJob) -> list[Request]:
    why = "register (deployment/registry/sagemaker.py, training/manifest.py)"
    from training.manifest import MANIFEST_FILE

    package = job.sagemaker("model-package-group", job.group)
    return [
        *job.read(job.run_dir, "export/model.tflite", why),
        *job.write(job.run_dir, f"export/{MANIFEST_FILE}", why),
        *job.write(job.need("DETOPS_SM_REGISTRY_URI", why), f"{job.group}/{MODEL_VERSION}.json", why),
        *job.registry_reads(why),
        Request("sagemaker:DescribeModelPackageGroup", package, {}, why),
        Request("sagemaker:CreateModelPackage", package, {"sagemaker:ModelApprovalStatus": "PendingManualApproval"}, why),
        Request("sagemaker:AddTags", job.sagemaker("model-package", f"{job.group}/{MODEL_VERSION}"), {}, why),
    ]


def _approve(job: AwsJob) -> list[Request]:
    why = "approve (deployment/registry/sagemaker.py: the approval status and its audit document)"
    return [*job.registry_reads(why),
            Request("sagemaker:UpdateModelPackage", job.sagemaker("model-package", f"{job.group}/{MODEL_VERSION}"),
                    {"sagemaker:ModelApprovalStatus": "Approved"}, why),
            *job.write(job.need("DETOPS_SM_REGISTRY_URI", why), f"{job.group}/{MODEL_VERSION}.json", why)]


def _promote(job: AwsJob) -> list[Request]:
    """``detops promote`` (deployment/promote.py) runs only when the job has DETOPS_PROMOTE_SOURCE_URI (both
    release workflows skip it otherwise): read the dev version and its files, write the copy, register it
    PendingManualApproval and set Approved in the prod group."""
    source = job.env.get("DETOPS_PROMOTE_SOURCE_URI", "")
    if not source:
        return []
    why = "promote (deployment/promote.py)"
    account = job.env.get("DETOPS_PROMOTE_SOURCE_ACCOUNT") or job.account
    group = job.env.get("DETOPS_PROMOTE_SOURCE_NAME") or job.group
    package = f"arn:aws:sagemaker:{job.region}:{account}:model-package/{group.lower()}/{MODEL_VERSION}"
    copy = job.need("DETOPS_PROMOTE_ARTIFACT_ROOT", why)
    return [Request("sagemaker:DescribeModelPackage", package, {}, why),
            Request("s3:GetObject", _s3(source, f"{group}/{MODEL_VERSION}.json"), {}, why),
            *job.write(copy, f"{job.group}/v{MODEL_VERSION}-000000000000/model.tflite", why),
            Request("sagemaker:CreateModelPackage", job.sagemaker("model-package-group", job.group),
                    {"sagemaker:ModelApprovalStatus": "PendingManualApproval"}, why),
            Request("sagemaker:UpdateModelPackage", job.sagemaker("model-package", f"{job.group}/1"),
                    {"sagemaker:ModelApprovalStatus": "Approved"}, why)]


def _models(job: AwsJob) -> list[Request]:
    return job.registry_reads("models list/show (deployment/registry/sagemaker.py)")


def _endpoint(job: AwsJob, args: list[str]) -> str:
    endpoint = _option(args, "--endpoint")
    return job.env.get(endpoint.strip("${}"), "") if endpoint.startswith("${") else endpoint


def _deploy(job: AwsJob, args: list[str]) -> list[Request]:
    why = "deploy (deployment/targets/sagemaker.py, deployment/registry/artifact.py)"
    s = job.settings
    endpoint = _endpoint(job, args) or s.sm_endpoint or "detops"
    job.need("DETOPS_SM_CAPTURE_URI", why)
    base = f"{endpoint}-v{MODEL_VERSION}-20261207120000"
    kms = {"sagemaker:VolumeKmsKeyArn": s.sm_kms_key_id} if s.sm_kms_key_id else {}
    return [
        *job.registry_reads(why),
        *job.read(job.artifact_dir, "export/model.tflite", why + ": the artifact digest"),
        Request("sagemaker:ListEndpoints", "*", {}, why + ": quota pre-flight"),
        Request("iam:PassRole", job.need("DETOPS_SM_ROLE_ARN", why), {"iam:PassedToService": "sagemaker.amazonaws.com"}, why),
        Request("sagemaker:CreateModel", job.sagemaker("model", base), {"sagemaker:NetworkIsolation": "true"}, why),
        Request("sagemaker:CreateEndpointConfig", job.sagemaker("endpoint-config", base),
                {"sagemaker:InstanceTypes": [s.sm_instance_type_serving], **kms}, why),
        Request("sagemaker:DescribeEndpoint", job.sagemaker("endpoint", endpoint), {}, why),
        Request("sagemaker:UpdateEndpoint", job.sagemaker("endpoint", endpoint), {}, why),
        Request("sagemaker:CreateEndpoint", job.sagemaker("endpoint", endpoint), {}, why),
        Request("sagemaker:AddTags", job.sagemaker("endpoint-config", base), {}, why + ": tags on create"),
    ]


def _smoke(job: AwsJob, args: list[str]) -> list[Request]:
    endpoint = _endpoint(job, args) or job.settings.sm_endpoint or "detops"
    why = "smoke-test (deployment/smoke.py: signed InvokeEndpoint)"
    return [Request("sagemaker:DescribeEndpoint", job.sagemaker("endpoint", endpoint), {}, why),
            Request("sagemaker:InvokeEndpoint", job.sagemaker("endpoint", endpoint), {}, why)]


def _rollback(job: AwsJob, args: list[str]) -> list[Request]:
    endpoint = _endpoint(job, args) or job.settings.sm_endpoint or "detops"
    why = "rollback (deployment/targets/sagemaker.py: the previous endpoint config from its tags)"
    config = job.sagemaker("endpoint-config", f"{endpoint}-v{MODEL_VERSION}-20261207120000")
    return [Request("sagemaker:DescribeEndpoint", job.sagemaker("endpoint", endpoint), {}, why),
            Request("sagemaker:DescribeEndpointConfig", config, {}, why),
            Request("sagemaker:ListTags", config, {}, why),
            Request("sagemaker:UpdateEndpoint", job.sagemaker("endpoint", endpoint), {}, why)]


#: ECR permissions of a push (Amazon ECR User Guide, "Pushing a Docker image") and of images.sh's
#: is-the-tag-there check (``docker buildx imagetools inspect``: the manifest).
ECR_PUSH = ("ecr:BatchCheckLayerAvailability", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart",
            "ecr:CompleteLayerUpload", "ecr:PutImage", "ecr:BatchGetImage")


def _images(job: AwsJob) -> list[Request]:
    why = "scripts/images.sh (login, push training and serving images)"
    out = [Request("ecr:GetAuthorizationToken", "*", {}, why)]
    for name in ("DETOPS_TRAINING_REPOSITORY", "DETOPS_SERVING_REPOSITORY"):
        host, _, repository = job.need(name, why).partition("/")
        arn = f"arn:aws:ecr:{job.region}:{host.split('.')[0]}:repository/{repository}"
        out += [Request(action, arn, {}, why) for action in ECR_PUSH]
    return out


def _option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1] if name in args else ""


#: ``detops`` subcommand -> the requests it makes on SageMaker (``(job, args) -> [Request]``). ``reviewer``
#: and ``smoke-test`` of other targets make none; a subcommand missing here fails the test (the table must
#: grow with the workflows).
AWS_REQUESTS: dict[str, Callable[[AwsJob, list[str]], list[Request]]] = {
    "submit": lambda j, a: _submit(j), "wait": lambda j, a: _wait(j), "cancel": lambda j, a: _cancel(j),
    "evaluate": lambda j, a: _evaluate(j), "gate": lambda j, a: _gate(j), "register": lambda j, a: _register(j),
    "models": lambda j, a: _models(j), "approve": lambda j, a: _approve(j), "promote": lambda j, a: _promote(j), "deploy": _deploy, "smoke-test": _smoke, "rollback": _rollback,
    "reviewer": lambda j, a: [], "images.sh": lambda j, a: _images(j),
}


# --- jobs x identities ------------------------------------------------------------------------------------



@dataclass(frozen=True)
class JobAccess:
    """One job on one stack: its key, the identity it runs as (None: it logs in nowhere), the requests its
    commands make and the denials among them. ``note`` explains a job whose requests are not modelled."""

    key: str
    identity: str | None
    requests: tuple[Request, ...]
    denials: tuple[Denial, ...]
    note: str = ""


def group_environment(group: str) -> str | None:
    """The CI environment whose variables an Azure DevOps variable group holds (``detops-<environment>``;
    ``detops-common``: the repository-level variables, None)."""
    name = group.removeprefix("detops-")
    return None if name == "common" else name


def job_variables(job: Any, variables: Any, backend: str, model_name: str) -> dict[str, str]:
    """The CI variables a job's scripts can see before its own mapping: GitHub, the repository's and its
    environment's variables (:meth:`contract.CiVariables.all_for`); Azure DevOps, the variables of every group
    linked to the job, in link order. Plus the ones set by hand (docs/cicd.md): DETOPS_BACKEND, DETOPS_REGISTRY
    and DETOPS_MODEL_NAME (SageMaker: the stack's model package group, ``model_name``)."""
    hand = {"DETOPS_MODEL_NAME": model_name, "DETOPS_BACKEND": backend, "DETOPS_REGISTRY": backend}
    if job.system in ("github", "person"):
        return {**hand, **variables.all_for(job.environment)}
    out = dict(hand)
    for group in job.groups:
        env = group_environment(group)
        out.update(variables.repository if env is None else variables.environments.get(env, {}))
    return out


def purpose_of_role(outputs: Mapping[str, Any], role_arn: str) -> str | None:
    """The purpose whose output ``<purpose>_role_arn`` is ``role_arn`` (not the SageMaker execution role)."""
    for key, value in outputs.items():
        if key.endswith("_role_arn") and key != "sagemaker_role_arn" and value == role_arn:
            return key.removesuffix("_role_arn").replace("_", "-")
    return None


def commands(job: Any, backend: str) -> list[tuple[Any, list[str]]]:
    """``(step, argument list)`` of every ``detops`` command of the job's scripts (success, failure and cancel
    paths), and ``(step, ["images.sh"])`` for a script that runs scripts/images.sh."""
    import re

    from cicd_helpers import detops_calls

    out: list[tuple[Any, list[str]]] = []
    for step in job.steps:
        script = re.sub(r"\$\{\{\s*parameters\.backend\s*\}\}", backend, step.script)
        if "scripts/images.sh" in script:
            out.append((step, ["images.sh"]))
        out += [(step, a) for a in detops_calls(script) if a]
    return out


def passed_values(variables: Any, outputs: Mapping[str, Any]) -> dict[str, str]:
    """What earlier jobs hand on (``needs.<job>.outputs``, stage dependencies), as the train job makes them
    with the training environment's settings: the run folder, the training job's name, the version."""
    from training import naming
    from training.settings import AwsSettings

    training = variables.all_for("training")
    prefix = AwsSettings.load(training).sm_name_prefix
    return {"RUN_DIR": f"{training.get('DETOPS_DATASTORE', '')}/{PROJECT}/{RUN_ID}",
            "JOB": naming.training_job_name(PROJECT, RUN_ID, prefix), "MODEL_VERSION": MODEL_VERSION,
            "DETOPS_TRAINING_IMAGE": f"{training.get('DETOPS_TRAINING_REPOSITORY', '')}@sha256:{'0' * 64}",
            "DETOPS_SERVING_IMAGE": f"{training.get('DETOPS_SERVING_REPOSITORY', '')}@sha256:{'1' * 64}"}


def _login_env(job: Any, base: Mapping[str, str]) -> dict[str, str]:
    """What a GitHub login step adds to the environment of the steps after it:
    aws-actions/configure-aws-credentials exports AWS_REGION and AWS_DEFAULT_REGION (its ``aws-region``
    input, ``${{ vars.AWS_REGION }}`` here) next to the session's keys (action.yml of the action)."""
    if job.system != "github" or not job.logs_in:
        return {}
    return {"AWS_REGION": base.get("AWS_REGION", ""), "AWS_DEFAULT_REGION": base.get("AWS_REGION", "")}


def aws_role_of(job: Any, base: Mapping[str, str], env: Mapping[str, str]) -> str:
    """The role a job assumes: GitHub's login step reads ``${{ vars.AWS_ROLE_ARN }}`` (its environment's
    variable); Azure DevOps' cloud template exports the AWS_ROLE_ARN of the job's variable groups."""
    return env.get("AWS_ROLE_ARN", "") if job.system == "azure-devops" else base.get("AWS_ROLE_ARN", "")


def aws_access(job: Any, outputs: Mapping[str, Any], variables: Any, policies: Mapping[str, Mapping[str, Any]],
               passed: Mapping[str, str] | None = None) -> JobAccess:
    """Check one job's SageMaker requests against the inline policy of the role it assumes.

    ``outputs``: the AWS stack's outputs; ``variables``: ``contract.ci_variables(outputs)``; ``policies``:
    purpose -> the inline policy document of its role (the program under mocks); ``passed``: what earlier
    jobs hand on (default :func:`passed_values`). A missing setting or an unknown subcommand is a denial
    too (``action`` ``setting`` / ``unknown command``), so nothing a job runs goes unchecked."""
    from iam_eval import evaluate

    if not job.logs_in:
        return JobAccess(job.key, None, (), (), "logs in to no cloud")
    base = job_variables(job, variables, "sagemaker", outputs["model_package_group_name"])
    passed = passed_values(variables, outputs) if passed is None else passed
    purpose = purpose_of_role(outputs, aws_role_of(job, base, job.environ(base, passed)))
    if job.workflow == "infra.yml":
        infra = job.identity or ("infra-reader" if job.name == "preview" else "infra-deployer")
        return JobAccess(job.key, infra, (), (), "pulumi preview / up: the program's own resources (tests/infra)")
    requests, denials = [], []
    if job.system == "azure-devops" and purpose != job.identity:
        denials.append(Denial(job.key, str(job.identity), Request("sts:AssumeRoleWithWebIdentity", str(purpose)),
                              f"its service connection is detops-sagemaker-{job.identity} but its variable groups' AWS_ROLE_ARN is the {purpose} role"))
    for step, args in commands(job, "sagemaker"):
        env = {**_login_env(job, base), **job.environ(base, passed, step)}
        maker = AWS_REQUESTS.get(args[0])
        if maker is None:
            denials.append(Denial(job.key, str(purpose), Request("unknown command", args[0]), "no entry in AWS_REQUESTS"))
            continue
        try:
            made = maker(AwsJob(env, outputs["account_id"], outputs["kms_key_arn"], passed), args)
        except MissingSetting as e:
            denials.append(Denial(job.key, str(purpose), Request("setting", args[0], {}, step.name), str(e)))
            continue
        for request in made:
            requests.append(request)
            context = {"aws:PrincipalArn": principal_arn(job, purpose, outputs), **request.context}  # a global key
            decision = evaluate([policies.get(str(purpose), {})], request.action, request.resource, context)
            if not decision.allowed:
                denials.append(Denial(job.key, str(purpose), request, decision.reason))
    return JobAccess(job.key, purpose, tuple(requests), tuple(denials))


# --- docs/cicd.md's table -----------------------------------------------------------------------------

DOCS_BEGIN = "<!-- job-access:begin (generated by scripts/job_access.py from the workflows and the programs) -->"
DOCS_END = "<!-- job-access:end -->"


def _short(resource: str) -> str:
    """An ARN / ARM id shortened for the table: ``training-job/detops-dev-bccd-...``, ``runs bucket/...``."""
    if resource.startswith("arn:aws:s3:::"):
        return resource.removeprefix("arn:aws:s3:::").split("/", 1)[0].rsplit("-", 1)[-1] + " bucket"
    if resource.startswith("arn:aws:"):
        tail = resource.split(":", 5)[-1]
        return tail.split("/", 1)[0] if "/" in tail else tail
    if "/providers/" in resource:
        return "/".join(resource.rsplit("/providers/", 1)[-1].split("/")[1::2][-2:])
    return resource


def table(accesses: list[JobAccess], heading: str) -> str:
    """A markdown table: job, identity, and each action its commands need with where (deduplicated, sorted)."""
    lines = [f"#### {heading}", "", "| job | identity | needs (action on resource) |", "| --- | --- | --- |"]
    for a in accesses:
        needs = sorted({f"`{r.action}` {_short(r.resource)}" for r in a.requests})
        lines.append(f"| `{a.key.split(':', 1)[1]}` | {a.identity or '-'} | {', '.join(needs) or a.note} |")
    return "\n".join(lines) + "\n"


def replace_section(text: str, body: str) -> str:
    """``text`` with what lies between :data:`DOCS_BEGIN` and :data:`DOCS_END` replaced by ``body``.

    Raises:
        ValueError: the markers are missing (names them).
    """
    if DOCS_BEGIN not in text or DOCS_END not in text:
        raise ValueError(f"docs/cicd.md lacks the markers {DOCS_BEGIN!r} ... {DOCS_END!r}")
    head, rest = text.split(DOCS_BEGIN, 1)
    return head + DOCS_BEGIN + "\n" + body + DOCS_END + rest.split(DOCS_END, 1)[1]


class AwsStack:
    """One AWS stack of the program under Pulumi's mocks (tests/infra/infra_helpers.py): its outputs, its CI
    variables (``contract.ci_variables``) and each purpose's inline policy document (``<purpose>-access``)."""

    def __init__(self, name: str) -> None:
        import json

        from infra_helpers import run_cloud, stack_settings

        from detops import contract

        run = run_cloud("aws", stack_settings("aws", name))
        self.outputs = run.outputs
        self.variables = contract.ci_variables(run.outputs)
        self.policies = {r.name.removesuffix("-access").rsplit("-", 1)[-1]: json.loads(r.inputs["policy"])
                         for r in run.of_type("aws:iam/rolePolicy:RolePolicy")}

    def access(self, job: Any, policies: Mapping[str, Mapping[str, Any]] | None = None) -> JobAccess:
        return aws_access(job, self.outputs, self.variables, policies or self.policies)


#: The IAM Identity Center permission-set role a person approves with (its policy: the stack's approver policy;
#: docs/contracts.md): ``aws:PrincipalArn`` of their session.
PERSON_APPROVER_ROLE = "role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_DetopsApprover_0123456789abcdef"


def principal_arn(job: Any, purpose: Any, outputs: Mapping[str, Any]) -> str:
    """``aws:PrincipalArn`` of ``job``'s requests: a person's Identity Center role for a person's step, else the
    role of the job's purpose (stack output ``<purpose>_role_arn``)."""
    if job.system == "person":
        return f"arn:aws:iam::{outputs['account_id']}:{PERSON_APPROVER_ROLE}"
    return str(outputs.get(f"{purpose}_role_arn", ""))


def person_jobs() -> list[Any]:
    """The steps a person runs between the workflows (docs/cicd.md, "approve"), as jobs: ``detops approve``
    with the variables of the ``model-approval`` environment (``detops settings ci-variables --environment
    model-approval``, all of them exported) and its identity."""
    import ci_jobs

    script = '.venv/bin/detops approve "${DETOPS_MODEL_NAME}" 3 --comment "metrics and gate reviewed"'
    return [ci_jobs.Job("person", "docs/cicd.md", "approve", "model-approval", None, {}, (), {},
                        (ci_jobs.Step("approve", script),), True)]


def stack_of(job: Any) -> str:
    """Production jobs deploy from the prod stack (its CI_ENVIRONMENTS has ``production``); the rest, dev."""
    return "prod" if "production" in (job.environment or "") else "dev"


def docs_body(aws: Mapping[str, AwsStack], azure: Mapping[str, AzureStack]) -> str:
    """The generated part of docs/cicd.md: per cloud and CI system, every job with its identity and needs."""
    import ci_jobs

    parts = []
    for stacks, title in ((aws, "SageMaker (the AWS program's dev and prod stacks)"),
                          (azure, "Azure ML (the Azure program's dev and prod stacks)")):
        for system, who in (("github", "GitHub Actions"), ("azure-devops", "Azure DevOps"), ("person", "A person")):
            accesses = [stacks[stack_of(j)].access(j) for j in ci_jobs.jobs() + person_jobs() if j.system == system]
            parts.append(table(accesses, f"{who}, {title}"))
    return "\n".join(parts)


# --- Azure ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AzureJob:
    """What a command of one job sees on an Azure stack: the job's environment, the stack's ARM ids (from its
    outputs: subscription, resource group, storage account, workspace, registry) and what earlier jobs
    passed on. Requests are RBAC ``(action, scope)`` pairs from tests/infra/azure_rbac.py's table; a request
    made by another identity than the job's (the compute cluster's or the endpoint's managed identity, which
    Azure ML uses for a job's or a deployment's data access) names it in ``context["principal"]``."""

    env: Mapping[str, str]
    outputs: Mapping[str, Any]
    passed: Mapping[str, str] = field(default_factory=dict)

    def need(self, name: str, what: str) -> str:
        return need(self.env, name, what)

    @property
    def group(self) -> str:
        o = self.outputs
        return f"/subscriptions/{o['subscription_id']}/resourceGroups/{o['resource_group_name']}"

    def container(self, name: str) -> str:
        return (f"{self.group}/providers/Microsoft.Storage/storageAccounts/{self.outputs['storage_account_name']}"
                f"/blobServices/default/containers/{name}")

    @property
    def workspace(self) -> str:
        ws = self.need("AZUREML_WORKSPACE", "every Azure ML call")
        return f"{self.group}/providers/Microsoft.MachineLearningServices/workspaces/{ws}"

    def op(self, operation: str, why: str, principal: str | None = None, **resource: str) -> Request:
        from azure_rbac import required

        action, scope = required(operation, **resource)
        return Request(action, scope, {"principal": principal} if principal else {}, why)

    def blob(self, operation: str, uri: str, key: str, why: str, principal: str | None = None) -> Request:
        """A blob call on ``uri`` (``az://<container>/<path>`` or the runs datastore's ``azureml://`` path)."""
        if uri.startswith("azureml://"):
            container = self.need("DETOPS_AML_DATASTORE_CONTAINER", "opening the runs datastore without the workspace")
            path = uri.split("/paths/", 1)[1]
        else:
            container, _, path = uri.removeprefix("az://").partition("/")
        return self.op(operation, why, principal, container=self.container(container), path=f"{path.strip('/')}/{key}".strip("/"))

    @property
    def run_dir(self) -> str:
        return self.env.get("RUN_DIR") or self.passed.get("AZURE_RUN_DIR", "")

    @property
    def model(self) -> str:
        return self.need("DETOPS_MODEL_NAME", "the model registry")

    def approvals(self, operation: str, why: str) -> Request:
        return self.blob(operation, self.env.get("DETOPS_APPROVALS_URI") or "az://approvals", f"{self.model}/{MODEL_VERSION}/record.json", why)


def _az_submit(job: AzureJob) -> list[Request]:
    why = "submit (training/backends/azureml.py: the config upload, the pipeline job)"
    run = job.passed["AZURE_RUN_DIR"]
    cluster = job.env.get("DETOPS_AML_COMPUTE") or "gpu-cluster"
    compute = f"compute:{cluster}"
    datasets = job.env.get("DETOPS_DATASETS", "")
    steps = "the job's steps (as the cluster's managed identity: ManagedIdentityConfiguration)"
    out = [job.op("compute.get", why, name=cluster, workspace=job.workspace),
           job.blob("blob.write", run, "inputs/bccd.yaml", why),
           job.op("jobs.create_or_update", why, name="detops-job", workspace=job.workspace),
           job.blob("blob.write", run, "tf_records/train-00000-of-00001.tfrecord", steps, compute)]
    if datasets.startswith("az://"):
        out.append(job.blob("blob.read", datasets, "bccd/BCCD/train/_annotations.coco.json", steps, compute))
    return out


def _az_deploy(job: AzureJob, args: list[str]) -> list[Request]:
    why = "deploy (deployment/targets/azureml.py, deployment/registry/azureml.py)"
    endpoint = _endpoint(job, args) or "detops"  # type: ignore[arg-type]
    artifact = job.passed["AZURE_RUN_DIR"]
    serving = "serving"
    return [job.op("models.get", why, name=job.model, version=MODEL_VERSION, workspace=job.workspace),
            job.approvals("blob.read", why + ": the approval records"),
            job.blob("blob.read", artifact, "export/model.tflite", why + ": the artifact digest"),
            job.op("online_endpoints.get", why, endpoint=endpoint, workspace=job.workspace),
            job.op("online_endpoints.begin_create_or_update", why, endpoint=endpoint, workspace=job.workspace),
            job.op("online_deployments.begin_create_or_update", why, endpoint=endpoint, deployment="blue", workspace=job.workspace),
            job.blob("blob.read", artifact, "export/model.tflite", "the deployment pulls the model (the endpoint's identity)", serving)]


def _az_registry_reads(job: AzureJob, why: str) -> list[Request]:
    return [job.op("models.list", why, workspace=job.workspace),
            job.op("models.get", why, name=job.model, version=MODEL_VERSION, workspace=job.workspace),
            job.approvals("blob.read", why + ": the approval records")]


def _az_images(job: AzureJob) -> list[Request]:
    why = "scripts/images.sh (az acr login, push training and serving images)"
    registry = job.need("DETOPS_TRAINING_REPOSITORY", why).split(".", 1)[0]
    scope = f"{job.group}/providers/Microsoft.ContainerRegistry/registries/{registry}"
    return [job.op("acr.push", why, registry=scope), job.op("acr.pull", why, registry=scope)]


def _az_endpoint(job: AzureJob, args: list[str]) -> str:
    return _endpoint(job, args) or "detops"  # type: ignore[arg-type]


#: ``detops`` subcommand -> its requests on Azure (``--backend/--target azureml``, ``DETOPS_REGISTRY=azureml``).
AZURE_REQUESTS: dict[str, Callable[[AzureJob, list[str]], list[Request]]] = {
    "submit": lambda j, a: _az_submit(j),
    "wait": lambda j, a: [j.op("jobs.get", "wait (training/backends/azureml.py)", name="detops-job", workspace=j.workspace)],
    "cancel": lambda j, a: [j.op("jobs.begin_cancel", "cancel", name="detops-job", workspace=j.workspace)],
    "evaluate": lambda j, a: [j.blob("blob.read", j.run_dir, "export/saved_model/saved_model.pb", "evaluate"),
                              j.blob("blob.write", j.run_dir, "metrics/test.json", "evaluate")],
    "gate": lambda j, a: [j.blob("blob.read", j.run_dir, "metrics/test.json", "gate"), *_az_registry_reads(j, "gate")],
    "register": lambda j, a: [j.blob("blob.read", j.run_dir, "export/model.tflite", "register"),
                              j.blob("blob.write", j.run_dir, "export/detops-manifest.json", "register: the artifact manifest"),
                              *_az_registry_reads(j, "register"),
                              j.op("models.create_or_update", "register", name=j.model, version=MODEL_VERSION, workspace=j.workspace)],
    "models": lambda j, a: _az_registry_reads(j, "models list/show"),
    "approve": lambda j, a: [*_az_registry_reads(j, "approve"), j.approvals("blob.write", "approve: the decision record")],
    "promote": lambda j, a: [],  # runs only with DETOPS_PROMOTE_SOURCE_URI, which no stack here sets
    "deploy": _az_deploy,
    "smoke-test": lambda j, a: [j.op("online_endpoints.get_keys", "smoke-test (the endpoint key)", endpoint=_az_endpoint(j, a), workspace=j.workspace)],
    "rollback": lambda j, a: [j.op("online_endpoints.get", "rollback", endpoint=_az_endpoint(j, a), workspace=j.workspace),
                              j.op("online_endpoints.begin_create_or_update", "rollback: traffic back", endpoint=_az_endpoint(j, a), workspace=j.workspace)],
    "reviewer": lambda j, a: [], "images.sh": lambda j, a: _az_images(j),
}


class AzureStack:
    """One Azure stack of the program under Pulumi's mocks: outputs, CI variables and the RBAC model of its
    role assignments x Microsoft's built-in role definitions (tests/infra/azure_rbac.py)."""

    def __init__(self, name: str) -> None:
        import azure_rbac
        from infra_helpers import run_cloud, stack_settings

        from detops import contract

        run = run_cloud("azure", stack_settings("azure", name))
        self.outputs = run.outputs
        self.variables = contract.ci_variables(run.outputs)
        self.assignments = azure_rbac.assignments(run)
        self.rbac = azure_rbac.Rbac(self.assignments, azure_rbac.definitions())

    def without(self, principal: str, role: str, container: str | None = None) -> Any:
        """The stack's RBAC model less ``principal``'s ``role`` assignments (on ``container`` only, if given):
        a put-back break."""
        import azure_rbac

        kept = [a for a in self.assignments if not (a.principal == principal and a.role == role
                                                    and (container is None or a.scope.endswith(f"/containers/{container}")))]
        assert len(kept) < len(self.assignments), f"{principal} has no {role} assignment to remove"
        return azure_rbac.Rbac(kept, azure_rbac.definitions())

    def access(self, job: Any, rbac: Any = None) -> JobAccess:
        return azure_access(job, self.outputs, self.variables, rbac or self.rbac)


def azure_passed(variables: Any) -> dict[str, str]:
    """What the train job hands on, on Azure: the run folder on the runs datastore (training environment)."""
    training = variables.all_for("training")
    store = training.get("DETOPS_AML_DATASTORE", "workspaceblobstore")
    run = f"azureml://datastores/{store}/paths/{PROJECT}/runs/{RUN_ID}/"
    return {"AZURE_RUN_DIR": run, "RUN_DIR": run, "JOB": "detops-job", "MODEL_VERSION": MODEL_VERSION,
            "DETOPS_TRAINING_IMAGE": f"{training.get('DETOPS_TRAINING_REPOSITORY', '')}@sha256:{'0' * 64}",
            "DETOPS_SERVING_IMAGE": f"{training.get('DETOPS_SERVING_REPOSITORY', '')}@sha256:{'1' * 64}"}


def purpose_of_client(outputs: Mapping[str, Any], client_id: str) -> str | None:
    """The purpose whose output ``<purpose>_client_id`` is ``client_id`` (not the serving identity)."""
    for key, value in outputs.items():
        if key.endswith("_client_id") and not key.startswith("serving") and value == client_id:
            return key.removesuffix("_client_id").replace("_", "-")
    return None


def azure_access(job: Any, outputs: Mapping[str, Any], variables: Any, rbac: Any) -> JobAccess:
    """Check one job's Azure requests against the role assignments of the identity it signs in as (and of the
    managed identities Azure ML uses for its data access), with :class:`azure_rbac.Rbac`.

    GitHub's azure/login step signs in as ``${{ vars.AZURE_CLIENT_ID }}`` (its environment's); Azure DevOps'
    cloud template as the service connection ``detops-azureml-<identity>``. A missing setting or an unknown
    subcommand is a denial too."""
    if not job.logs_in:
        return JobAccess(job.key, None, (), (), "logs in to no cloud")
    if job.workflow == "infra.yml":
        infra = job.identity or ("infra-reader" if job.name == "preview" else "infra-deployer")
        return JobAccess(job.key, infra, (), (), "pulumi preview / up: the program's own resources (tests/infra)")
    base = job_variables(job, variables, "azureml", "detops-detector")
    base["DETOPS_REGISTRY"] = "azureml"
    passed = azure_passed(variables)
    purpose = job.identity if job.system == "azure-devops" else purpose_of_client(outputs, base.get("AZURE_CLIENT_ID", ""))
    requests, denials = [], []
    for step, args in commands(job, "azureml"):
        maker = AZURE_REQUESTS.get(args[0])
        if maker is None:
            denials.append(Denial(job.key, str(purpose), Request("unknown command", args[0]), "no entry in AZURE_REQUESTS"))
            continue
        try:
            made = maker(AzureJob(job.environ(base, passed, step), outputs, passed), args)
        except MissingSetting as e:
            denials.append(Denial(job.key, str(purpose), Request("setting", args[0], {}, step.name), str(e)))
            continue
        for request in made:
            requests.append(request)
            who = request.context.get("principal") or str(purpose)
            decision = rbac.check(who, request.action, request.resource)
            if not decision.allowed:  # the reason's tail (its head repeats principal, action and scope)
                denials.append(Denial(job.key, who, request, decision.reason.rsplit(": ", 1)[-1]))
    return JobAccess(job.key, purpose, tuple(requests), tuple(denials))
