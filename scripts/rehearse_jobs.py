"""Rehearse the train and release workflows job by job, each job as its own identity, on AWS or Azure.

    python scripts/rehearse_jobs.py --work DIR [--cloud aws|azure] [--ci github|azure-devops] [--datasets DIR]
        [--trained DIR] [--keep-trained DIR] [--workflows DIR] [--without PRINCIPAL:ROLE[:CONTAINER]]

(``bash scripts/rehearse.sh sagemaker`` / ``azureml`` call it.) The jobs, their environments and their order come
from the workflow files (tests/ci/ci_jobs.py); what differs per cloud is an adapter (:class:`AwsCloud`, below;
``AzureCloud`` in scripts/rehearse_azure.py, whose docstring says what stands in for Azure). ``--ci azure-devops``
rehearses .azure-pipelines/train.yml and release.yml instead: each job sees every variable of its linked variable
groups (:func:`ado_environ`), signs in as its service connection's identity, and reads the output variables
(``##vso[task.setvariable ...;isOutput=true]``) of the jobs before it. On AWS, in this order:

1. :class:`iam_moto.EnforcingMotoServer` on 127.0.0.1: moto behind an authorizer that evaluates every request
   of an assumed-role session against that role's inline policies (tests/infra/iam_moto.py, iam_eval.py).
2. The AWS program (infra/aws) under Pulumi's mocks gives the stack outputs and the roles' inline policies
   (trainer, registrar, approver, deployer and the SageMaker execution role); :func:`iam_moto.load_stack`
   creates the buckets, the model package group and the roles in moto with the setup key and assumes each
   role through moto's STS (``AssumeRole``: moto does not check GitHub's OIDC token). The BCCD dataset is
   uploaded to the stack's data bucket with the setup key (a person's step in docs/infra.md).
3. Each GitHub job of train.yml, then release.yml, in file order (``ci_jobs.github_jobs``), runs its
   success-path ``run:`` scripts with bash in the repository root, with exactly the environment its workflow
   gives it (``Job.environ``: the names the workflow's, job's and step's ``env:`` map, ``${{ vars.X }}`` from
   ``detops settings ci-variables`` of the job's GitHub environment plus the variables a person sets by hand,
   docs/cicd.md: DETOPS_BACKEND, DETOPS_REGISTRY, DETOPS_MODEL_NAME), plus what the runner and the login
   action give: the role session's keys, AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, PATH, HOME, GITHUB_OUTPUT,
   GITHUB_ENV, RUNNER_TEMP, GITHUB_REPOSITORY, GITHUB_RUN_ID. Step outputs (GITHUB_OUTPUT) become the job's
   ``outputs:``, which later jobs read with ``${{ needs.X.outputs.y }}``; GITHUB_ENV lines reach later steps.
   Skipped: ``bash scripts/setup.sh`` (this checkout's .venv is used), ``uses:`` steps (the login action is
   replaced by the session keys), ``cancelled()`` steps, and the ``production`` job when the stack has no
   ``production`` environment (the dev stack has none).
4. Stand-ins on PATH for what cannot run here: ``gh`` (``gh api .../approvals`` prints GitHub's approvals
   JSON naming :data:`REVIEWER`), ``aws ecr get-login-password`` and ``docker`` (scripts/images.sh): moto does
   not serve ECR layer pushes, so the stand-ins record the ECR actions a push, a login and a tag lookup need
   (tests/infra/test_job_permissions.py lists them) and :func:`check_ecr` evaluates them against the images
   job's role with ``iam_eval`` instead; the stand-in docker reports ``sha256:<hash of the tag>`` digests,
   remembers pushed tags, and the images job hands those digests over as its outputs.
5. Between the train job and the wait job, the SageMaker training container's steps (``detops prepare`` with
   :data:`TINY`, ``train``, ``evaluate``, ``export``, ``finish``) run here as the SageMaker execution role (who
   runs them on AWS), since moto runs no container; ``--trained DIR`` copies a run trained by an earlier
   rehearsal instead (:func:`reuse_trained`), ``--keep-trained DIR`` saves this one.
6. Between the workflows, a person's approval: ``detops approve`` as a person's IAM Identity Center session
   (a role ``AWSReservedSSO_DetopsApprover_<hash>`` with the approver policy, session name = the user; the
   approver role's CI session is refused first), with the variables of environment ``model-approval`` (the
   acting identity is the STS caller, so ``--by`` and ``DETOPS_IDENTITY=declared`` are refused on this registry). The release's ``workflow_dispatch`` input
   ``version`` is the approved version.
7. The smoke test: moto's sagemaker-runtime ``InvokeEndpoint`` returns canned answers
   (``/moto-api/static/sagemaker/endpoint-results``); the rehearsal queues a detection answer naming the version
   it deployed. What this cannot show: no serving container runs, so nothing proves the image loads the model
   or answers with that version; only that the smoke test's call is allowed to the deployer and that the
   smoke test checks the version that answers.
8. A rollback: a second version (train.yml again, its container steps copying the first run's trained files;
   the approval; then release.yml)
   whose smoke test is answered by the previous version (as when SageMaker keeps the old variant serving)
   fails its smoke test; the job's ``failure()`` step rolls the endpoint back as the deployer.

Any AccessDenied of the enforcing server ends the rehearsal with ``REHEARSAL FAILED: job <key> as <purpose>:
<action> on <resource> denied`` (from the server's decisions, ``enforcer.calls``); any other failing step with
``REHEARSAL FAILED: job <key> as <purpose>: step '<name>' exited <code>``. Exit code 0 only when every job
behaved as the workflows expect, including the rolled-back release.

Injection points for tests (fast breaks): :func:`rehearse` takes the parsed workflows and the policy documents,
and ``until`` (a job key after which it stops).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "ci"), str(REPO / "tests" / "infra"), str(REPO / "tests"), str(REPO), str(REPO / "scripts")]

sys.modules.setdefault("rehearse_jobs", sys.modules[__name__])  # one module when run as a script (rehearse_azure imports it)
import ci_jobs  # noqa: E402
import iam_moto  # noqa: E402
from cicd_helpers import AZURE_DIR, GITHUB_DIR, load_yaml  # noqa: E402

WORKFLOWS = ("train.yml", "release.yml")
#: Set by hand in GitHub (docs/cicd.md "Set by hand"): the backend, the registry, the model name (on AWS the
#: model package group the stack creates, which the roles are scoped to).
HAND_SET = ("DETOPS_BACKEND", "DETOPS_REGISTRY", "DETOPS_MODEL_NAME")
REVIEWER = "reviewer-alice"
#: A tiny run (as rehearse.sh's ``tiny`` array): the container's steps learn nothing, quickly.
TINY = ["--set", "train.steps=2", "--set", "train.image_size=64", "--set", "train.batch_size=2",
        "--set", "export.calibration_steps=2",
        "--set", "train.overrides.task.model.detection_generator.pre_nms_score_threshold=0.005",
        "--set", "gate.min_ap50=0", "--set", "gate.min_class_ap50=0"]
CONFIG = "configs/bccd.yaml"
SKIPPED_SCRIPTS = ("bash scripts/setup.sh",)
ECR_PUSH = ("ecr:BatchCheckLayerAvailability", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart",
            "ecr:CompleteLayerUpload", "ecr:PutImage")
_EXPR = re.compile(r"^\$\{\{\s*(.*?)\s*\}\}$")
#: Azure DevOps: a runtime expression naming another job's output variable (``$[ dependencies.Submit.outputs
#: ['Submit.cloud.job'] ]``, ``$[ stageDependencies.Images.Build.outputs['cloud.servingImage'] ]``), a template
#: parameter (``${{ parameters.version }}``) and the logging command that sets an output variable.
_ADO_OUTPUT = re.compile(r"^\$\[\s*(stageDependencies|dependencies)\.([A-Za-z0-9_]+)(?:\.([A-Za-z0-9_]+))?"
                         r"\.outputs\['([^']+)'\]\s*\]$")
_ADO_PARAMETER = re.compile(r"\$\{\{\s*parameters\.([A-Za-z0-9_]+)\s*\}\}")
_ADO_SETVARIABLE = re.compile(r"^##vso\[task\.setvariable variable=([^;\]]+);isOutput=true\](.*)$", re.M)
#: The job that submits the cloud job (its container steps run after it) and the release's staging job (its smoke
#: test is answered as the rehearsal says), per CI system.
TRAIN_JOB = {"github": "train", "azure-devops": "Train.Submit"}
STAGING_JOB = {"github": "staging", "azure-devops": "Staging.Deploy"}


class RehearsalFailed(Exception):
    """A job did not behave as its workflow expects; the message is the one line the rehearsal ends with."""


@dataclass
class Rehearsal:
    """The state of one rehearsal: the server, the stack, the sessions, and what jobs handed over."""

    work: Path
    url: str
    enforcer: Any
    outputs: dict[str, Any]
    policies: dict[str, dict[str, Any]]
    sessions: dict[str, dict[str, str]]
    stubs: Path
    trained: Path | None = None
    keep_trained: Path | None = None
    job_outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    #: what differs per cloud (:class:`AwsCloud`; scripts/rehearse_azure.py's ``AzureCloud``)
    cloud: Any = None

    def say(self, text: str) -> None:
        """Print one progress line (and keep it in :attr:`log`)."""
        self.log.append(text)
        print(text, flush=True)


# --- the stack on moto ----------------------------------------------------------------------------------


def stack_run() -> Any:
    """The AWS program's dev stack under Pulumi's mocks (tests/infra/infra_helpers.py)."""
    from infra_helpers import run_cloud, stack_settings

    return run_cloud("aws", stack_settings("aws", "dev"))


def start_server() -> tuple[Any, str]:
    """An :class:`iam_moto.EnforcingMotoServer` on a free port of 127.0.0.1; returns it and its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = iam_moto.EnforcingMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server, f"http://127.0.0.1:{port}"


def setup_session(outputs: Mapping[str, Any]) -> Any:
    """A boto3 session with the setup key (requests the enforcer passes unchecked: what `pulumi up` and a person do)."""
    import boto3

    return boto3.session.Session(aws_access_key_id="setup", aws_secret_access_key="setup", region_name=outputs["region"])


def upload_datasets(r: Rehearsal, local: Path) -> None:
    """Upload the BCCD dataset (``local``/bccd/BCCD) to the stack's data bucket with the setup key."""
    env = {**os.environ, **_aws_env(r, None)}
    target = f"s3://{r.outputs['s3_data_bucket']}/bccd/BCCD"  # the stack's DETOPS_DATASETS
    code = "import sys; from training import storage; storage.upload_dir(sys.argv[1], sys.argv[2])"
    subprocess.run([sys.executable, "-c", code, str(local / "bccd" / "BCCD"), target], check=True, env=env, cwd=REPO)
    r.say(f"dataset uploaded to {target} (setup key)")


# --- variables and environments --------------------------------------------------------------------------


def variables_of(r: Rehearsal, environment: str | None) -> dict[str, str]:
    """The GitHub variables a job of ``environment`` reads: ``detops settings ci-variables`` (repository + that
    environment's) and the hand-set ones (:data:`HAND_SET`)."""
    from detops.contract import ci_variables

    found = dict(ci_variables(r.outputs).all_for(environment))
    return {**r.cloud.hand_set(), **found}


def _aws_env(r: Rehearsal, purpose: str | None) -> dict[str, str]:
    """What the AWS login action (or the container's role) gives: the session keys, the endpoint, the region."""
    creds = r.sessions[purpose] if purpose else {"AccessKeyId": "setup", "SecretAccessKey": "setup", "SessionToken": ""}
    env = {"AWS_ENDPOINT_URL": r.url, "AWS_DEFAULT_REGION": r.outputs["region"], "AWS_REGION": r.outputs["region"],
           "AWS_ACCESS_KEY_ID": creds["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": creds["SecretAccessKey"]}
    if creds.get("SessionToken"):
        env["AWS_SESSION_TOKEN"] = creds["SessionToken"]
    return env


def runner_env(r: Rehearsal, job_dir: Path) -> dict[str, str]:
    """What GitHub's runner gives every step besides ``env:`` (the default variables the scripts read)."""
    return {"PATH": f"{r.stubs}:{REPO / '.venv' / 'bin'}:/usr/bin:/bin", "HOME": str(r.work / "home"),
            "GITHUB_OUTPUT": str(job_dir / "output"), "GITHUB_ENV": str(job_dir / "env"),
            "RUNNER_TEMP": str(job_dir / "tmp"), "GITHUB_REPOSITORY": "example/detops", "GITHUB_RUN_ID": "1",
            "DETOPS_HOME": str(r.work / "home" / ".detops")}


def expression(r: Rehearsal, raw: str, steps: Mapping[str, Mapping[str, str]]) -> str | None:
    """The value of a ``${{ ... }}`` expression the workflows use for handed-over values (``needs.X.outputs.y``,
    ``steps.X.outputs.y``, ``jobs.X.outputs.y``, ``inputs.x``, ``github.token``, ``a || b``); None when ``raw``
    is no such expression (``vars.X`` and literals are :meth:`ci_jobs.Job.environ`'s)."""
    m = _EXPR.match(str(raw))
    if not m or m.group(1).startswith("vars."):
        return None
    for alternative in (a.strip() for a in m.group(1).split("||")):
        parts = alternative.split(".")
        value = ""
        if parts[0] == "needs" and len(parts) == 4:
            value = r.job_outputs.get(parts[1], {}).get(parts[3], "")
        elif parts[0] in ("steps", "jobs") and len(parts) == 4:
            value = (steps if parts[0] == "steps" else r.job_outputs).get(parts[1], {}).get(parts[3], "")
        elif parts[0] == "inputs":
            value = r.inputs.get(parts[1], "")
        elif alternative == "github.token":
            value = "rehearsal-token"
        if value:
            return value
    return ""


def step_env(r: Rehearsal, job: ci_jobs.Job, step: ci_jobs.Step, purpose: str | None, job_dir: Path,
             steps: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """The whole environment of one step: ``Job.environ`` (exactly the mapped names), the GITHUB_ENV lines of
    earlier steps, the runner's variables and the login's session."""
    if job.system == "azure-devops":
        env = ado_environ(r, job)
    else:
        raw = {**job.env, **step.env}
        passed = {name: v for name, value in raw.items() if (v := expression(r, value, steps)) is not None}
        env = job.environ(variables_of(r, job.environment), passed, step)
    env.update(_read_pairs(job_dir / "env"))
    env.update(runner_env(r, job_dir))
    if purpose:
        env.update(r.cloud.login(purpose))
    return env


def ado_environ(r: Rehearsal, job: ci_jobs.Job) -> dict[str, str]:
    """What an Azure DevOps job's scripts see: every variable of its linked groups (``detops-common``: the
    repository-level CI variables; ``detops-<environment>``: that environment's) and the hand-set ones
    (:func:`job_access.job_variables`), its inline variables with ``$[ ... ]`` output references and
    ``${{ parameters.x }}`` resolved, and the agent's ``AGENT_TEMPDIRECTORY``."""
    from job_access import job_variables

    from detops.contract import ci_variables

    variables = {**r.cloud.hand_set(), **job_variables(job, ci_variables(r.outputs), r.cloud.name, r.cloud.model_name)}
    passed = {}
    for name, value in job.variables.items():
        m = _ADO_OUTPUT.match(str(value))
        if m:
            kind, first, second, output = m.groups()
            key = f"{first}.{second}" if kind == "stageDependencies" else f"{job.name.split('.')[0]}.{first}"
            passed[name] = r.job_outputs.get(key, {}).get(output, "")
    env = job.environ(variables, passed)
    env = {k: _ADO_PARAMETER.sub(lambda m: ado_parameter(r, m.group(1)), v) for k, v in env.items()}
    # the agent's variables the cloud templates read; `idToken`: the service connection's OIDC token
    # (addSpnToEnvironment), which the AWS template hands to the SDK as a web identity (the rehearsal's role
    # session keys, given by the login, come first in boto3's chain: moto checks no OIDC token)
    (r.work / "agent-tmp").mkdir(exist_ok=True)
    return {**env, "AGENT_TEMPDIRECTORY": str(r.work / "agent-tmp"), "BUILD_BUILDID": "1", "idToken": "rehearsal-oidc-token"}


def ado_script(r: Rehearsal, script: str) -> str:
    """What the agent runs for a cloud step: the ``inlineScript`` of templates/cloud-<backend>.yml's first step
    (``set -euo pipefail``; on AWS also the service connection's OIDC token as the web identity of the job's role)
    with the job's ``script`` parameter in it, every ``${{ parameters.x }}`` resolved (:func:`ado_parameter`)."""
    template = load_yaml(AZURE_DIR / "templates" / f"cloud-{r.cloud.name}.yml")
    inline = template["steps"][0]["inputs"]["inlineScript"]
    resolve = lambda text: _ADO_PARAMETER.sub(lambda m: ado_parameter(r, m.group(1)), text)  # noqa: E731
    return resolve(inline.replace("${{ parameters.script }}", resolve(script)))


def ado_parameter(r: Rehearsal, name: str) -> str:
    """A pipeline run parameter: the backend, the release's ``version`` (:attr:`Rehearsal.inputs`), ``steps`` 0."""
    return {"backend": r.cloud.name, "steps": "0", **r.inputs}.get(name, "")


def _read_pairs(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


# --- running a job -----------------------------------------------------------------------------------------


def denial(r: Rehearsal, since: int) -> str | None:
    """``<action> on <resource> denied`` for the first request the enforcer denied after decision number
    ``since`` (a request it cannot map: its reason), or None."""
    denied = next((c for c in r.enforcer.calls[since:] if not c.allowed), None)
    if denied is None:
        return None
    if denied.action == "unmapped":
        return f"request denied, {denied.reason}"
    return f"{denied.action} on {denied.resource} denied"


def checkout(r: Rehearsal) -> Path:
    """The job's working copy: a folder of links to the repository's entries (``.git``, ``.venv``, ``configs``,
    ``scripts``, ...), so what a script writes in its working directory (``submit.log``, ``images.env``) stays in
    this rehearsal, as on a runner's fresh checkout, and rehearsals side by side do not read each other's."""
    folder = r.work / "checkout"
    if not folder.exists():
        folder.mkdir(parents=True)
        for entry in REPO.iterdir():
            if entry.name not in ("submit.log", "images.env", "prod-version.txt"):
                (folder / entry.name).symlink_to(entry)
    return folder


def run_script(r: Rehearsal, job: ci_jobs.Job, step: ci_jobs.Step, env: dict[str, str], log: Path) -> int:
    """Run one ``run:`` script with bash (``-eo pipefail``, GitHub's ``shell: bash``) in the job's working copy
    (:func:`checkout`)."""
    with (log.parent / "environ").open("a") as names:  # which names the step saw (the values stay here)
        names.write(json.dumps({"step": step.name, "names": sorted(env)}) + "\n")
    with log.open("a") as out:
        out.write(f"\n== {job.key}: {step.name}\n")
        out.flush()
        done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step.script], cwd=checkout(r),
                              env=env, stdout=out, stderr=subprocess.STDOUT, check=False, timeout=3600)
    return done.returncode


def run_job(r: Rehearsal, job: ci_jobs.Job) -> str | None:
    """Run ``job``'s success-path steps as its identity, then its ``failure()`` steps if one failed; record its
    outputs. Returns None when the success path passed, else which step failed (``'<name>' exited <code>``).

    Raises:
        RehearsalFailed: a request was denied (names the job, its purpose, the action and the resource), or a
            failure step failed too.
    """
    purpose = ci_jobs.identity(job, r.outputs)
    done = len(list((r.work / "jobs").glob("*"))) if (r.work / "jobs").exists() else 0
    job_dir = r.work / "jobs" / f"{done + 1:02d}-{job.key.replace(':', '_').replace('/', '_')}"  # a fresh runner
    (job_dir / "tmp").mkdir(parents=True, exist_ok=True)
    r.say(f"== job {job.key} as {purpose} (environment {ci_environment(job)})")
    steps: dict[str, dict[str, str]] = {}
    failed = _run_steps(r, job, purpose, job_dir, steps, "success")
    if failed:
        r.say(f"   step {failed}: running the job's failure() steps")
        if _run_steps(r, job, purpose, job_dir, steps, "failure"):
            raise RehearsalFailed(f"job {job.key} as {purpose}: its failure() steps failed too (log {job_dir}/log)")
    if job.system == "github":
        r.job_outputs[job.name] = {k: expression(r, v, steps) or "" for k, v in job.outputs.items()}
    return failed


def _run_steps(r: Rehearsal, job: ci_jobs.Job, purpose: str | None, job_dir: Path,
               steps: dict[str, dict[str, str]], when: str) -> str | None:
    """Run the steps of ``when``; stop at the first that fails and return its name (None: all passed)."""
    for step in (s for s in job.steps if s.when == when):
        if step.script.strip() in SKIPPED_SCRIPTS:
            r.say(f"   skipped: {step.script.strip()} (this checkout's .venv stands in)")
            continue
        before, since = _read_pairs(job_dir / "output"), r.cloud.mark()
        if job.system == "azure-devops":  # the cloud template's inline script around the job's script
            step = dataclasses.replace(step, script=ado_script(r, step.script))
        logged = (job_dir / "log").stat().st_size if (job_dir / "log").exists() else 0
        code = run_script(r, job, step, step_env(r, job, step, purpose, job_dir, steps), job_dir / "log")
        if job.system == "azure-devops":  # ##vso[task.setvariable ...;isOutput=true]: the cloud step's outputs
            with (job_dir / "log").open(errors="replace") as f:
                f.seek(logged)
                for name, value in _ADO_SETVARIABLE.findall(f.read()):
                    r.job_outputs.setdefault(job.name, {}).update(
                        {f"cloud.{name}": value.strip(), f"{job.name.split('.')[-1]}.cloud.{name}": value.strip()})
        r.cloud.after_step(job, purpose)
        denied = r.cloud.denial(since)
        if denied:
            raise RehearsalFailed(f"job {job.key} as {purpose}: {denied}")
        if step.id:
            after = _read_pairs(job_dir / "output")
            steps[step.id] = {k: v for k, v in after.items() if before.get(k) != v}
        r.say(f"   {step.name or step.script.strip()[:60]}: exit {code}")
        if code:
            return f"'{step.name or step.script.strip()[:60]}' exited {code} (log {job_dir / 'log'})"
    return None


def must_pass(r: Rehearsal, job: ci_jobs.Job) -> None:
    """Run ``job``; raise :class:`RehearsalFailed` naming it and the failed step when it does not pass."""
    failed = run_job(r, job)
    if failed:
        raise RehearsalFailed(f"job {job.key} as {ci_jobs.identity(job, r.outputs)}: step {failed}")


# --- the stand-ins: gh, aws ecr, docker --------------------------------------------------------------------


def write_stubs(r: Rehearsal) -> None:
    """``gh``, ``aws`` and ``docker`` stand-ins in :attr:`Rehearsal.stubs` (module docstring, point 4). The ECR
    actions they would cause are appended to ``ecr-calls`` as ``<action> <resource>`` lines."""
    r.stubs.mkdir(parents=True, exist_ok=True)
    approvals = json.dumps([{"state": "approved", "comment": "rehearsal", "user": {"login": REVIEWER, "id": 2},
                             "environments": [{"id": 1, "name": "model-registration"}]}])
    calls, pushed = r.work / "ecr-calls", r.work / "ecr-pushed"
    _stub(r, "gh", f"""[ "$1" = api ] && case "$2" in */approvals) printf '%s\\n' '{approvals}'; exit 0;; esac
echo "gh stand-in: only 'gh api .../approvals' is rehearsed, got: $*" >&2; exit 2""")
    _stub(r, "aws", f"""[ "$1 $2" = "ecr get-login-password" ] || {{ echo "aws stand-in: only 'aws ecr get-login-password', got: $*" >&2; exit 2; }}
echo "ecr:GetAuthorizationToken *" >> {calls}; echo rehearsal-password""")
    _stub(r, "docker", _DOCKER.replace("@CALLS@", str(calls)).replace("@PUSHED@", str(pushed))
          .replace("@PY@", sys.executable))


_DOCKER = r'''repo_arn() { # <account>.dkr.ecr.<region>.amazonaws.com/<name>[:tag] -> the repository's ARN
  local ref="${1%%:*}" host="${1%%/*}"; local name="${ref#*/}"; local account="${host%%.*}" region
  region="$(echo "$host" | cut -d. -f4)"; echo "arn:aws:ecr:${region}:${account}:repository/${name}"
}
case "$1" in
  login) cat > /dev/null; exit 0 ;;
  buildx) ;;
  *) echo "docker stand-in: only login and buildx, got: $*" >&2; exit 2 ;;
esac
if [ "$2" = imagetools ]; then  # inspect REF --format ...: the digest when the tag was pushed
  echo "ecr:BatchGetImage $(repo_arn "$4")" >> "@CALLS@"
  line="$(grep -F "$4 " "@PUSHED@" 2>/dev/null | head -1)" || true
  [ -n "$line" ] || exit 1
  printf '{"digest": "%s"}\n' "${line##* }"; exit 0
fi
tag="" meta=""
while [ "$#" -gt 0 ]; do case "$1" in --tag) tag="$2"; shift ;; --metadata-file) meta="$2"; shift ;; esac; shift; done
digest="sha256:$(printf '%s' "$tag" | sha256sum | cut -d' ' -f1)"
for action in ecr:BatchCheckLayerAvailability ecr:InitiateLayerUpload ecr:UploadLayerPart ecr:CompleteLayerUpload ecr:PutImage; do
  echo "$action $(repo_arn "$tag")" >> "@CALLS@"
done
echo "$tag $digest" >> "@PUSHED@"
"@PY@" -c 'import json, sys; json.dump({"containerimage.digest": sys.argv[2]}, open(sys.argv[1], "w"))' "$meta" "$digest"
'''


def _stub(r: Rehearsal, name: str, body: str) -> None:
    path = r.stubs / name
    path.write_text("#!/usr/bin/env bash\n# rehearsal stand-in (scripts/rehearse_jobs.py)\n" + body + "\n")
    path.chmod(0o755)


def check_ecr(r: Rehearsal, job: ci_jobs.Job, purpose: str | None, job_dir: Path) -> None:
    """Evaluate the ECR calls the stand-ins recorded against ``purpose``'s policy with ``iam_eval`` (moto serves
    no layer push), then forget them. Raises :class:`RehearsalFailed` naming the first denied call."""
    from iam_eval import evaluate

    calls = r.work / "ecr-calls"
    if not calls.exists():
        return
    lines = calls.read_text().splitlines()
    calls.unlink()
    policy = [r.policies[purpose]] if purpose else []
    for action, resource in (line.split(" ", 1) for line in lines):
        if not evaluate(policy, action, resource).allowed:
            raise RehearsalFailed(f"job {job.key} as {purpose}: {action} on {resource} denied (iam_eval: moto serves no ECR push)")


# --- what runs between jobs ---------------------------------------------------------------------------------


def detops(r: Rehearsal, purpose: str | None, args: list[str], extra: Mapping[str, str] | None = None) -> str:
    """Run ``detops ARGS`` as ``purpose`` (a role session; None: the setup key) and return its stdout.

    Raises:
        RehearsalFailed: it was denied (the action and resource) or failed (its exit code and output's tail).
    """
    env = {**runner_env(r, r.work), **(extra or {}), **r.cloud.login(purpose)}
    since = r.cloud.mark()
    done = subprocess.run([str(REPO / ".venv" / "bin" / "detops"), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, check=False, timeout=3600)
    with (r.work / "between-jobs.log").open("a") as out:
        out.write(f"\n== detops {' '.join(args)} as {purpose}\n{done.stdout}\n{done.stderr}")
    denied = r.cloud.denial(since)
    if denied:
        raise RehearsalFailed(f"detops {args[0]} as {purpose}: {denied}")
    if done.returncode:
        raise RehearsalFailed(f"detops {args[0]} as {purpose} exited {done.returncode}: {(done.stdout + done.stderr)[-600:]}")
    return done.stdout


def submitted(r: Rehearsal, name: str) -> str:
    """What the submitting job handed over (``run_dir``, ``job``): GitHub's ``train`` job output, or the Azure
    DevOps ``Train.Submit`` job's output variable ``cloud.<name>``."""
    github, ado = r.job_outputs.get(TRAIN_JOB["github"], {}), r.job_outputs.get(TRAIN_JOB["azure-devops"], {})
    return github.get(name) or ado.get(f"cloud.{name}", "")


def container_steps(r: Rehearsal) -> None:
    """The SageMaker training container's steps, here, as the SageMaker execution role (module docstring, 5)."""
    run_dir = submitted(r, "run_dir")
    env = {"DETOPS_DATASETS": f"s3://{r.outputs['s3_data_bucket']}", "DETOPS_DATASTORE": f"s3://{r.outputs['s3_runs_bucket']}",
           "DETOPS_RUN_URL": run_dir, "DETOPS_RUN_ID": run_dir.rstrip("/").rsplit("/", 1)[-1]}
    if r.trained:
        reuse_trained(r, run_dir, env)
        return
    r.say(f"== the training container's steps on {run_dir} as sagemaker (moto runs no container)")
    detops(r, "sagemaker", ["prepare", CONFIG, "--run-dir", run_dir, *TINY], env)
    for stage in ("train", "evaluate", "export", "finish"):
        detops(r, "sagemaker", [stage, "--run-dir", run_dir], env)
        r.say(f"   detops {stage}: done")
    if r.keep_trained:
        _download(r, run_dir, r.keep_trained)
        r.say(f"   trained run saved to {r.keep_trained} (--trained reuses it)")


def _download(r: Rehearsal, url: str, local: Path) -> None:
    code = "import sys; from training import storage; storage.download_dir(sys.argv[1], sys.argv[2])"
    env = {**os.environ, **_aws_env(r, None)}
    subprocess.run([sys.executable, "-c", code, url, str(local)], check=True, env=env, cwd=REPO)
    (local / "run-url").write_text(url)


def reuse_trained(r: Rehearsal, run_dir: str, env: Mapping[str, str]) -> None:
    """Put a run trained by an earlier rehearsal (``--trained``) in ``run_dir``: its files, with the earlier run's
    URL and id replaced by this one's in run.json and the text files that name them, uploaded as the SageMaker
    execution role (who writes the run on AWS)."""
    old_url = (r.trained / "run-url").read_text().strip().rstrip("/")  # a run of either cloud (azureml:// ends in /)
    staged = r.work / "trained-copy"
    shutil.copytree(r.trained, staged, ignore=shutil.ignore_patterns("run-url"), dirs_exist_ok=True)
    old_id, new_id = old_url.rsplit("/", 1)[-1], run_dir.rstrip("/").rsplit("/", 1)[-1]
    for path in staged.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".yaml", ".txt", ".pbtxt"):
            text = path.read_text(errors="strict")
            path.write_text(text.replace(old_url, run_dir).replace(old_id, new_id))
    code = "import sys; from training import storage; storage.upload_dir(sys.argv[1], sys.argv[2])"
    full = {**os.environ, **runner_env(r, r.work), **env, **_aws_env(r, "sagemaker")}
    since = len(r.enforcer.calls)
    subprocess.run([sys.executable, "-c", code, str(staged), run_dir], check=False, env=full, cwd=REPO)
    denied = denial(r, since)
    if denied:
        raise RehearsalFailed(f"the training container as sagemaker: {denied}")
    r.say(f"== the training container's steps: a run trained earlier ({r.trained}) copied to {run_dir} as sagemaker")


def approve(r: Rehearsal) -> str:
    """A person's step: the newest PendingManualApproval version approved by a person (the cloud's
    :meth:`AwsCloud.approve`) with the variables of environment ``model-approval``; returns the version."""
    env = variables_of(r, "model-approval")
    name = r.cloud.model_name
    listed = json.loads(detops(r, r.cloud.person, ["models", "list", "--name", name, "--status",
                                                   "PendingManualApproval", "--json"], env))
    if not listed:
        raise RehearsalFailed("job register left no PendingManualApproval version")
    version = max((v["version"] for v in listed), key=int)
    r.cloud.approve(["approve", name, version, "--comment", "rehearsal: metrics reviewed"], env, version)
    return version


def queue_answer(r: Rehearsal, version: str) -> None:
    """Queue the answer moto's ``InvokeEndpoint`` gives next (a detection naming model ``version``; module
    docstring, 7: no container serves it). moto keeps the first answer per endpoint and request body, so a
    later smoke test with the same image gets the first version's answer, as from an old variant still serving."""
    body = {"model": {"name": r.outputs["model_package_group_name"], "version": version},
            "predictions": [{"num_detections": 1, "detections": [{"label": "RBC", "score": 0.9, "box": [0, 0, 10, 10]}]}]}
    results = {"account_id": iam_moto.ACCOUNT, "region": r.outputs["region"],
               "results": [{"Body": json.dumps(body), "ContentType": "application/json"}]}
    request = urllib.request.Request(f"{r.url}/moto-api/static/sagemaker/endpoint-results", method="POST",
                                     data=json.dumps(results).encode(), headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).close()


def serving(r: Rehearsal, endpoint: str) -> str:
    """The model version endpoint ``endpoint``'s current config names (its ``detops:model_version`` tag; setup key)."""
    sm = setup_session(r.outputs).client("sagemaker", endpoint_url=r.url)
    config = sm.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]
    arn = sm.describe_endpoint_config(EndpointConfigName=config)["EndpointConfigArn"]
    return {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=arn)["Tags"]}["detops:model_version"]


class AwsCloud:
    """What the rehearsal does on AWS (module docstring): the role sessions' keys as the login, the enforcing
    server's decisions, the ECR stand-ins checked with ``iam_eval``, the SageMaker container's steps, moto's
    canned endpoint answers."""

    name = "sagemaker"
    identity_word = "role"

    def __init__(self, r: Rehearsal) -> None:
        self.r = r

    @property
    def model_name(self) -> str:
        """The model package group the stack creates (the roles are scoped to it)."""
        return self.r.outputs["model_package_group_name"]

    def hand_set(self) -> dict[str, str]:
        return {"DETOPS_BACKEND": "sagemaker", "DETOPS_REGISTRY": "sagemaker", "DETOPS_MODEL_NAME": self.model_name}

    def login(self, purpose: str | None) -> dict[str, str]:
        return _aws_env(self.r, purpose)

    def mark(self) -> int:
        return len(self.r.enforcer.calls)

    def denial(self, since: int) -> str | None:
        return denial(self.r, since)

    def after_step(self, job: ci_jobs.Job, purpose: str | None) -> None:
        check_ecr(self.r, job, purpose, self.r.work)

    def container_steps(self) -> None:
        container_steps(self.r)

    #: who lists the versions to approve: a person's IAM Identity Center session (:func:`iam_moto.add_sso_approver`)
    person = "person"

    def approve(self, args: list[str], env: Mapping[str, str], version: str) -> None:
        """``detops approve`` as the stack's approver role (a CI role session), which must be refused, then as a
        person's Identity Center session (the approver policy, session name = the user): on AWS only a person
        approves (docs/contracts.md)."""
        r = self.r
        try:
            detops(r, "approver", args, env)
        except RehearsalFailed as e:
            if "not a person's session" not in str(e):
                raise
        else:
            raise RehearsalFailed(f"the approver role's CI session approved version {version}: a person must")
        detops(r, "person", args, env)
        r.say(f"== {iam_moto.SSO_APPROVER_USER} (an Identity Center session) approved version {version}; the approver "
              "role's CI session was refused")

    def answer(self, version: str) -> None:
        queue_answer(self.r, version)

    def serving(self, endpoint: str) -> str:
        return serving(self.r, endpoint)


# --- the whole rehearsal -------------------------------------------------------------------------------------


def workflow_jobs(docs: Mapping[str, dict[str, Any]], name: str, system: str = "github") -> list[ci_jobs.Job]:
    """The jobs of workflow ``name`` from ``docs`` (parsed YAML by file name): GitHub's, or the Azure DevOps
    pipeline of that name (``system="azure-devops"``)."""
    if system == "azure-devops":
        return ci_jobs.azure_jobs(name, docs[name])
    return ci_jobs.github_jobs(name, docs[name])


def ci_environment(job: ci_jobs.Job) -> str | None:
    """The CI environment whose variables and identity a job gets: GitHub's ``environment:``; Azure DevOps, the
    environment of its linked ``detops-<environment>`` group (``detops-staging``: staging)."""
    if job.system != "azure-devops":
        return job.environment
    from job_access import group_environment

    return next((e for g in job.groups if (e := group_environment(g))), None)


def images_outputs(r: Rehearsal) -> None:
    """The ``images`` job's outputs (images.yml's ``workflow_call`` outputs over its ``build`` job's)."""
    called = load_yaml(GITHUB_DIR / "images.yml")["on"]["workflow_call"]["outputs"]
    r.job_outputs["build"] = r.job_outputs.get("images/build", {})
    r.job_outputs["images"] = {k: expression(r, v["value"], {}) or "" for k, v in called.items()}


def train_workflow(r: Rehearsal, jobs: list[ci_jobs.Job], until: str | None) -> bool:
    """train.yml job by job, the container's steps after the ``train`` job; True when stopped at ``until``."""
    for job in jobs:
        if any(s.when == "success" and s.script for s in job.steps):
            must_pass(r, job)
        if job.name == "images/build":
            images_outputs(r)
        if job.key == until:
            return True
        if job.name == TRAIN_JOB[job.system]:
            r.cloud.container_steps()
    return False


def release_workflow(r: Rehearsal, jobs: list[ci_jobs.Job], version: str, answers: str) -> str | None:
    """release.yml for ``version`` (``workflow_dispatch`` input), the smoke test answered by ``answers``; returns
    the staging job's failed step (None: it passed). Jobs whose environment the stack lacks are skipped."""
    r.inputs = {"version": version}
    failed = None
    for job in jobs:
        environment = ci_environment(job)
        if environment and environment not in (r.outputs.get("CI_ENVIRONMENTS") or {}):
            r.say(f"== job {job.key}: skipped, the stack has no {environment!r} environment (CI_ENVIRONMENTS)")
            continue
        if job.name == STAGING_JOB[job.system]:
            r.cloud.answer(answers)
            failed = run_job(r, job)
            continue
        must_pass(r, job)
        if job.name == "images/build":
            images_outputs(r)
    return failed


def start(work: Path, policies: Mapping[str, dict[str, Any]] | None, datasets: Path | None) -> tuple[Rehearsal, Any]:
    """The server, the stack loaded into it (``policies`` by purpose, default the program's), the stand-ins."""
    import logging

    logging.getLogger("werkzeug").setLevel(logging.CRITICAL)  # a line per request, a traceback per 501 otherwise
    run = stack_run()
    server, url = start_server()
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=10).close()
    outputs = dict(run.outputs)
    chosen = dict(policies) if policies is not None else iam_moto.stack_policies(run)
    sessions = iam_moto.load_stack(url, outputs, chosen, outputs["region"], setup_session(outputs))
    sessions["person"] = iam_moto.add_sso_approver(setup_session(outputs), url, chosen["approver"])
    r = Rehearsal(work, url, server.enforcer, outputs, chosen, sessions, work / "bin")
    r.cloud = AwsCloud(r)
    (work / "home").mkdir(parents=True, exist_ok=True)
    write_stubs(r)
    upload_datasets(r, datasets or REPO.parent / "shared" / "datasets")
    return r, server


def rehearse(work: Path, *, docs: Mapping[str, dict[str, Any]] | None = None,
             policies: Mapping[str, dict[str, Any]] | None = None, datasets: Path | None = None,
             trained: Path | None = None, keep_trained: Path | None = None, until: str | None = None,
             cloud: str = "aws", rbac: Any = None, system: str = "github") -> Rehearsal:
    """The whole rehearsal (module docstring), or up to and including job ``until`` (a :attr:`ci_jobs.Job.key`).

    ``docs``: the parsed workflows by file name (default: read from .github/workflows); ``policies``: the inline
    policy document of each role by purpose (default: the AWS program's, :func:`iam_moto.stack_policies`).
    ``cloud``: ``aws`` (moto with IAM) or ``azure`` (Azurite behind Azure RBAC and the Azure ML workspace of
    tests/ci/aml_fake.py: scripts/rehearse_azure.py); ``rbac``: the Azure role assignments model to use
    (default the Azure program's; a put-back break passes one with an assignment removed). ``system``: the CI
    system whose files are rehearsed, ``github`` (.github/workflows) or ``azure-devops`` (.azure-pipelines: each
    job's linked variable groups, its service connection's identity, output variables between jobs).

    Raises:
        RehearsalFailed: the one line the rehearsal fails with (a denied call, a failed step, a wrong endpoint).
    """
    docs = docs or {name: load_yaml((AZURE_DIR if system == "azure-devops" else GITHUB_DIR) / name) for name in WORKFLOWS}
    work.mkdir(parents=True, exist_ok=True)
    if cloud == "azure":
        import rehearse_azure

        r, server = rehearse_azure.start(work, datasets, rbac)
    else:
        r, server = start(work, policies, datasets)
    r.trained, r.keep_trained = trained, keep_trained or work / "trained-run"
    try:
        train_jobs = workflow_jobs(docs, "train.yml", system)
        if train_workflow(r, train_jobs, until):
            return r
        r.trained = r.trained or r.keep_trained  # the second candidate's container steps copy this run
        release_and_roll_back(r, train_jobs, workflow_jobs(docs, "release.yml", system))
    finally:
        server.stop()
    return r


def release_and_roll_back(r: Rehearsal, train_jobs: list[ci_jobs.Job], release_jobs: list[ci_jobs.Job]) -> None:
    """Release the approved version (its smoke test passes), then a second version whose smoke test is answered
    by the first: the staging job's failure() step must roll the endpoint back to the first."""
    endpoint = r.outputs["CI_ENVIRONMENTS"]["staging"]["ENDPOINT_NAME"]
    staging = next(j for j in release_jobs if j.name == STAGING_JOB[j.system])
    first = approve(r)
    failed = release_workflow(r, release_jobs, first, answers=first)
    if failed:
        raise RehearsalFailed(f"job {staging.key} as {ci_jobs.identity(staging, r.outputs)}: step {failed}")
    if r.cloud.serving(endpoint) != first:
        raise RehearsalFailed(f"endpoint {endpoint} serves {r.cloud.serving(endpoint)}, not the released version {first}")
    r.say(f"== version {first} serves on {endpoint}; its smoke test saw it answer")
    r.say("== a second candidate: train.yml again (its container steps copy the first run's trained files)")
    train_workflow(r, train_jobs, None)
    second = approve(r)
    if release_workflow(r, release_jobs, second, answers=first) is None:
        raise RehearsalFailed(f"job {staging.key}: version {second}'s smoke test passed, though "
                              f"version {first} answered")
    if r.cloud.serving(endpoint) != first:
        raise RehearsalFailed(f"endpoint {endpoint} serves {r.cloud.serving(endpoint)} after the rollback, not {first}")
    r.say(f"== version {second} failed its smoke test (version {first} answered) and was rolled back to {first}")
    ci = "" if staging.system == "github" else ", Azure DevOps"
    r.say(f"\nREHEARSAL PASSED ({r.cloud.name}{ci}, every job as its own {r.cloud.identity_word}): versions {first} and {second} registered "
          f"and approved; {first} deployed and smoke-tested; {second} failed its smoke test and was rolled back to {first}")


def main(argv: list[str] | None = None) -> int:
    """Command line (module docstring). Exit 0: passed; 1: ``REHEARSAL FAILED: ...`` on stderr."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--datasets", type=Path, default=None, help="local datasets folder (holds bccd/BCCD)")
    p.add_argument("--trained", type=Path, default=None, help="a run trained by an earlier rehearsal (--keep-trained)")
    p.add_argument("--keep-trained", type=Path, default=None, help="save this rehearsal's trained run here")
    p.add_argument("--cloud", choices=("aws", "azure"), default="aws")
    p.add_argument("--ci", choices=("github", "azure-devops"), default="github", help="whose workflow files")
    p.add_argument("--workflows", type=Path, default=None,
                   help="read train.yml and release.yml from this folder (a put-back break: an edited copy)")
    p.add_argument("--without", action="append", default=[], metavar="PRINCIPAL:ROLE[:CONTAINER]",
                   help="Azure: rehearse without this role assignment of the stack (a put-back break)")
    a = p.parse_args(argv)
    t0 = time.monotonic()
    docs = {name: load_yaml(a.workflows / name) for name in WORKFLOWS} if a.workflows else None
    rbac = None
    if a.without:
        import rehearse_azure

        rbac = rehearse_azure.stack_rbac()
        for spec in a.without:
            rbac = rbac.without(*spec.split(":", 2) if not spec.startswith("compute:") else
                                ["compute:" + spec.split(":")[1], *spec.split(":")[2:]])
    try:
        rehearse(a.work.resolve(), datasets=a.datasets, trained=a.trained, keep_trained=a.keep_trained, cloud=a.cloud,
                 system=a.ci, docs=docs, rbac=rbac)
    except RehearsalFailed as e:
        print(f"\nREHEARSAL FAILED: {e}", file=sys.stderr)
        return 1
    print(f"rehearsal wall time: {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
