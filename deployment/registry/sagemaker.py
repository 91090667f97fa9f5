"""The SageMaker Model Registry as a :class:`~deployment.registry.base.ModelRegistry` (boto3).

A model name is a *model package group*; a version is a *model package* in it
(``ModelPackageVersion`` 1, 2, ...) whose ``ModelApprovalStatus`` is the approval status
(PendingManualApproval / Approved / Rejected, the spelling :class:`ApprovalStatus` mirrors).

Metrics, tags, ``registered_by`` and the audit trail are kept in one JSON document per version in
S3, ``<DETOPS_SM_REGISTRY_URI>/<name>/<version>.json`` (SageMaker's ``CustomerMetadataProperties``
are also set, but are limited in size and dropped by moto). The approval status itself lives only
in SageMaker, so an approval made in the console is seen here.

Settings: ``DETOPS_SM_REGISTRY_URI`` (``s3://bucket/prefix`` for the metadata documents; required),
``DETOPS_SERVING_IMAGE`` (the serving image in ECR, recorded in the package's
``InferenceSpecification``; required), AWS credentials and region from boto3's usual chain.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from deployment.registry.base import ApprovalStatus, AuditEntry, ModelRegistry, ModelVersion
from training import storage
from training.errors import BackendError, ConfigError, NotFoundError


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class SageMakerRegistry(ModelRegistry):
    """Model package groups and packages of the SageMaker Model Registry.

    Args:
        metadata_uri: where the per-version JSON documents go (default ``$DETOPS_SM_REGISTRY_URI``).
        serving_image: container image of the package (default ``$DETOPS_SERVING_IMAGE``).
        sagemaker_client: a boto3 SageMaker client (default: a new one from the environment).
        group_account_id: the AWS account owning the model package groups when it is not the caller's (the
            dev account ``detops promote`` reads from; its group's resource policy must let the caller):
            groups are then named by ARN, ``arn:<partition>:sagemaker:<region>:<account>:model-package-group/<name>``.
    """

    def __init__(self, metadata_uri: str | None = None, serving_image: str | None = None,
                 sagemaker_client: Any = None, group_account_id: str | None = None) -> None:
        from training.settings import AwsSettings, CommonSettings, missing_settings

        metadata_uri = metadata_uri or AwsSettings.load().sm_registry_uri
        self.serving_image = serving_image or CommonSettings.load().serving_image
        # the serving image is needed to create a version (register), not to gate, list or approve
        if not metadata_uri:
            raise missing_settings([(AwsSettings, "sm_registry_uri")], "use the SageMaker Model Registry")
        if not str(metadata_uri).startswith("s3://"):
            raise ConfigError(f"DETOPS_SM_REGISTRY_URI must be s3://bucket/prefix (model version metadata), got {metadata_uri!r}")
        self.metadata_uri: str = str(metadata_uri)
        if sagemaker_client is None:
            from training.cloud import aws

            sagemaker_client = aws.client("sagemaker")
        self.sm = sagemaker_client
        if group_account_id is not None and not (len(group_account_id) == 12 and group_account_id.isdigit()):
            raise ConfigError(f"DETOPS_PROMOTE_SOURCE_ACCOUNT must be a 12-digit AWS account id, got {group_account_id!r}")
        self.group_account_id = group_account_id

    def group_ref(self, name: str) -> str:
        """What SageMaker calls group ``name`` by: the name, or its ARN in ``group_account_id``."""
        if not self.group_account_id:
            return name
        import boto3

        region = self.sm.meta.region_name
        partition = boto3.session.Session().get_partition_for_region(region)
        return f"arn:{partition}:sagemaker:{region}:{self.group_account_id}:model-package-group/{name}"

    # -- helpers -------------------------------------------------------------------------------
    def _doc_url(self, name: str, version: str) -> str:
        return storage.join(self.metadata_uri, name, f"{version}.json")

    def _call(self, what: str, fn, **kwargs):
        from training.cloud import aws

        return aws.call(what, fn, **kwargs)

    def _packages(self, name: str) -> list[dict[str, Any]]:
        from training.cloud import aws

        packages = aws.paginate(self.sm, "list_model_packages", "ModelPackageSummaryList",
                                what=f"list model packages of {name!r}", ModelPackageGroupName=self.group_ref(name),
                                PaginationConfig={"PageSize": 100})
        return sorted(packages, key=lambda p: int(p.get("ModelPackageVersion", 0)))

    def package_arn(self, name: str, version: str) -> str:
        """ARN of model package ``version`` of group ``name``; NotFoundError if there is none."""
        for p in self._packages(name):
            if str(p.get("ModelPackageVersion")) == str(version):
                return p["ModelPackageArn"]
        raise NotFoundError(f"model {name!r} has no version {version} in the SageMaker Model Registry")

    def _to_version(self, name: str, desc: dict[str, Any]) -> ModelVersion:
        version = str(desc["ModelPackageVersion"])
        try:
            doc = storage.read_json(self._doc_url(name, version))
        except FileNotFoundError:
            doc = {}
        status_raw = desc.get("ModelApprovalStatus", ApprovalStatus.PENDING.value)
        try:
            status = ApprovalStatus(status_raw)
        except ValueError as e:
            raise BackendError(f"model {name} version {version}: unknown ModelApprovalStatus {status_raw!r}") from e
        containers = desc.get("InferenceSpecification", {}).get("Containers", [{}])
        source = containers[0].get("ModelDataSource", {}).get("S3DataSource", {}).get("S3Uri", "")
        tags = dict(doc.get("tags", {}))
        tags["sagemaker:model_package_arn"] = desc["ModelPackageArn"]
        from deployment.registry.artifact import DIGEST_TAG

        pinned = (desc.get("CustomerMetadataProperties") or {}).get(DIGEST_TAG)
        if pinned:  # the package's own record wins over the (writable) metadata document
            tags[DIGEST_TAG] = pinned
        return ModelVersion(
            name=name,
            version=version,
            status=status,
            artifact_uri=(source.rstrip("/") if source else "") or doc.get("artifact_uri") or containers[0].get("ModelDataUrl", ""),
            registered_by=doc.get("registered_by", ""),
            created_at=doc.get("created_at") or str(desc.get("CreationTime", "")),
            metrics={k: float(v) for k, v in doc.get("metrics", {}).items()},
            tags=tags,
            audit=[AuditEntry(**a) for a in doc.get("audit", [])],
        )

    def package_request(self, name: str, artifact_uri: str, registered_by: str, tags: dict[str, str]) -> dict[str, Any]:
        """The ``CreateModelPackage`` request (boto3 kwargs) for the ``export/`` folder at ``artifact_uri``.

        The folder is uncompressed model data: ``ModelDataSource.S3DataSource`` with
        ``S3DataType: S3Prefix``, ``CompressionType: None`` and a URI ending in ``/`` (``ModelDataUrl``
        would have to name one ``.tar.gz``). SageMaker copies the prefix to ``/opt/ml/model`` in the
        container. The artifact digest and the registrant go to ``CustomerMetadataProperties``
        (values <= 256 characters).
        """
        from deployment.registry.artifact import DIGEST_TAG

        data_uri = artifact_uri.rstrip("/") + "/"
        meta = {
            "registered_by": registered_by[:256],
            "run_url": str(tags.get("run_url", ""))[:256],
            DIGEST_TAG: str(tags.get(DIGEST_TAG, "")),
        }
        return {
            "ModelPackageGroupName": name,
            "ModelPackageDescription": f"registered by {registered_by} from {tags.get('run_url', artifact_uri)}"[:1000],
            "ModelApprovalStatus": ApprovalStatus.PENDING.value,
            "InferenceSpecification": {
                "Containers": [{
                    "Image": self.serving_image,
                    "ModelDataSource": {"S3DataSource": {"S3Uri": data_uri, "S3DataType": "S3Prefix",
                                                         "CompressionType": "None"}},
                }],
                "SupportedContentTypes": ["image/jpeg", "image/png", "application/json"],
                "SupportedResponseMIMETypes": ["application/json"],
            },
            "CustomerMetadataProperties": {k: v for k, v in meta.items() if v},
        }

    # -- ModelRegistry -------------------------------------------------------------------------
    def create_version(self, name: str, artifact_uri: str, registered_by: str,
                       metrics: dict[str, float], tags: dict[str, str]) -> ModelVersion:
        """Create a model package (``PendingManualApproval``) in group ``name`` (created if absent).

        ``artifact_uri`` is the run's ``export/`` folder on S3; the package points at it as
        uncompressed model data (:meth:`package_request`), served by ``DETOPS_SERVING_IMAGE``.
        """
        if not artifact_uri.startswith("s3://"):
            raise ConfigError(f"SageMaker model packages need an s3:// artifact, got {artifact_uri!r}")
        if not self.serving_image:
            from training.settings import CommonSettings, missing_settings

            raise missing_settings([(CommonSettings, "serving_image")], "register a SageMaker model package")
        from botocore.exceptions import ClientError

        try:
            self.sm.describe_model_package_group(ModelPackageGroupName=name)
        except ClientError:
            self._call(f"create model package group {name!r}", self.sm.create_model_package_group,
                       ModelPackageGroupName=name,
                       ModelPackageGroupDescription="detops object detector; versions gated by approval")
        request = self.package_request(name, artifact_uri, registered_by, tags)
        created = _now()
        resp = self._call(f"create model package in {name!r}", self.sm.create_model_package, **request)
        desc = self._call("describe model package", self.sm.describe_model_package,
                          ModelPackageName=resp["ModelPackageArn"])
        version = str(desc["ModelPackageVersion"])
        doc = {"name": name, "version": version, "artifact_uri": artifact_uri, "registered_by": registered_by,
               "created_at": created, "metrics": {k: float(v) for k, v in metrics.items()},
               "tags": {k: str(v) for k, v in tags.items()}, "audit": []}
        storage.write_json(self._doc_url(name, version), doc)
        return self._to_version(name, desc)

    def get_version(self, name: str, version: str) -> ModelVersion:
        """One model package as a :class:`ModelVersion`; NotFoundError when absent."""
        arn = self.package_arn(name, version)
        return self._to_version(name, self._call("describe model package", self.sm.describe_model_package,
                                                 ModelPackageName=arn))

    def list_versions(self, name: str | None = None) -> list[ModelVersion]:
        """Versions of one group, or of every group, oldest first."""
        if name is None:
            groups = self._call("list model package groups", self.sm.list_model_package_groups, MaxResults=100)
            names = sorted(g["ModelPackageGroupName"] for g in groups.get("ModelPackageGroupSummaryList", []))
        else:
            names = [name]
        out = []
        for n in names:
            for p in self._packages(n):
                out.append(self._to_version(n, self._call("describe model package", self.sm.describe_model_package,
                                                          ModelPackageName=p["ModelPackageArn"])))
        return out

    def set_status(self, name: str, version: str, status: ApprovalStatus, entry: AuditEntry) -> ModelVersion:
        """``UpdateModelPackage(ModelApprovalStatus=...)`` when the status changes, and append ``entry``
        to the audit document.

        No UpdateModelPackage is sent when the package already has ``status`` (the audit entries of
        ``register`` keep PendingManualApproval): the CI role that registers holds no
        ``sagemaker:UpdateModelPackage``, only the approver role does.
        """
        arn = self.package_arn(name, version)
        current = self._call("describe model package", self.sm.describe_model_package, ModelPackageName=arn)
        if current.get("ModelApprovalStatus") != ApprovalStatus(status).value:
            self._call("update model package", self.sm.update_model_package, ModelPackageArn=arn,
                       ModelApprovalStatus=ApprovalStatus(status).value,
                       ApprovalDescription=f"{entry.action} by {entry.actor}: {entry.comment}"[:1000])
        url = self._doc_url(name, str(version))
        try:
            doc = storage.read_json(url)
        except FileNotFoundError:
            doc = {"name": name, "version": str(version), "audit": []}
        doc.setdefault("audit", []).append(dict(entry.__dict__))
        storage.write_json(url, doc)
        return self.get_version(name, version)
