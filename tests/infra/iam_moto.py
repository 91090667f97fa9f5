"""A moto server on 127.0.0.1 that enforces IAM on every request, as AWS does, with the roles loaded in it.

moto's own enforcement (``INITIAL_NO_AUTH_ACTION_COUNT``) checks SageMaker requests against the resource
``*`` only and ignores every condition but ``StringEquals`` on trust policies, so a resource-scoped,
conditioned policy (the only kind this project writes) cannot be tested with it. This server puts an
authorizer in front of moto's WSGI app instead:

1. the request's SigV4 access key is looked up among the sessions moto's STS handed out
   (``AssumeRole``); the role's inline policies are read from moto's IAM backend, where the test put
   the documents the Pulumi program defines;
2. the request is turned into what IAM evaluates: the action (``sagemaker:CreateModelPackage``), the
   resource ARN (SageMaker lower-cases names in ARNs) and the condition keys the Service Authorization
   Reference lists (``sagemaker:ModelApprovalStatus``, ``sagemaker:VolumeKmsKeyArn``,
   ``sagemaker:NetworkIsolation``, ``sagemaker:InstanceTypes``), plus the implied checks AWS makes
   (``iam:PassRole`` for a role in the request, ``sagemaker:AddTags`` for tags on create);
3. :func:`iam_eval.evaluate` decides; a denial is answered with AWS's 403 ``AccessDeniedException``
   (S3: ``AccessDenied``) and its one-line message, a permitted request goes on to moto.

Requests signed with a key that is not an assumed-role session (the test's setup key) pass unchecked.
An operation this module cannot map is denied with a message saying so: the table must grow with the
application, never let a call through unchecked. :data:`CALLS` records every decision.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

from iam_eval import evaluate
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

ACCOUNT = "123456789012"  # moto's default account, also the Pulumi mocks' account


@dataclass
class Check:
    """One authorization: who, which action on which resource, with which context, and the decision."""

    principal: str
    action: str
    resource: str
    context: dict[str, Any]
    allowed: bool
    reason: str


@dataclass
class _Request:
    service: str
    region: str
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    checks: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)


def _sm_arn(region: str, kind: str, name: str) -> str:
    if name.startswith("arn:"):
        return name
    return f"arn:aws:sagemaker:{region}:{ACCOUNT}:{kind}/{name.lower()}"


def _tags_context(body: dict[str, Any]) -> dict[str, Any]:
    tags = body.get("Tags") or []
    context: dict[str, Any] = {f"aws:RequestTag/{t['Key']}": t["Value"] for t in tags}
    if tags:
        context["aws:TagKeys"] = [t["Key"] for t in tags]
    return context


_BY_NAME: dict[str, tuple[str, str]] = {
    **{op: ("training-job", "TrainingJobName") for op in ("CreateTrainingJob", "DescribeTrainingJob", "StopTrainingJob")},
    **{op: ("model", "ModelName") for op in ("CreateModel", "DescribeModel", "DeleteModel")},
    **{op: ("endpoint-config", "EndpointConfigName") for op in ("CreateEndpointConfig", "DescribeEndpointConfig", "DeleteEndpointConfig")},
    **{op: ("endpoint", "EndpointName") for op in ("CreateEndpoint", "UpdateEndpoint", "DescribeEndpoint", "DeleteEndpoint", "InvokeEndpoint")},
}


def _sagemaker(req: _Request, operation: str, body: dict[str, Any]) -> None:
    """Fill ``req.checks`` for one SageMaker operation (JSON protocol, ``X-Amz-Target: SageMaker.<op>``)."""
    region = req.region
    action = f"sagemaker:{operation}"
    context = _tags_context(body)
    if operation in ("ListModelPackages", "ListModelPackageGroups", "ListEndpoints", "ListModels", "ListTrainingJobs"):
        resource = "*"
    elif operation in ("CreateModelPackageGroup", "DescribeModelPackageGroup", "DeleteModelPackageGroup"):
        resource = _sm_arn(region, "model-package-group", body["ModelPackageGroupName"])
    elif operation == "CreateModelPackage":
        group = body.get("ModelPackageGroupName") or body.get("ModelPackageName", "")
        resource = f"arn:aws:sagemaker:{region}:{ACCOUNT}:model-package/{group.lower()}/*"
        if "ModelApprovalStatus" in body:
            context["sagemaker:ModelApprovalStatus"] = body["ModelApprovalStatus"]
    elif operation in ("DescribeModelPackage", "UpdateModelPackage", "DeleteModelPackage"):
        name = body.get("ModelPackageName") or body.get("ModelPackageArn", "")
        resource = _sm_arn(region, "model-package", name)
        if operation == "UpdateModelPackage" and "ModelApprovalStatus" in body:
            context["sagemaker:ModelApprovalStatus"] = body["ModelApprovalStatus"]
    elif operation in ("AddTags", "ListTags", "DeleteTags"):
        resource = body["ResourceArn"]
    elif operation in _BY_NAME:
        kind, key = _BY_NAME[operation]
        resource = _sm_arn(region, kind, body[key])
    else:
        raise LookupError(f"no IAM mapping for sagemaker:{operation}")
    if operation == "CreateTrainingJob":
        context["sagemaker:InstanceTypes"] = [body["ResourceConfig"]["InstanceType"]]
        if body["ResourceConfig"].get("VolumeKmsKeyId"):
            context["sagemaker:VolumeKmsKeyArn"] = body["ResourceConfig"]["VolumeKmsKeyId"]
        if body.get("OutputDataConfig", {}).get("KmsKeyId"):
            context["sagemaker:OutputKmsKeyArn"] = body["OutputDataConfig"]["KmsKeyId"]
        context["sagemaker:NetworkIsolation"] = bool(body.get("EnableNetworkIsolation", False))
    elif operation == "CreateModel":
        context["sagemaker:NetworkIsolation"] = bool(body.get("EnableNetworkIsolation", False))
    elif operation == "CreateEndpointConfig":
        context["sagemaker:InstanceTypes"] = [v["InstanceType"] for v in body.get("ProductionVariants", []) if "InstanceType" in v]
        if body.get("KmsKeyId"):
            context["sagemaker:VolumeKmsKeyArn"] = body["KmsKeyId"]
    req.checks.append((action, resource, context))
    role = body.get("RoleArn") or body.get("ExecutionRoleArn")
    if role:  # passing a role to SageMaker is authorized as iam:PassRole on that role
        req.checks.append(("iam:PassRole", role, {"iam:PassedToService": "sagemaker.amazonaws.com"}))
    if body.get("Tags") and operation.startswith("Create"):  # tag-on-create needs AddTags too
        req.checks.append(("sagemaker:AddTags", resource, _tags_context(body)))


def _s3(req: _Request) -> None:
    """Fill ``req.checks`` for one S3 REST request (path-style ``/bucket/key``)."""
    parts = unquote(req.path).lstrip("/").split("/", 1)
    bucket = parts[0]
    key = parts[1] if len(parts) > 1 else ""
    q = req.query
    if not bucket:
        req.checks.append(("s3:ListAllMyBuckets", "*", {}))
        return
    if not key:
        if req.method in ("GET", "HEAD") and "location" in q:
            action = "s3:GetBucketLocation"
        elif req.method in ("GET", "HEAD") and not (set(q) - {"list-type", "prefix", "delimiter", "max-keys", "continuation-token", "encoding-type", "fetch-owner", "start-after", "marker"}):
            action = "s3:ListBucket"
        elif req.method == "POST" and "delete" in q:
            req.checks.append(("s3:DeleteObject", f"arn:aws:s3:::{bucket}/*", {}))
            return
        else:
            raise LookupError(f"no IAM mapping for S3 {req.method} bucket ?{'&'.join(q)}")
        req.checks.append((action, f"arn:aws:s3:::{bucket}", {}))
        return
    resource = f"arn:aws:s3:::{bucket}/{key}"
    if req.method in ("GET", "HEAD") and not (set(q) - {"partNumber", "versionId", "x-id"}):
        action = "s3:GetObject"
    elif req.method in ("PUT", "POST") and "x-amz-copy-source" not in {k.lower() for k in req.headers}:
        action = "s3:PutObject"
    elif req.method == "DELETE" and "uploadId" in q:
        action = "s3:AbortMultipartUpload"
    elif req.method == "DELETE":
        action = "s3:DeleteObject"
    else:
        raise LookupError(f"no IAM mapping for S3 {req.method} object ?{'&'.join(q)}")
    req.checks.append((action, resource, {}))


#: sagemaker-runtime ``InvokeEndpoint`` (REST, signed for service ``sagemaker``): ``POST /endpoints/<name>/invocations``.
_INVOCATIONS = re.compile(r"^/endpoints/([^/]+)/invocations$")
_CREDENTIAL = re.compile(r"Credential=([^/]+)/\d{8}/([a-z0-9-]+)/([a-z0-9-]+)/aws4_request")


def _text_body(environ: dict[str, Any], body: bytes) -> None:
    """Hand moto an ``InvokeEndpoint`` body it can read: moto decodes every request body as UTF-8
    (``moto.core.responses.BaseResponse.setup_class``) and answers 500 for an image; its canned answers
    (``/moto-api/static/sagemaker/endpoint-results``) use the body only as a cache key, so its SHA-256 in hex
    stands in (authorization has already seen the real request)."""
    import hashlib
    import io

    text = hashlib.sha256(body).hexdigest().encode()
    environ["wsgi.input"] = io.BytesIO(text)
    environ["CONTENT_LENGTH"] = str(len(text))


class IamEnforcer:
    """WSGI middleware: authorize each request of an assumed-role session, then hand it to moto."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app
        self.calls: list[Check] = []
        self.lock = threading.Lock()

    def _principal(self, access_key: str) -> tuple[str, list[dict[str, Any]], str] | None:
        """``(session ARN, the role's inline policies, the role's ARN)`` of the session holding ``access_key``."""
        from moto.iam.models import iam_backends
        from moto.sts.models import sts_backends

        for session in sts_backends[ACCOUNT]["aws"].assumed_roles:
            if session.access_key_id == access_key:
                role_name = session.role_arn.split("/")[-1]
                iam = iam_backends[ACCOUNT]["aws"]
                documents = []
                for policy_name in iam.list_role_policies(role_name):
                    _, document = iam.get_role_policy(role_name, policy_name)
                    documents.append(json.loads(document) if isinstance(document, str) else document)
                return (f"arn:aws:sts::{ACCOUNT}:assumed-role/{role_name}/{session.session_name}", documents,
                        session.role_arn)
        return None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        auth = environ.get("HTTP_AUTHORIZATION", "")
        match = _CREDENTIAL.search(auth)
        who = self._principal(match.group(1)) if match else None
        if who is None:
            return self.app(environ, start_response)
        principal, policies, role_arn = who
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        import io

        environ["wsgi.input"] = io.BytesIO(body)
        headers = {k[5:].replace("_", "-").title(): v for k, v in environ.items() if k.startswith("HTTP_")}
        req = _Request(
            service=match.group(3), region=match.group(2), method=environ["REQUEST_METHOD"],
            path=environ.get("PATH_INFO", "/"), query=parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True),
            headers=headers, body=body,
        )
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        try:
            if req.service == "sts":
                form = parse_qs(body.decode() or environ.get("QUERY_STRING", ""))
                action = form.get("Action", [""])[0]
                if action != "GetCallerIdentity":  # needs no permission (AWS)
                    req.checks.append((f"sts:{action}", "*", {}))
            elif req.service == "sagemaker" and target.startswith("SageMaker."):
                _sagemaker(req, target.split(".", 1)[1], json.loads(body or b"{}"))
            elif req.service == "sagemaker" and (m := _INVOCATIONS.match(req.path)):  # sagemaker-runtime (REST)
                req.checks.append(("sagemaker:InvokeEndpoint", _sm_arn(req.region, "endpoint", unquote(m.group(1))), {}))
            elif req.service == "s3":
                _s3(req)
            elif req.service == "servicequotas" and target.startswith("ServiceQuotasV20190624."):
                req.checks.append((f"servicequotas:{target.split('.', 1)[1]}", "*", {}))  # no resource-level permissions
            else:
                raise LookupError(f"no IAM mapping for service {req.service!r} {target}")
        except LookupError as exc:
            return self._deny(start_response, req, principal, "unmapped", "*", {}, str(exc))
        for action, resource, context in req.checks:
            decision = evaluate(policies, action, resource, {"aws:PrincipalArn": role_arn, **context})  # a global key
            with self.lock:
                self.calls.append(Check(principal, action, resource, context, decision.allowed, decision.reason))
            if not decision.allowed:
                message = f"User: {principal} is not authorized to perform: {action} on resource: {resource} {decision.reason}"
                return self._deny(start_response, req, principal, action, resource, context, message)
        if req.service == "sagemaker" and _INVOCATIONS.match(req.path):
            _text_body(environ, body)
        return self.app(environ, start_response)

    def _deny(self, start_response, req: _Request, principal: str, action: str, resource: str,
              context: dict[str, Any], message: str) -> list[bytes]:
        if action == "unmapped":
            with self.lock:
                self.calls.append(Check(principal, action, resource, context, False, message))
        if req.service == "s3":
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
                f"<Message>{message}</Message><RequestId>iam-enforcer</RequestId></Error>"
            ).encode()
            start_response("403 Forbidden", [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
            return [body]
        body = json.dumps({"__type": "AccessDeniedException", "message": message}).encode()
        start_response("400 Bad Request", [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(body))),
                                           ("x-amzn-ErrorType", "AccessDeniedException")])
        return [body]


def _update_endpoint(self: Any) -> Any:
    """``UpdateEndpoint`` for moto, which does not implement it (``NotImplementedError``, a 500): the endpoint
    switches to the new endpoint config at once and stays ``InService`` (as moto's ``CreateEndpoint``). What
    this cannot show: SageMaker's minutes in ``Updating`` and its automatic rollback of a failed update."""
    from moto.core.responses import ActionResult

    backend = self.sagemaker_backend
    name, config_name = self._get_param("EndpointName"), self._get_param("EndpointConfigName")
    endpoint = backend.endpoints[name]
    config = backend.describe_endpoint_config(config_name)
    endpoint.endpoint_config_name = config_name
    endpoint.production_variants = endpoint._process_production_variants(config["ProductionVariants"])
    endpoint.data_capture_config = config["DataCaptureConfig"]
    return ActionResult({"EndpointArn": endpoint.arn})


def _serve_update_endpoint() -> None:
    from moto.sagemaker.responses import SageMakerResponse

    if not hasattr(SageMakerResponse, "update_endpoint"):
        SageMakerResponse.update_endpoint = _update_endpoint


class EnforcingMotoServer(ThreadedMotoServer):
    """``ThreadedMotoServer`` whose WSGI app is wrapped in :class:`IamEnforcer` (attribute ``enforcer``), with
    ``UpdateEndpoint`` served (:func:`_update_endpoint`)."""

    def _server_entry(self) -> None:
        _serve_update_endpoint()
        self.enforcer = IamEnforcer(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(self._ip_address, self._port, self.enforcer, True, request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()


#: The roles of the AWS program, by purpose: the four GitHub roles and the SageMaker execution role.
PURPOSES = ("trainer", "registrar", "approver", "deployer", "sagemaker")


def stack_policies(run: Any) -> dict[str, dict[str, Any]]:
    """The inline policy document of each role of :data:`PURPOSES` in ``run`` (the AWS program under
    mocks, ``infra_helpers.run_cloud``): the ``aws:iam/rolePolicy:RolePolicy`` named
    ``<prefix>-<purpose>-access``. Raises KeyError naming a purpose the program gives no policy."""
    found = {}
    for policy in run.of_type("aws:iam/rolePolicy:RolePolicy"):
        purpose = policy.name.removesuffix("-access").rsplit("-", 1)[-1]
        if policy.name.endswith("-access") and purpose in PURPOSES:
            found[purpose] = json.loads(policy.inputs["policy"])
    missing = [p for p in PURPOSES if p not in found]
    if missing:
        raise KeyError(f"the program defines no inline policy for {missing}")
    return found


def load_stack(url: str, outputs: dict[str, Any], policies: dict[str, dict[str, Any]], region: str,
               setup: Any = None) -> dict[str, dict[str, str]]:
    """Create what ``pulumi up`` made, on the moto server at ``url``, with the setup key (unchecked by
    :class:`IamEnforcer`): the data and runs buckets, the model package group, and each role of
    ``policies`` (purpose -> inline policy document; ``outputs["<purpose>_role_arn"]`` names it) with that
    policy; then assume each role through moto's STS (``AssumeRole``; the real trust policies are GitHub's
    web identity and SageMaker's service principal, asserted in test_programs) and return the session
    credentials by purpose (``AccessKeyId``, ``SecretAccessKey``, ``SessionToken``)."""
    import boto3

    setup = setup or boto3.session.Session(aws_access_key_id="setup", aws_secret_access_key="setup", region_name=region)
    s3 = setup.client("s3", endpoint_url=url)
    for bucket in (outputs["s3_data_bucket"], outputs["s3_runs_bucket"]):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    setup.client("sagemaker", endpoint_url=url).create_model_package_group(
        ModelPackageGroupName=outputs["model_package_group_name"])
    return {purpose: add_role(setup, url, outputs[f"{purpose}_role_arn"].rsplit("/", 1)[-1], document, purpose)
            for purpose, document in policies.items()}


def add_role(setup: Any, url: str, name: str, policy: dict[str, Any] | str, session: str,
             session_name: str | None = None, path: str = "/") -> dict[str, str]:
    """Create role ``name`` (IAM path ``path``) with inline policy ``policy`` on the moto server at ``url``
    (setup key) and return the credentials of an ``AssumeRole`` session ``github-<session>`` of it
    (``session_name``: that session name instead, e.g. the user name IAM Identity Center gives its
    permission-set sessions)."""
    trust = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "sts:AssumeRole"}]})
    iam = setup.client("iam", endpoint_url=url)
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust, Path=path)["Role"]["Arn"]
    iam.put_role_policy(RoleName=name, PolicyName="access",
                        PolicyDocument=policy if isinstance(policy, str) else json.dumps(policy))
    sts = setup.client("sts", endpoint_url=url)
    return sts.assume_role(RoleArn=arn, RoleSessionName=session_name or f"github-{session}")["Credentials"]


#: A person's IAM Identity Center permission-set role (name ``AWSReservedSSO_<permission set>_<16 hex>``, path
#: ``/aws-reserved/sso.amazonaws.com/``) holding
#: the approver policy, and the user name Identity Center gives its session (docs/contracts.md, AWS approval).
SSO_APPROVER_ROLE = "AWSReservedSSO_DetopsApprover_0123456789abcdef"
SSO_APPROVER_USER = "approver-bob@example.com"


def add_sso_approver(setup: Any, url: str, approver_policy: dict[str, Any]) -> dict[str, str]:
    """A person's approver session: :data:`SSO_APPROVER_ROLE` with the stack's approver policy (what the
    permission set assigned to approvers holds), assumed with session name :data:`SSO_APPROVER_USER` (as
    Identity Center names it; moto cannot federate, so the setup key assumes it). Returns its credentials."""
    return add_role(setup, url, SSO_APPROVER_ROLE, approver_policy, "person", SSO_APPROVER_USER,
                    path="/aws-reserved/sso.amazonaws.com/")


__all__ = ["ACCOUNT", "SSO_APPROVER_ROLE", "SSO_APPROVER_USER", "add_sso_approver", "PURPOSES", "Check", "EnforcingMotoServer", "IamEnforcer", "add_role", "load_stack", "stack_policies"]
