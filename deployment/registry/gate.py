"""The quality gate a candidate run must pass before it may be registered.

A candidate passes when all hold:

1. it clears the absolute floor of its run config's ``gate`` section (:mod:`training.floors`),
   whether or not an Approved version exists: it made detections on the test split, its test AP50
   is at least ``gate.min_ap50`` and every class's test AP50 at least ``gate.min_class_ap50``;
2. its test mAP (COCO AP@[.5:.95], ``evaluation/test/metrics.json`` ``AP``) is not worse than the
   current Approved version's ``test/AP`` by more than ``margin`` (absolute, in AP units [0, 1]);
   with no Approved version yet there is nothing to compare and this check passes;
3. its TFLite parity check passed: every ``passed`` field of ``export/parity.json`` (``float``,
   ``int8`` and the top-level verdict when present, written by the export stage, see
   docs/contracts.md) is true. A missing parity file
   fails the gate: an unchecked export is not a passed check. A variant whose check was not
   measurable (``"measurable": false``: the SavedModel made fewer than
   ``export.parity_min_detections`` detections on the test split) fails with that reason.

The decision (with its numbers) is returned as a :class:`GateDecision`, which the approval service
stores with the version. Nothing here can be overridden; only
:meth:`deployment.registry.approval.ApprovalService.register` with ``force`` (by a named person, with
a comment, audited) registers a candidate that failed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from training import storage
from training.errors import ConfigError
from training.floors import ADVICE, check_floor, gate_config
from training.tracking import read_manifest, read_metrics

#: Default margin (absolute test AP) when neither the caller nor ``$DETOPS_GATE_MARGIN`` sets one.
DEFAULT_MARGIN = 0.01
GATE_METRIC = "test/AP"


def default_margin() -> float:
    """``$DETOPS_GATE_MARGIN`` as a float, else :data:`DEFAULT_MARGIN` (0.01 AP)."""
    from training.settings import CommonSettings

    return CommonSettings.load().gate_margin  # ConfigError naming DETOPS_GATE_MARGIN when not a number


@dataclass
class GateDecision:
    """Outcome of the quality gate, with the numbers it was decided on.

    ``candidate_AP`` / ``baseline_AP`` are COCO AP@[.5:.95] on the test split in [0, 1]
    (``baseline_*`` are None when there is no Approved version); ``parity`` holds each variant's
    ``passed`` flag from ``export/parity.json`` and ``parity_not_measurable`` the variants whose
    check was not measurable; ``floor`` is the absolute floor's verdict
    (:meth:`training.floors.FloorCheck.to_dict`: the floor, test AP50, detections, the classes
    under the floor and the rules that ``failed``; None without test metrics); ``reasons`` lists
    why it failed (empty if passed).
    """

    passed: bool
    metric: str
    margin: float
    candidate_AP: float | None
    baseline_version: str | None
    baseline_AP: float | None
    parity: dict[str, bool] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    floor: dict[str, Any] | None = None
    parity_not_measurable: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def _parity_doc(run_url: str) -> dict:
    """``<run>/export/parity.json`` as a dict; {} if the file is absent (DataError when malformed)."""
    url = storage.join(run_url, "export", "parity.json")
    return storage.read_json_object(url) if storage.exists(url) else {}


def _parity_flags(doc: dict) -> dict[str, bool]:
    flags = {k: v.get("passed") is True for k, v in doc.items() if isinstance(v, dict) and "passed" in v}
    if flags and "passed" in doc:  # the export's overall verdict, when it writes one
        flags["overall"] = doc["passed"] is True
    return flags


def read_parity(run_url: str) -> dict[str, bool]:
    """``{variant: passed}`` from ``<run>/export/parity.json``; {} if the file is absent.

    Raises :class:`DataError` naming the file when it is not a JSON object of objects.
    """
    return _parity_flags(_parity_doc(run_url))


def _parity_reasons(doc: dict, parity: dict[str, bool]) -> tuple[list[str], list[str]]:
    """``(reasons, variants not measurable)`` of a parity document and its flags; the overall
    verdict gets its own reason only when no variant explains it."""
    if not parity:
        return ["no TFLite parity check (export/parity.json missing or without 'passed' fields)"], []
    unmeasurable = sorted(k for k, v in doc.items() if isinstance(v, dict) and v.get("measurable") is False)
    reasons = []
    for variant in unmeasurable:
        v = doc[variant]
        reasons.append(
            f"TFLite parity not measurable for {variant!r}: the SavedModel made {v.get('detections_savedmodel')} "
            f"detections on the test split, fewer than export.parity_min_detections {v.get('min_detections')} "
            "(export/parity.json)"
        )
    for variant, ok in sorted(parity.items()):
        if not ok and variant not in unmeasurable and not (variant == "overall" and reasons):
            reasons.append(f"TFLite parity check failed for {variant!r} (export/parity.json)")
    return reasons, unmeasurable


def _floor(run_url: str) -> dict[str, Any] | None:
    """The floor's verdict (:func:`training.floors.check_floor`) on the run's test metrics, with
    the floor of its ``run.json`` config (defaults without one); None without test metrics."""
    url = storage.join(run_url, "evaluation", "test", "metrics.json")
    if not storage.exists(url):
        return None
    manifest_url = storage.join(run_url, "run.json")
    config = read_manifest(run_url).get("config") if storage.exists(manifest_url) else None
    floor = gate_config(config if isinstance(config, dict) else None, where=manifest_url)
    return check_floor(storage.read_json_object(url, "a JSON object of COCO metrics"), floor).to_dict()


def evaluate_gate(
    run_url: str,
    baseline_version: str | None,
    baseline_metrics: dict[str, float] | None,
    margin: float | None = None,
) -> GateDecision:
    """Decide whether the run folder ``run_url`` may be registered against the Approved baseline.

    Args:
        run_url: candidate run folder (local path or fsspec URL).
        baseline_version / baseline_metrics: the current Approved version and its metrics
            (flat, ``test/AP`` ...), or None when nothing is approved yet.
        margin: allowed drop in test AP (absolute, >= 0); default :func:`default_margin`.
    """
    margin = default_margin() if margin is None else float(margin)
    if not margin >= 0:
        raise ConfigError(f"gate margin must be >= 0, got {margin}")
    reasons: list[str] = []
    candidate = read_metrics(run_url).get(GATE_METRIC)
    if candidate is None or candidate < 0:
        reasons.append(f"candidate has no {GATE_METRIC} (evaluation/test/metrics.json missing or AP undefined)")
    floor = _floor(run_url)
    if floor and floor["failed"]:
        reasons.append("; ".join(floor["reasons"]) + f": {ADVICE}")
    baseline = (baseline_metrics or {}).get(GATE_METRIC) if baseline_version else None
    if baseline_version and baseline is None:
        reasons.append(f"Approved version {baseline_version} has no {GATE_METRIC} to compare with")
    if candidate is not None and baseline is not None and candidate < baseline - margin - 1e-12:
        reasons.append(
            f"{GATE_METRIC} {candidate:.4f} is worse than Approved version {baseline_version}'s "
            f"{baseline:.4f} by {baseline - candidate:.4f} > margin {margin:.4f}"
        )
    doc = _parity_doc(run_url)
    parity = _parity_flags(doc)
    parity_reasons, unmeasurable = _parity_reasons(doc, parity)
    reasons.extend(parity_reasons)
    return GateDecision(
        passed=not reasons,
        metric=GATE_METRIC,
        margin=margin,
        candidate_AP=candidate,
        baseline_version=baseline_version,
        baseline_AP=baseline,
        parity=parity,
        reasons=reasons,
        floor=floor,
        parity_not_measurable=unmeasurable,
    )
