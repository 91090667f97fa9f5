"""The Azure half of scripts/rehearse_jobs.py: train.yml and release.yml job by job, each job as its own Azure
identity (``python scripts/rehearse_jobs.py --cloud azure``; ``bash scripts/rehearse.sh azureml``).

What stands in for Azure, each call authorized as the identity making it with the Azure program's role
assignments x Microsoft's built-in role definitions (tests/infra/azure_rbac.py), all under Pulumi's mocks:

1. Storage: Azurite, behind one RBAC proxy per identity (tests/infra/azurite_rbac.py). A job's
   ``AZURE_STORAGE_CONNECTION_STRING`` is its identity's proxy (what ``azure/login`` gives a job: its
   identity's token); a refused call gets Azure's 403 ``AuthorizationPermissionMismatch``.
2. The workspace: tests/ci/aml_fake.py's ``MLClient`` (jobs, models, online endpoints and deployments,
   compute, datastores), kept in files so every ``detops`` process of every job sees one workspace, each
   call checked as the job's identity (a refused one is ARM's 403 ``AuthorizationFailed``).
   A deployment pulls the model's files as the endpoint's identity and checks their digest.
3. The Azure ML job's steps: the pipeline job the train job submitted is run here, step by step, with the
   commands and environment variables the job spec gives them, as the compute cluster's managed identity
   (``ManagedIdentityConfiguration``): inputs mounted = downloaded as that identity, the run folder's
   ``rw_mount`` = downloaded before and uploaded after each step as that identity. ``--trained`` copies a run
   trained by an earlier rehearsal (either cloud) instead of training.
4. ACR: ``az acr login`` and the image pushes of scripts/images.sh are recorded by stand-ins and checked against
   the images job's identity (AcrPush / AcrPull at the registry), as the AWS rehearsal checks ECR.
5. The endpoint's front door: a server on 127.0.0.1 that checks the endpoint key (``get_keys``) and answers
   with the version of the deployment taking the traffic (the serving container is not run here: that it serves
   the model is tests/cloud/test_containers.py's). For the rollback, the second release's answer comes from the
   colour that held the traffic before (as when the new deployment's container is not ready yet).

What this cannot show: ARM's HTTP surface and the SDK's retries, Entra's token exchange (the identity is
given, not federated: tests/infra checks the federated credentials), App Insights and the data collector.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import rehearse_jobs as rj

REPO = rj.REPO
SITE = REPO / "tests" / "ci" / "rehearsal_site"
MODEL_NAME = "bccd-detector"
#: The region's VM sizes and quota usages the workspace reports (azure-ai-ml ``VmSize`` / ``Usage`` REST names,
#: as :func:`training.cloud.quota.azureml_preflight` reads them): made up, with room for the job.
SIZES = [{"name": "Standard_NC4as_T4_v3", "family": "Standard NCASv3_T4 Family", "vCPUs": 4},
         {"name": "Standard_D4s_v5", "family": "Standard DSv5 Family", "vCPUs": 4}]
USAGES = [{"id": "/subscriptions/s/providers/Microsoft.MachineLearningServices/locations/westeurope/usages/lp",
           "name": {"value": "TotalLowPriorityCores", "localizedValue": "Total Regional Low-priority vCPUs"},
           "limit": 100, "currentValue": 0}]
#: Workspace calls whose refusal the code handles as documented, so the rehearsal reports it and goes on.
TOLERATED = {
    "compute.list_sizes": "the quota pre-flight warns 'not checked' (the stack's roles are scoped to the resource "
                          "group; the region's VM sizes and quotas are read at subscription level)",
    "compute.list_usage": "the quota pre-flight warns 'not checked' (the stack's roles are scoped to the resource "
                          "group; the region's quota usages are read at subscription level)",
}
_PUSH = {"ecr:BatchCheckLayerAvailability", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart",
         "ecr:CompleteLayerUpload", "ecr:PutImage"}


class AzureCloud:
    """What the rehearsal does on Azure (module docstring); the hooks :mod:`rehearse_jobs` calls."""

    name = "azureml"
    identity_word = "identity"
    model_name = MODEL_NAME

    def __init__(self, r: rj.Rehearsal, run: Any, rbac: Any, azurite_port: int) -> None:
        import azure_rbac
        from local_servers import AZURITE_KEY, connection_string

        self.r, self.rbac = r, rbac
        self.containers = azure_rbac.containers(run)
        self.setup_cs = connection_string(azurite_port)
        self.key = AZURITE_KEY
        self.state = r.work / "workspace"
        self.state.mkdir(parents=True, exist_ok=True)
        self.registry_id = run.of_type("azure-native:containerregistry:Registry")[0].id
        self.cluster = r.outputs["gpu_cluster_name"]
        self.proxies: dict[str, Any] = {}
        self.calls: list[Any] = []  # the proxies' decisions, in order
        self.recorded: list[str] = []  # the ACR stand-ins' decisions that were denials
        self.tolerated: set[str] = set()  # scopes of TOLERATED refusals already reported
        self._front = _front_door(self)
        self._world(run)

    # -- setup ---------------------------------------------------------------------------------------
    def _world(self, run: Any) -> None:
        import azure_rbac

        names = azure_rbac.principal_names(run)
        computes = {}
        for c in run.of_type("azure-native:machinelearningservices:Compute"):
            props = (c.inputs.get("properties") or {}).get("properties") or {}
            tier = "low_priority" if props.get("vmPriority") == "LowPriority" else "dedicated"
            computes[c.inputs["computeName"]] = {"size": props.get("vmSize"), "tier": tier, "location": c.inputs.get("location"),
                                                 "max_instances": int((props.get("scaleSettings") or {}).get("maxNodeCount", 1))}
        o = self.r.outputs
        world = {
            "subscription_id": o["subscription_id"], "resource_group": o["resource_group_name"],
            "workspace": o["workspace_name"],
            "workspace_id": run.of_type("azure-native:machinelearningservices:Workspace")[0].id,
            "storage_account_id": run.of_type("azure-native:storage:StorageAccount")[0].id,
            "account": o["storage_account_name"],
            "assignments": [a.__dict__ for a in self.rbac.assignments],
            "principals": {name: pid for pid, name in names.items()},
            "identities": {(r.inputs.get("tags") or {}).get("detops-purpose", r.name): r.id
                           for r in run.of_type("azure-native:managedidentity:UserAssignedIdentity")},
            "computes": computes, "sizes": SIZES, "usages": USAGES,
            "datastores": {o["runs_datastore_name"]: o["runs_container"]},
            "connection_string": self.setup_cs, "front_door": f"http://127.0.0.1:{self._front.server_address[1]}",
        }
        (self.state / "world.json").write_text(json.dumps(world, indent=1))

    def proxy(self, principal: str) -> Any:
        """The RBAC proxy in front of Azurite for ``principal`` (started on first use)."""
        from azurite_rbac import RbacProxy

        if principal not in self.proxies:
            port = int(self.setup_cs.split("127.0.0.1:", 1)[1].split("/", 1)[0])
            self.proxies[principal] = RbacProxy(port, self.rbac, self.containers, principal, calls=self.calls,
                                                log=self.r.work / "blob-calls.jsonl").start()
        return self.proxies[principal]

    def stop(self) -> None:
        for p in self.proxies.values():
            p.stop()
        self._front.shutdown()
        self._front.server_close()

    # -- the hooks of rehearse_jobs -----------------------------------------------------------------
    def hand_set(self) -> dict[str, str]:
        return {"DETOPS_BACKEND": "azureml", "DETOPS_REGISTRY": "azureml", "DETOPS_MODEL_NAME": MODEL_NAME}

    def login(self, purpose: str | None) -> dict[str, str]:
        """What a job's ``azure/login`` gives its steps here: storage through its identity's proxy, the workspace
        as that identity. ``None`` (no login, or the setup key): the workspace with no identity, Azurite direct."""
        env = {"REHEARSAL_AML_STATE": str(self.state), "PYTHONPATH": str(SITE)}
        if purpose is None:
            return env
        return {**env, "REHEARSAL_AZURE_PRINCIPAL": purpose,
                "AZURE_STORAGE_CONNECTION_STRING": self.proxy(purpose).connection_string(self.key)}

    def mark(self) -> tuple[int, int, int]:
        lines = (self.state / "calls.jsonl").read_text().splitlines() if (self.state / "calls.jsonl").exists() else []
        return len(self.calls), len(lines), len(self.recorded)

    def denial(self, since: tuple[int, int, int]) -> str | None:
        """The first refused call since ``since`` (:meth:`mark`): a blob call, a workspace call or an ACR call."""
        blob = next((c for c in self.calls[since[0]:] if not c.allowed), None)
        if blob is not None:
            return f"{blob.operation} {blob.action} on {blob.scope} denied ({blob.principal})"
        path = self.state / "calls.jsonl"
        lines = path.read_text().splitlines()[since[1]:] if path.exists() else []
        refused = [json.loads(x) for x in lines if not json.loads(x)["allowed"]]
        for d in (d for d in refused if d["operation"] in TOLERATED and d["scope"] not in self.tolerated):
            self.tolerated.add(d["scope"])
            self.r.say(f"   note: {d['principal']} may not {d['action']} on {d['scope']}: {TOLERATED[d['operation']]}")
        ml = next((d for d in refused if d["operation"] not in TOLERATED), None)
        if ml is not None:
            return f"{ml['operation']} {ml['action']} on {ml['scope']} denied ({ml['principal']})"
        return self.recorded[since[2]] if len(self.recorded) > since[2] else None

    def after_step(self, job: Any, purpose: str | None) -> None:
        """The ACR calls the ``az`` and ``docker`` stand-ins recorded, checked against ``purpose``'s roles at the
        registry (AcrPush: ``push/write``; a login or a tag lookup: ``pull/read``)."""
        import azure_rbac

        calls = self.r.work / "ecr-calls"
        if not calls.exists():
            return
        lines = calls.read_text().splitlines()
        calls.unlink()
        for action in sorted({line.split(" ", 1)[0] for line in lines}):
            operation = "acr.push" if action in _PUSH else "acr.pull"
            needed, scope = azure_rbac.required(operation, registry=self.registry_id)
            if purpose is None or not self.rbac.check(purpose, needed, scope).allowed:
                self.recorded.append(f"{operation} {needed} on {scope} denied ({purpose}; the stand-ins recorded "
                                     f"{action}: no registry runs here)")
                return

    def container_steps(self) -> None:
        """The pipeline job the train job submitted, step by step as the cluster's identity (module docstring, 3)."""
        r = self.r
        with _workspace(self) as s:
            name, job = next((n, j) for n, j in reversed(list(s["jobs"].items())) if j["status"] == "Running")
        who = f"compute:{self.cluster}"
        run = self._az(job["outputs"]["run"])
        if r.trained:
            self._reuse(run, who)
        else:
            r.say(f"== the Azure ML job {name}'s steps as {who} (their commands from the job spec; no container here)")
            from training.names import STAGES

            # the pipeline's order (each step's input is the previous one's output): the stage order
            for step in sorted(job["steps"], key=STAGES.index):
                self._step(step, job["steps"][step], job, run, who)
        with _workspace(self) as s:
            s["jobs"][name]["status"] = "Completed"
        if r.keep_trained and not r.trained:
            self._copy(who, run, r.keep_trained, upload=False)
            (r.keep_trained / "run-url").write_text(job["outputs"]["run"].rstrip("/"))

    #: who approves: the stack's approver identity (a person's sign-in on Azure; its principal is read from the
    #: token, and four-eyes compares principal ids)
    person = "approver"

    def approve(self, args: list[str], env: Mapping[str, str], version: str) -> None:
        rj.detops(self.r, "approver", args, env)
        self.r.say(f"== a person approved version {version} as approver (environment model-approval)")

    def answer(self, version: str) -> None:
        with _workspace(self) as s:
            s["answer_version"] = version

    def serving(self, endpoint: str) -> str:
        with _workspace(self) as s:
            return live_version(s, endpoint) or ""

    # -- the job's steps ------------------------------------------------------------------------------
    def _az(self, url: str) -> str:
        """A job input/output path as ``az://<container>/<path>`` (datastore path or blob URL)."""
        if url.startswith("azureml://"):
            store, _, path = url.split("/datastores/", 1)[1].partition("/paths/")
            o = self.r.outputs
            return f"az://{o['runs_container'] if store == o['runs_datastore_name'] else store}/{path}"
        if url.startswith("https://"):
            return "az://" + url.split(".blob.core.windows.net/", 1)[1]
        return url

    def _copy(self, who: str, url: str, local: Path, *, upload: bool) -> None:
        """Download ``url`` to ``local`` (or upload ``local`` to ``url``) as ``who`` through its proxy."""
        code = ("import sys; from training import storage; "
                + ("storage.upload_dir(sys.argv[2], sys.argv[1])" if upload else "storage.download_dir(sys.argv[1], sys.argv[2])"))
        env = {**os.environ, **self.login(who)}
        since = self.mark()
        done = subprocess.run([sys.executable, "-c", code, url, str(local)], env=env, cwd=REPO, capture_output=True,
                              text=True, check=False)
        self._verdict(f"the Azure ML job's steps as {who}", since, done.returncode,
                      f"{'writing' if upload else 'mounting'} {url} failed: {done.stderr[-400:]}")

    def _verdict(self, what: str, since: tuple[int, int, int], code: int, failure: str) -> None:
        """Raise :class:`rehearse_jobs.RehearsalFailed` ``<what>: <the first refused call since since>``, else
        ``<what>: <failure>`` when ``code`` is not 0."""
        denied = self.denial(since)
        if denied:
            raise rj.RehearsalFailed(f"{what}: {denied}")
        if code:
            raise rj.RehearsalFailed(f"{what}: {failure}")

    def _step(self, step: str, spec: Mapping[str, Any], job: Mapping[str, Any], run: str, who: str) -> None:
        r = self.r
        mounts = r.work / "mounts" / step
        shutil.rmtree(mounts, ignore_errors=True)
        local_run = mounts / "run"
        local_run.mkdir(parents=True)
        self._copy(who, run, local_run, upload=False)
        q = shlex.quote  # the mounts' paths go into a shell command line
        command = spec["command"].replace("${{outputs.run}}", q(str(local_run))).replace("${{inputs.run}}", q(str(local_run)))
        if "${{inputs.config}}" in command:
            config = mounts / "config" / job["inputs"]["config"].rsplit("/", 1)[-1]
            self._copy(who, self._az(job["inputs"]["config"]).rsplit("/", 1)[0], config.parent, upload=False)
            datasets = mounts / "datasets"
            self._copy(who, self._az(job["inputs"]["datasets"]).rstrip("/"), datasets, upload=False)
            command = command.replace("${{inputs.config}}", q(str(config))).replace("${{inputs.datasets}}", q(str(datasets)))
            command += " " + " ".join(shlex.quote(a) for a in rj.TINY)  # a tiny run, as the AWS rehearsal's
        exe = q(str(REPO / ".venv" / "bin" / "detops"))  # the image's `detops` is this checkout's
        command = command.replace("detops ", f"{exe} ", 1).replace(" detops run", f" {exe} run")
        env = {**rj.runner_env(r, r.work), **spec["environment_variables"], **self.login(who)}
        with (r.work / "azureml-job.log").open("a") as out:
            out.write(f"\n== step {step}: {command}\n")
            out.flush()
            since = self.mark()
            done = subprocess.run(["bash", "-eo", "pipefail", "-c", command], cwd=REPO, env=env, stdout=out,
                                  stderr=subprocess.STDOUT, check=False, timeout=3600)
        self._verdict(f"the Azure ML job's step {step} as {who}", since, done.returncode,
                      f"exited {done.returncode} (log {r.work / 'azureml-job.log'})")
        self._copy(who, run, local_run, upload=True)
        r.say(f"   step {step}: done")

    def _reuse(self, run: str, who: str) -> None:
        """A run trained earlier (``--trained``), its URL and id replaced by this run's, written as ``who``."""
        r = self.r
        staged = r.work / "trained-copy"
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(r.trained, staged, ignore=shutil.ignore_patterns("run-url"))
        old_url = (r.trained / "run-url").read_text().strip().rstrip("/")
        with _workspace(self) as s:
            new_url = next(j for j in reversed(list(s["jobs"].values())) if j["status"] == "Running")["outputs"]["run"].rstrip("/")
        old_id, new_id = old_url.rsplit("/", 1)[-1], new_url.rsplit("/", 1)[-1]
        for path in staged.rglob("*"):
            if path.is_file() and path.suffix in (".json", ".yaml", ".txt", ".pbtxt"):
                path.write_text(path.read_text().replace(old_url, new_url).replace(old_id, new_id))
        self._copy(who, run, staged, upload=True)
        r.say(f"== the Azure ML job's steps: a run trained earlier ({r.trained}) copied to {new_url} as {who}")


class _workspace:  # noqa: N801 - a context manager named like the state it opens
    """The rehearsed workspace's state (aml_fake.Workspace.state), from the rehearsal process."""

    def __init__(self, cloud: AzureCloud) -> None:
        import aml_fake

        self._cm = aml_fake.Workspace(cloud.state, "setup").state()

    def __enter__(self) -> dict[str, Any]:
        return self._cm.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._cm.__exit__(*exc)


def live_version(state: Mapping[str, Any], endpoint: str) -> str | None:
    """The model version of the deployment taking ``endpoint``'s traffic in the workspace ``state``."""
    ep = state["endpoints"].get(endpoint)
    if not ep or not ep["traffic"] or max(ep["traffic"].values()) == 0:
        return None
    colour = max(ep["traffic"], key=ep["traffic"].get)
    return state["deployments"][f"{endpoint}/{colour}"]["tags"].get("detops.model_version")


def _front_door(cloud: AzureCloud) -> ThreadingHTTPServer:
    """The endpoints' scoring URIs (``POST /<endpoint>/score``): 401 without the endpoint's key, else a detection
    from the version taking the traffic (or the one :meth:`AzureCloud.answer` names, when it is still deployed)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return None

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            endpoint = self.path.strip("/").split("/", 1)[0]
            with _workspace(cloud) as s:
                ep = s["endpoints"].get(endpoint)
                live = live_version(s, endpoint)
                deployed = {d["tags"].get("detops.model_version") for d in s["deployments"].values() if d["endpoint"] == endpoint}
                wanted = s.get("answer_version")
            if ep is None or live is None:
                return self._send(404, {"error": f"no endpoint {endpoint} taking traffic"})
            if self.headers.get("Authorization") != f"Bearer {ep['key']}":
                return self._send(401, {"error": "key auth failed"})
            version = wanted if wanted in deployed else live
            self._send(200, {"model": {"name": MODEL_NAME, "version": version},
                             "predictions": [{"num_detections": 1, "detections": [
                                 {"label": "RBC", "score": 0.9, "box": [0, 0, 10, 10]}]}]})

        def _send(self, status: int, body: Mapping[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="front-door", daemon=True).start()
    return server


def _az_stub(r: rj.Rehearsal) -> None:
    # shellcheck-free: `az acr login --name X` recorded as a pull-level call (a registry token)
    rj._stub(r, "az", f"""[ "$1 $2" = "acr login" ] || {{ echo "az stand-in: only 'az acr login', got: $*" >&2; exit 2; }}
echo "acr:login $4" >> {r.work / 'ecr-calls'}""")


class _Stack:
    """Azurite's process and the cloud's servers, stopped together."""

    def __init__(self, azurite: Any, cloud: AzureCloud) -> None:
        self.azurite, self.cloud = azurite, cloud

    def stop(self) -> None:
        self.cloud.stop()
        self.azurite.__exit__(None, None, None)


def stack_run() -> Any:
    """The Azure program's dev stack under Pulumi's mocks (tests/infra/infra_helpers.py)."""
    from infra_helpers import run_cloud, stack_settings
    from infra_mocks import ensure_event_loop

    ensure_event_loop()
    return run_cloud("azure", stack_settings("azure", "dev"))


def stack_rbac(run: Any = None) -> Any:
    """The dev stack's role assignments x the built-in role definitions (:class:`azure_rbac.Rbac`)."""
    import azure_rbac

    run = run or stack_run()
    return azure_rbac.Rbac(azure_rbac.assignments(run), azure_rbac.definitions())


def start(work: Path, datasets: Path | None, rbac: Any = None) -> tuple[rj.Rehearsal, _Stack]:
    """Azurite, the Azure program's dev stack under mocks (``rbac``: its role assignments model unless given),
    the workspace, the stand-ins, the stack's containers and the BCCD dataset in its ``datasets`` container."""
    from local_servers import azurite

    run = stack_run()
    rbac = rbac or stack_rbac(run)
    (work / "azurite").mkdir(parents=True, exist_ok=True)
    server = azurite(work / "azurite")
    port = server.__enter__()
    r = rj.Rehearsal(work, "", None, dict(run.outputs), {}, {}, work / "bin")
    cloud = AzureCloud(r, run, rbac, port)
    r.cloud = cloud
    (work / "home").mkdir(parents=True, exist_ok=True)
    rj.write_stubs(r)
    _az_stub(r)
    from azure.storage.blob import BlobServiceClient

    svc = BlobServiceClient.from_connection_string(cloud.setup_cs)
    for name in cloud.containers:
        svc.create_container(name)
    local = (datasets or REPO.parent / "shared" / "datasets") / "bccd" / "BCCD"
    target = f"az://{r.outputs['datasets_container']}/bccd/BCCD"  # the stack's DETOPS_DATASETS
    code = "import sys; from training import storage; storage.upload_dir(sys.argv[1], sys.argv[2])"
    subprocess.run([sys.executable, "-c", code, str(local), target], check=True, cwd=REPO,
                   env={**os.environ, "AZURE_STORAGE_CONNECTION_STRING": cloud.setup_cs})
    r.say(f"dataset uploaded to {target} (a person's step; the setup key)")
    return r, _Stack(server, cloud)
