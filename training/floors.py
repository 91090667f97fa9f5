"""The absolute quality floor of a trained model: did it learn anything at all?

One implementation, used by the quality gate (:mod:`deployment.registry.gate`, which refuses a run
under the floor with or without an Approved version to compare with) and by the run summary
(:func:`training.report.print_summary`, which leads with the problem). Checked on the test split's
``evaluation/test/metrics.json`` (COCO figures in [0, 1], ``-1`` where undefined, ``per_class`` and
``num_detections`` as :func:`training.evaluate.coco_metrics` writes them) against the run config's
``gate`` section (:class:`training.config.GateConfig`):

* ``detections``: the model made no detection at all on the test split (``num_detections`` 0);
* ``gate.min_ap50``: test AP50 under ``min_ap50`` (or undefined);
* ``gate.min_class_ap50``: some class's test AP50 under ``min_class_ap50`` (classes with AP50
  ``-1``, i.e. without a test box, are not checked).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from training.config import GateConfig
from training.errors import ConfigError, validation_problems

#: What to do about a model under the floor (the summary and the gate's reasons end with it).
ADVICE = "train longer (train.steps) or check the labels"


@dataclass
class FloorCheck:
    """The floor's verdict on one run's test metrics.

    ``min_ap50`` / ``min_class_ap50``: the floor applied (AP50 in [0, 1]); ``ap50``: the test AP50
    (None when absent); ``detections``: the test split's ``num_detections`` (None when absent);
    ``classes_below``: ``{class: AP50}`` of the classes under ``min_class_ap50``; ``failed``: the
    rules that failed, by name (``"detections"``, ``"gate.min_ap50"``, ``"gate.min_class_ap50"``);
    ``reasons``: one sentence per failed rule, the first one leading (without detections, that
    sentence alone: the AP50 figures of a model that found nothing add nothing).
    """

    min_ap50: float
    min_class_ap50: float
    ap50: float | None
    detections: int | None
    classes_below: dict[str, float] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when no rule failed."""
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (with ``passed``)."""
        return {**asdict(self), "passed": self.passed}


def gate_config(config: dict | None, where: str) -> GateConfig:
    """The ``gate`` section of a resolved run config (``run.json`` ``config``); defaults when absent
    (runs made before the section existed).

    Raises:
        ConfigError: the section holds an unknown key or a value out of range, naming ``where``.
    """
    from pydantic import ValidationError

    section = (config or {}).get("gate") or {}
    try:
        return GateConfig.model_validate(section)
    except ValidationError as e:
        problems = "; ".join(f"gate.{p.key}={p.input!r}: {p.msg}" for p in validation_problems(e, GateConfig))
        raise ConfigError(f"{where}: {problems}") from None


def check_floor(test_metrics: dict, floor: GateConfig) -> FloorCheck:
    """Check the test split's metrics (``evaluation/test/metrics.json`` as a dict) against ``floor``.

    A value exactly at a floor passes. Missing ``num_detections`` is not checked (older runs);
    missing or undefined (``-1``) ``AP50`` fails ``gate.min_ap50``.
    """
    ap50 = test_metrics.get("AP50")
    ap50 = float(ap50) if isinstance(ap50, (int, float)) else None
    n = test_metrics.get("num_detections")
    n = int(n) if isinstance(n, (int, float)) else None
    per_class = test_metrics.get("per_class") or {}
    below = {
        name: float(v["AP50"])
        for name, v in per_class.items()
        if isinstance(v, dict) and isinstance(v.get("AP50"), (int, float)) and 0 <= v["AP50"] < floor.min_class_ap50
    }
    out = FloorCheck(floor.min_ap50, floor.min_class_ap50, ap50, n, below)
    if n == 0:
        out.failed.append("detections")
        out.reasons.append("the model made no detections on the test split")
    reasons = [] if n == 0 else out.reasons
    if ap50 is None or ap50 < 0:
        out.failed.append("gate.min_ap50")
        reasons.append("test AP50 is undefined (evaluation/test/metrics.json)")
    elif ap50 < floor.min_ap50:
        out.failed.append("gate.min_ap50")
        reasons.append(f"test AP50 {ap50:.3f} is under the floor gate.min_ap50 {floor.min_ap50:.3f}")
    if below:
        names = ", ".join(f"{k} {v:.3f}" for k, v in below.items())
        out.failed.append("gate.min_class_ap50")
        reasons.append(f"test AP50 of {len(below)} class(es) under the floor gate.min_class_ap50 {floor.min_class_ap50:.3f}: {names}")
    return out
