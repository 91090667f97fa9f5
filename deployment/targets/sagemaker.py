"""SageMaker real-time endpoint target (boto3): model -> endpoint config (data capture) -> endpoint.

Only an *Approved* model package is deployed: :mod:`deployment.deploy` checks the registry, and
this target checks the package's ``ModelApprovalStatus`` again in SageMaker before creating
anything (an approval revoked in the console between the two is caught). The model runs the
serving image (the FastAPI app; ``GET /ping``, ``POST /invocations`` on port 8080, SageMaker's
container contract) from the package. Request and response payloads are captured to S3
(``DataCaptureConfig``) for monitoring.

Names: model ``<endpoint>-v<version>-<hhmmss>``, endpoint config the same; updating an existing
endpoint swaps its config (SageMaker's blue/green update; the old config is kept for rollback).

Settings (environment): ``DETOPS_SM_ROLE_ARN`` (execution role), ``DETOPS_SM_ENDPOINT``
(default endpoint name), ``DETOPS_SM_INSTANCE_TYPE_SERVING`` (default ``ml.m5.large``),
``DETOPS_SM_CAPTURE_URI`` (``s3://`` prefix for captured data; required), ``DETOPS_SM_KMS_KEY_ID``.

Deploy and rollback return once the endpoint is ``InService`` on the new config (boto3's
``endpoint_in_service`` waiter, bounded by :data:`WAIT_DELAY_SECONDS` x :data:`WAIT_MAX_ATTEMPTS`): during an
update SageMaker keeps the old variant answering, so a smoke test run before that would test the old
model. A failed create, an update SageMaker rolled back (InService again, on the old config) or a
timeout is a BackendError naming the endpoint and SageMaker's ``FailureReason``.

Quota pre-flight: before anything is created, the Service Quotas value ``<instance type> for
endpoint usage`` is compared with the new instance plus those the InService endpoints already hold
(:mod:`training.cloud.quota`; a blue/green update runs both fleets for a while);
``detops deploy --skip-preflight`` (``preflight=False``) skips it.
"""

from __future__ import annotations

import time
from typing import Any

from deployment.registry.base import ApprovalStatus, ModelVersion
from deployment.targets.base import Deployment, DeployTarget, container_env
from training.errors import BackendError, ConfigError, GateError, NotFoundError

DRY_RUN_ROLE = "arn:aws:iam::123456789012:role/detops-sagemaker-execution"
#: The wait for InService: DescribeEndpoint every 30 s (the waiter's own delay), at most 90 times
#: (45 minutes, inside the release jobs' 60-minute timeout; the waiter's default is 120 times).
WAIT_DELAY_SECONDS = 30
WAIT_MAX_ATTEMPTS = 90


class SageMakerTarget(DeployTarget):
    """Deploy Approved SageMaker model packages to a real-time endpoint."""

    name = "sagemaker"

    def __init__(self, sagemaker_client: Any = None, role_arn: str | None = None,
                 instance_type: str | None = None, capture_uri: str | None = None, *,
                 preflight: bool = True, quotas_client: Any = None,
                 wait_delay: int = WAIT_DELAY_SECONDS, wait_max_attempts: int = WAIT_MAX_ATTEMPTS) -> None:
        from training.settings import AwsSettings

        self._sm = sagemaker_client
        self.preflight = preflight
        self.wait_delay, self.wait_max_attempts = wait_delay, wait_max_attempts
        self._quotas_client = quotas_client
        self.settings = AwsSettings.load()
        self.role_arn = role_arn or self.settings.sm_role_arn
        self.instance_type = instance_type or self.settings.sm_instance_type_serving
        self.capture_uri = capture_uri or self.settings.sm_capture_uri
        self.kms_key_id = self.settings.sm_kms_key_id

    @property
    def sm(self):
        """The boto3 SageMaker client (created on first use, so a dry run needs no credentials)."""
        if self._sm is None:
            from training.cloud import aws

            self._sm = aws.client("sagemaker")
        return self._sm

    def _endpoint(self, endpoint: str | None) -> str:
        name = endpoint or self.settings.sm_endpoint or "detops"
        import re

        if not re.fullmatch(r"[A-Za-z0-9](-*[A-Za-z0-9]){0,62}", name):
            raise ConfigError(f"SageMaker endpoint name {name!r}: 1-63 letters, digits or hyphens")
        return name

    def specs(self, version: ModelVersion, endpoint: str, package_arn: str, stamp: str,
              previous: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        """The ``CreateModel`` / ``CreateEndpointConfig`` / ``CreateEndpoint`` requests (boto3 kwargs).

        The endpoint config's tags name the model version and what was live before it
        (``detops:previous_model_name`` / ``_model_version`` / ``_endpoint_config``: exact rollback);
        the container gets ``DETOPS_MODEL_SHA256``, the registered artifact digest it verifies at load.
        """
        if not self.capture_uri or not self.capture_uri.startswith("s3://"):
            raise ConfigError("set DETOPS_SM_CAPTURE_URI to an s3:// prefix for endpoint data capture")
        base = f"{endpoint}-v{version.version}-{stamp}"[:63].rstrip("-")
        tags = [{"Key": "detops:model_name", "Value": version.name},
                {"Key": "detops:model_version", "Value": str(version.version)}]
        config_tags = list(tags)
        if previous and previous.get("model_version"):
            config_tags += [{"Key": f"detops:previous_{k}", "Value": str(previous[k])}
                            for k in ("model_name", "model_version", "endpoint_config") if previous.get(k)]
        capture: dict[str, Any] = {
            "EnableCapture": True,
            "InitialSamplingPercentage": 100,
            "DestinationS3Uri": self.capture_uri,
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
            "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]},
        }
        config: dict[str, Any] = {
            "EndpointConfigName": base,
            "ProductionVariants": [{"VariantName": "primary", "ModelName": base, "InstanceType": self.instance_type,
                                    "InitialInstanceCount": 1, "InitialVariantWeight": 1.0}],
            "DataCaptureConfig": capture,
            "Tags": config_tags,
        }
        if self.kms_key_id:
            config["KmsKeyId"] = self.kms_key_id
            capture["KmsKeyId"] = self.kms_key_id
        return {
            # Network isolation: the serving container needs no outbound network (IAM requires it: docs/infra.md).
            "model": {"ModelName": base, "ExecutionRoleArn": self.role_arn or DRY_RUN_ROLE, "EnableNetworkIsolation": True,
                      "PrimaryContainer": {"ModelPackageName": package_arn,
                                           # InvokeEndpoint is IAM-signed and forwards no X-API-Key;
                                           # the model is unpacked into /opt/ml/model
                                           "Environment": {**container_env(version, self.runtime),
                                                           "DETOPS_AUTH": "platform"}},
                      "Tags": tags},
            "endpoint_config": config,
            "endpoint": {"EndpointName": endpoint, "EndpointConfigName": base, "Tags": tags},
        }

    def _package_arn(self, version: ModelVersion) -> str:
        arn = version.tags.get("sagemaker:model_package_arn")
        if arn:
            return arn
        from deployment.registry.sagemaker import SageMakerRegistry

        return SageMakerRegistry(sagemaker_client=self.sm).package_arn(version.name, version.version)

    def deploy(self, version: ModelVersion, endpoint: str | None = None, *, dry_run: bool = False,
               previous: dict[str, Any] | None = None) -> Deployment:
        """Create the model, the endpoint config (with data capture) and create/update the endpoint.

        The switch is ``UpdateEndpoint`` (SageMaker keeps serving the old config when the update
        fails); everything before it creates new resources only. Returns once the endpoint is
        ``InService`` on the new config (:meth:`wait_in_service`).

        Raises:
            GateError: the package is not Approved in SageMaker (or ``version`` is not Approved).
            ConfigError: missing role / capture settings. BackendError: SageMaker refused a call, or the
                endpoint did not come InService on the new config (:meth:`wait_in_service`).
        """
        from botocore.exceptions import BotoCoreError, ClientError

        name = self._endpoint(endpoint)
        stamp = time.strftime("%H%M%S", time.gmtime())
        if dry_run:
            arn = version.tags.get("sagemaker:model_package_arn") or f"<model package {version.name}/{version.version}>"
            return Deployment(self.name, name, version.name, str(version.version), "planned",
                              details={"requests": self.specs(version, name, arn, stamp)})
        if not self.role_arn:
            raise ConfigError("set DETOPS_SM_ROLE_ARN (SageMaker execution role) to deploy")
        if version.status != ApprovalStatus.APPROVED:
            raise GateError(f"model {version.name} version {version.version} is {version.status.value}, not Approved")
        arn = self._package_arn(version)
        try:
            pkg = self.sm.describe_model_package(ModelPackageName=arn)
            if pkg.get("ModelApprovalStatus") != ApprovalStatus.APPROVED.value:
                raise GateError(f"SageMaker model package {arn} is {pkg.get('ModelApprovalStatus')}, not Approved")
            req = self.specs(version, name, arn, stamp, previous)
            preflight = self._check_quota(req["endpoint_config"]["ProductionVariants"][0]["InitialInstanceCount"])
            self.sm.create_model(**req["model"])
            self.sm.create_endpoint_config(**req["endpoint_config"])
            try:
                self.sm.describe_endpoint(EndpointName=name)
                exists = True
            except ClientError:
                exists = False
            if exists:
                self.sm.update_endpoint(EndpointName=name, EndpointConfigName=req["endpoint"]["EndpointConfigName"],
                                        RetainAllVariantProperties=False)
            else:
                self.sm.create_endpoint(**req["endpoint"])
            desc = self.wait_in_service(name, req["endpoint"]["EndpointConfigName"])
        except ClientError as e:
            from training.cloud.aws import aws_error

            raise aws_error(e, f"deploy to endpoint {name!r}") from e
        except BotoCoreError as e:
            raise BackendError(f"SageMaker deploy to endpoint {name!r}: {e}") from e
        return Deployment(self.name, name, version.name, str(version.version), desc["EndpointStatus"],
                          details={"endpoint_arn": desc.get("EndpointArn"), "endpoint_config": req["endpoint"]["EndpointConfigName"],
                                   "model": req["model"]["ModelName"], "model_package_arn": arn,
                                   "data_capture": req["endpoint_config"]["DataCaptureConfig"]["DestinationS3Uri"],
                                   "preflight": preflight})

    def wait_in_service(self, name: str, config_name: str) -> dict[str, Any]:
        """Wait until endpoint ``name`` is ``InService`` on endpoint config ``config_name`` (boto3's
        ``endpoint_in_service`` waiter, every ``wait_delay`` s, at most ``wait_max_attempts`` times);
        return its ``DescribeEndpoint``.

        Raises:
            BackendError: naming the endpoint, its status and ``FailureReason``, when it is ``Failed``,
                does not get there in time, or is ``InService`` on another config (SageMaker rolled a
                failed update back and the old variant still answers).
        """
        from botocore.exceptions import WaiterError

        try:
            self.sm.get_waiter("endpoint_in_service").wait(
                EndpointName=name, WaiterConfig={"Delay": self.wait_delay, "MaxAttempts": self.wait_max_attempts})
        except WaiterError as e:
            last = e.last_response or {}
            reason = last.get("FailureReason") or (last.get("Error") or {}).get("Message") or "no reason given"
            status = last.get("EndpointStatus", "unknown")
            if "Max attempts exceeded" in str(e):
                waited = self.wait_delay * self.wait_max_attempts
                raise BackendError(f"SageMaker endpoint {name!r} is still {status} after {self.wait_max_attempts} "
                                   f"checks ({waited} s), not InService: {reason}") from e
            raise BackendError(f"SageMaker endpoint {name!r} is {status}, not InService: {reason}") from e
        desc = self.sm.describe_endpoint(EndpointName=name)
        if desc.get("EndpointConfigName") != config_name:
            raise BackendError(
                f"SageMaker endpoint {name!r} is InService on endpoint config {desc.get('EndpointConfigName')!r}, "
                f"not {config_name!r}: the update failed and SageMaker kept the previous one "
                f"({desc.get('FailureReason') or 'no reason given'})")
        return desc

    def _check_quota(self, count: int) -> dict[str, Any] | str:
        """The endpoint-usage quota pre-flight for ``count`` new instances (QuotaError when short)."""
        if not self.preflight:
            return "skipped (--skip-preflight)"
        from training.cloud.quota import enforce, sagemaker_preflight

        result = sagemaker_preflight(self.instance_type, count, usage="endpoint", sm_client=self.sm,
                                     quotas_client=self._quotas_client)
        return enforce(result, f"the SageMaker endpoint ({count} x {self.instance_type})")

    def describe(self, endpoint: str | None = None) -> Deployment | None:
        """The model name and version behind ``endpoint`` (from the endpoint config's tags), or None."""
        from botocore.exceptions import ClientError

        name = self._endpoint(endpoint)
        try:
            desc = self.sm.describe_endpoint(EndpointName=name)
        except ClientError:
            return None
        config_name = desc["EndpointConfigName"]
        try:
            cfg = self.sm.describe_endpoint_config(EndpointConfigName=config_name)
            tags = {t["Key"]: t["Value"] for t in self.sm.list_tags(ResourceArn=cfg["EndpointConfigArn"]).get("Tags", [])}
        except ClientError as e:
            raise BackendError(f"SageMaker endpoint {name!r}: {e}") from e
        if "detops:model_name" not in tags:
            raise NotFoundError(f"endpoint {name!r} was not deployed by detops (no detops:model_name tag)")
        previous = None
        if tags.get("detops:previous_model_version"):
            previous = {"model_name": tags.get("detops:previous_model_name", tags["detops:model_name"]),
                        "model_version": tags["detops:previous_model_version"],
                        "endpoint_config": tags.get("detops:previous_endpoint_config")}
        return Deployment(self.name, name, tags["detops:model_name"], tags["detops:model_version"],
                          desc["EndpointStatus"], details={"endpoint_config": config_name,
                                                           "data_capture": cfg.get("DataCaptureConfig", {}),
                                                           "previous": previous})

    def rollback(self, version: ModelVersion, endpoint: str | None = None,
                 previous: dict[str, Any] | None = None) -> Deployment:
        """Switch ``endpoint`` back to the endpoint config that served ``version`` before (it still
        names its own model and its own ``previous``); deploy ``version`` afresh when that config is gone
        or does not name ``version``."""
        from botocore.exceptions import ClientError

        name = self._endpoint(endpoint)
        config = (previous or {}).get("endpoint_config")
        if config:
            try:
                cfg = self.sm.describe_endpoint_config(EndpointConfigName=config)
                tags = {t["Key"]: t["Value"]
                        for t in self.sm.list_tags(ResourceArn=cfg["EndpointConfigArn"]).get("Tags", [])}
            except ClientError:
                tags = {}
            if tags.get("detops:model_name") == version.name and tags.get("detops:model_version") == str(version.version):
                try:
                    self.sm.update_endpoint(EndpointName=name, EndpointConfigName=config,
                                            RetainAllVariantProperties=False)
                    self.wait_in_service(name, config)
                except ClientError as e:
                    from training.cloud.aws import aws_error

                    raise aws_error(e, f"roll back endpoint {name!r}") from e
                d = self.describe(name)
                assert d is not None
                d.details["rollback_via"] = "previous endpoint config"
                return d
        return self.deploy(version, name, previous=(previous or {}).get("previous"))
