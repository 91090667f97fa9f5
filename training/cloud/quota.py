"""Quota pre-flight: before a cloud job is submitted, compare what it needs with the cloud's quota.

A GPU job over quota does not fail where a user sees it: an Azure ML cluster scales from 0 and the
job sits in the queue waiting for nodes that never come; SageMaker refuses ``CreateTrainingJob``
(``ResourceLimitExceeded``) only after ``detops submit`` has already prepared and uploaded the run.
``detops submit --backend azureml|sagemaker`` therefore asks the cloud's own quota APIs first and
stops with the numbers (needed, in use, limit, how to ask for more) -- ``--skip-preflight`` skips it,
``--dry-run`` never calls the cloud.

One result type (:class:`QuotaCheck`), one decision (:func:`enforce`), two thin adapters:

- **SageMaker** (boto3): the limit is the Service Quotas value named
  ``"<instance type> for [spot ]training job usage"`` or ``"<instance type> for endpoint usage"``
  (``ListServiceQuotas``, then ``ListAWSDefaultServiceQuotas`` for a quota never changed), unit:
  instances. In use: the instances of the ``InProgress`` training jobs of that instance type and
  spot-ness (``ListTrainingJobs`` + ``DescribeTrainingJob``), resp. of the ``InService`` endpoints
  (``DescribeEndpoint`` + ``DescribeEndpointConfig``).
- **Azure ML** (azure-ai-ml): the cluster (``MLClient.compute.get``) gives VM size, tier
  (dedicated / low priority), ``max_instances`` and region; ``compute.list_sizes`` maps the VM size
  to its family and vCPUs; ``compute.list_usage`` (the workspace region's usages and quotas) gives
  ``current_value`` / ``limit`` in vCPUs: per VM family (``standardNCASv3_T4Family``, "Standard
  NCASv3_T4 Family Cluster Dedicated vCPUs") and regional ("Total Cluster Dedicated Regional
  vCPUs"; low priority has one pooled regional quota, "Total Cluster LowPriority Regional vCPUs").
  Needed: ``nodes x vCPUs of the VM size``; also ``nodes <= max_instances`` of the cluster.

What cannot be checked (unknown instance type or VM size, no matching quota, the caller's role may
not read quotas) gives a one-line warning and the submission goes on: the pre-flight never blocks
a job because it could not look.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from training.errors import GateError


@dataclass
class QuotaCheck:
    """One quota compared with what a job needs.

    ``needed``, ``in_use`` and ``limit`` are in ``unit`` (``"instances"`` on SageMaker, ``"vCPUs"``
    on Azure ML, ``"nodes"`` for a cluster's ``max_instances``); ``in_use`` is None when the usage
    could not be read (then ``available`` is the whole limit). ``request`` tells how to get more.
    """

    cloud: str
    quota: str
    unit: str
    needed: int
    limit: float
    in_use: float | None = None
    request: str = ""

    @property
    def available(self) -> float:
        """``limit - in_use`` (the whole ``limit`` when the usage is unknown), never below 0."""
        return max(0.0, self.limit - (self.in_use or 0))

    @property
    def ok(self) -> bool:
        """True when ``needed`` fits into ``available``."""
        return self.needed <= self.available

    def line(self) -> str:
        """``<quota>: needed N <unit>, available A (limit L, in use U)`` -- numbers as the cloud gives them."""
        used = "unknown" if self.in_use is None else f"{self.in_use:g}"
        return (f"{self.quota}: needed {self.needed} {self.unit}, available {self.available:g} "
                f"(limit {self.limit:g}, in use {used})")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (with ``available`` and ``ok``)."""
        return {**asdict(self), "available": self.available, "ok": self.ok}


@dataclass
class Preflight:
    """The checks made for one submission and the warnings about what could not be checked."""

    checks: list[QuotaCheck] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (goes into the submission's ``details["preflight"]``)."""
        return {"checks": [c.to_dict() for c in self.checks], "warnings": list(self.warnings)}


class QuotaError(GateError):
    """The job needs more than the quota leaves (exit code 4, like every refusing check).

    The message (one line, as every detops error) names each short quota with needed / available /
    limit / in use and how to ask for more; ``short`` holds those checks.
    """

    def __init__(self, what: str, short: list[QuotaCheck]) -> None:
        self.short = short
        parts = [f"{c.line()}; request more: {c.request}" for c in short]
        super().__init__(f"quota pre-flight: {what} does not fit the quota -- " + " | ".join(parts)
                         + " (--skip-preflight submits anyway)")


def enforce(result: Preflight, what: str, console: Any = None) -> dict[str, Any]:
    """Print the warnings and checks of ``result`` on ``console``; raise when a quota is short.

    Returns ``result.to_dict()`` when every check passed.

    Raises:
        QuotaError: at least one check has ``needed > available`` (all short ones are named).
    """
    if console is not None:
        from rich.markup import escape

        for w in result.warnings:  # escaped: a cloud's error text may hold [brackets]
            console.print(f"[yellow]quota pre-flight warning[/]: {escape(w)}", highlight=False)
        for c in result.checks:
            console.print(f"quota pre-flight {'ok' if c.ok else 'SHORT'}: {c.line()}", markup=False, highlight=False)
    short = [c for c in result.checks if not c.ok]
    if short:
        raise QuotaError(what, short)
    return result.to_dict()


# -- SageMaker (AWS Service Quotas) ---------------------------------------------------------------

#: Service Quotas console page of one SageMaker quota (region chosen in the console).
AWS_CONSOLE = "https://console.aws.amazon.com/servicequotas/home/services/sagemaker/quotas/{code}"


def sagemaker_quota_name(instance_type: str, usage: str) -> str:
    """The Service Quotas name of a SageMaker per-instance-type quota.

    ``usage`` is ``"training job"``, ``"spot training job"`` or ``"endpoint"``:
    ``sagemaker_quota_name("ml.g5.xlarge", "spot training job")`` ->
    ``"ml.g5.xlarge for spot training job usage"`` (the names the Service Quotas console shows).
    """
    return f"{instance_type} for {usage} usage"


def find_aws_quota(quotas_client: Any, name: str, service_code: str = "sagemaker") -> dict[str, Any] | None:
    """The ``ServiceQuota`` named ``name`` (applied value, else the AWS default), or None.

    Pages through ``ListServiceQuotas`` and then ``ListAWSDefaultServiceQuotas``; botocore errors
    propagate (the caller turns them into a warning).
    """
    for op in ("list_service_quotas", "list_aws_default_service_quotas"):
        for page in quotas_client.get_paginator(op).paginate(ServiceCode=service_code):
            for quota in page.get("Quotas", []):
                if quota.get("QuotaName") == name:
                    return quota
    return None


def _describe_or_none(call: Any, skipped: list[str], name: str, **kw: Any) -> dict[str, Any] | None:
    """``call(**kw)``, or None (``name`` added to ``skipped``) when the role may not describe it:
    a CI role may describe only the stack's own jobs / endpoints."""
    from botocore.exceptions import ClientError

    try:
        return call(**kw)
    except ClientError:
        skipped.append(name)
        return None


def _training_instances_in_use(sm: Any, instance_type: str, spot: bool, skipped: list[str]) -> int:
    """Instances of ``instance_type`` held by ``InProgress`` training jobs of the same spot-ness
    (jobs that cannot be described are named in ``skipped``, not counted)."""
    total = 0
    for page in sm.get_paginator("list_training_jobs").paginate(StatusEquals="InProgress"):
        for summary in page.get("TrainingJobSummaries", []):
            name = summary["TrainingJobName"]
            desc = _describe_or_none(sm.describe_training_job, skipped, name, TrainingJobName=name)
            rc = (desc or {}).get("ResourceConfig", {})
            if desc and rc.get("InstanceType") == instance_type and bool(desc.get("EnableManagedSpotTraining")) == spot:
                total += int(rc.get("InstanceCount", 1))
    return total


def _endpoint_instances_in_use(sm: Any, instance_type: str, skipped: list[str]) -> int:
    """Instances of ``instance_type`` serving the ``InService`` endpoints (current count per variant;
    endpoints that cannot be described are named in ``skipped``, not counted)."""
    total = 0
    for page in sm.get_paginator("list_endpoints").paginate(StatusEquals="InService"):
        for summary in page.get("Endpoints", []):
            name = summary["EndpointName"]
            desc = _describe_or_none(sm.describe_endpoint, skipped, name, EndpointName=name)
            config = desc and _describe_or_none(sm.describe_endpoint_config, skipped, name,
                                                EndpointConfigName=desc["EndpointConfigName"])
            if not desc or not config:
                continue
            types = {v["VariantName"]: v.get("InstanceType") for v in config.get("ProductionVariants", [])}
            for v in desc.get("ProductionVariants", []):
                if types.get(v["VariantName"]) == instance_type:
                    total += int(v.get("CurrentInstanceCount", 0))
    return total


def sagemaker_preflight(
    instance_type: str, count: int, *, usage: str = "training job", quotas_client: Any = None, sm_client: Any = None,
) -> Preflight:
    """Check the SageMaker quota for ``count`` instances of ``instance_type``.

    Args:
        usage: ``"training job"``, ``"spot training job"`` (managed spot training has its own
            quota) or ``"endpoint"``.
        quotas_client, sm_client: boto3 ``service-quotas`` / ``sagemaker`` clients (default: from
            :func:`training.cloud.aws.client`).

    Returns:
        one check, or a warning when the quota is not found or cannot be read. The usage is left
        out (``in_use=None``, with a warning) when the jobs/endpoints cannot be listed.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    from training.cloud import aws

    result = Preflight()
    name = sagemaker_quota_name(instance_type, usage)
    try:
        quota = find_aws_quota(quotas_client or aws.client("service-quotas"), name)
    except (ClientError, BotoCoreError) as e:
        result.warnings.append(f"could not read the SageMaker quota {name!r} (Service Quotas: {e}); not checked")
        return result
    if quota is None:
        result.warnings.append(f"no SageMaker quota named {name!r} in this region (unknown instance type?); not checked")
        return result
    in_use: int | None = None
    skipped: list[str] = []
    try:
        sm = sm_client or aws.client("sagemaker")
        in_use = (_endpoint_instances_in_use(sm, instance_type, skipped) if usage == "endpoint"
                  else _training_instances_in_use(sm, instance_type, usage.startswith("spot"), skipped))
    except (ClientError, BotoCoreError) as e:
        result.warnings.append(f"could not count the {instance_type} instances in use ({e}); compared with the whole limit")
    if skipped:
        result.warnings.append(f"not counted (may not describe them): {', '.join(skipped)}")
    code = quota.get("QuotaCode", "<quota code>")
    desired = int((in_use or 0) + count)
    request = (f"Service Quotas console {AWS_CONSOLE.format(code=code)} or `aws service-quotas "
               f"request-service-quota-increase --service-code sagemaker --quota-code {code} --desired-value {desired}`")
    if quota.get("Adjustable") is False:
        request = f"{name!r} is not adjustable: choose another instance type"
    result.checks.append(QuotaCheck("aws", name, "instances", count, float(quota.get("Value", 0)), in_use, request))
    return result


# -- Azure ML (workspace usages and quotas) -------------------------------------------------------

#: Azure ML's quota page (per subscription and region) in the studio; the portal's "Quotas" blade
#: (Microsoft.MachineLearningServices provider) shows the same numbers.
AZURE_QUOTA_PAGE = "https://ml.azure.com/quota"


def _attr(obj: Any, *names: str) -> Any:
    """First attribute or key of ``obj`` among ``names`` that is not None.

    azure-ai-ml's ``Usage._from_rest_object`` / ``VmSize._from_rest_object`` copy the REST
    model's ``as_dict()`` into the entity, so the installed SDK returns ``currentValue`` / ``vCPUs``
    (REST names) next to its own ``current_value`` / ``v_cp_us`` left None, and ``name`` as a dict
    (tested against the SDK's own conversion).
    """
    for n in names:
        value = obj.get(n) if isinstance(obj, dict) else getattr(obj, n, None)
        if value is not None:
            return value
    return None


def _norm(text: str | None) -> str:
    return re.sub(r"[^a-z0-9]", "", (text or "").lower())


def _usage_names(usage: Any) -> list[str]:
    """Normalized ``name.value`` and ``name.localized_value`` of a usage entry."""
    name = _attr(usage, "name")
    return [n for n in (_norm(_attr(name, "value")), _norm(_attr(name, "localized_value", "localizedValue"))) if n] if name else []


def _matching(usages: Iterable[Any], test, workspace: str | None) -> list[Any]:
    """The usage entries whose name passes ``test``: subscription-wide ones and those of
    ``workspace`` (never another workspace's), without unset limits (``-1``)."""
    out = []
    for u in usages:
        uid = str(_attr(u, "id") or "").lower()
        other_ws = "/workspaces/" in uid and (not workspace or f"/workspaces/{workspace.lower()}/" not in uid)
        if not other_ws and float(_attr(u, "limit") or 0) >= 0 and any(test(n) for n in _usage_names(u)):
            out.append(u)
    return out


def _azure_check(usage: Any, needed: int, request: str) -> QuotaCheck:
    name = _attr(usage, "name")
    label = _attr(name, "localized_value", "localizedValue") or _attr(name, "value")
    scope = " (workspace)" if "/workspaces/" in str(_attr(usage, "id") or "") else ""
    return QuotaCheck("azure", f"{label}{scope}", "vCPUs", needed, float(_attr(usage, "limit") or 0),
                      float(_attr(usage, "current_value", "currentValue") or 0), request)


def azureml_preflight(
    ml_client: Any, compute: str, nodes: int, *, workspace: str | None = None, subscription_id: str | None = None,
) -> Preflight:
    """Check that cluster ``compute`` can get ``nodes`` nodes within its ``max_instances`` and the quota.

    Args:
        ml_client: an ``azure.ai.ml.MLClient`` of the workspace (only ``.compute`` is used).
        compute: the compute cluster name (``DETOPS_AML_COMPUTE``).
        nodes: nodes the job asks for at once (the ``train`` step's ``instance_count``).
        workspace: the workspace name; its workspace-level quota entries count, other workspaces' do not.
        subscription_id: named in the ``az quota create`` hint when known.

    Returns:
        the checks (cluster size; the VM family quota and the regional total for a dedicated
        cluster, the regional low-priority total for a low-priority one), or warnings when the
        cluster, VM size or quota entries cannot be found or read.
    """
    result = Preflight()
    try:
        cluster = ml_client.compute.get(compute)
        location = getattr(cluster, "location", None) or None
        sizes = list(ml_client.compute.list_sizes(location=location))
        usages = list(ml_client.compute.list_usage(location=location))
    except Exception as e:  # azure.core.exceptions.* (not found, no permission): a warning, never a crash
        result.warnings.append(f"could not read cluster {compute!r} or the Azure ML quotas ({type(e).__name__}: {e}); not checked")
        return result
    vm_size = str(getattr(cluster, "size", "") or "")
    max_nodes = getattr(cluster, "max_instances", None)
    if max_nodes is not None:
        result.checks.append(QuotaCheck(
            "azure", f"cluster {compute} max_instances", "nodes", nodes, float(max_nodes), None,
            f"raise the cluster's max_instances (infra: gpu_max_nodes) or submit with --nodes {max_nodes}"))
    size = next((s for s in sizes if _norm(_attr(s, "name")) == _norm(vm_size)), None)
    vcpus = _attr(size, "v_cp_us", "vCPUs") if size is not None else None
    family = _attr(size, "family") if size is not None else None
    if not vcpus or not family:
        result.warnings.append(f"VM size {vm_size!r} of cluster {compute!r} not in the region's VM sizes; quota not checked")
        return result
    needed = int(nodes) * int(vcpus)
    low = _norm(str(getattr(cluster, "tier", "") or "")) == "lowpriority"
    where = f"/subscriptions/{subscription_id or '<subscription>'}/providers/Microsoft.MachineLearningServices/locations/{location or '<region>'}"
    if low:
        found = _matching(usages, lambda n: "lowpriority" in n and "total" in n, workspace)
        resource, kind = "TotalLowPriorityCores", "lowPriority"
    else:
        fam = _norm(family)
        found = _matching(usages, lambda n: n.startswith(fam), workspace) + _matching(
            usages, lambda n: n in ("totaldedicatedcores", "totalclusterdedicatedregionalvcpus"), workspace)
        resource, kind = family, "dedicated"
    if not found:
        result.warnings.append(f"no Azure ML quota entry for {'low-priority' if low else family} vCPUs in {location or 'the workspace region'}; not checked")
        return result
    for usage in found:
        limit = float(_attr(usage, "current_value", "currentValue") or 0) + needed
        request = (f"Azure ML studio {AZURE_QUOTA_PAGE} (or the portal's Quotas page) -> request quota, or "
                   f"`az quota create --resource-name {resource} --scope {where} --resource-type {kind} "
                   f"--limit-object value={int(limit)}`")
        result.checks.append(_azure_check(usage, needed, request))
    return result
