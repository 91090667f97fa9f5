"""Field-standard names shared by every stage: split names, pipeline stages, COCO metric names.

One definition each; import them from here rather than spelling the tuples again.
"""

from __future__ import annotations

#: The dataset splits, in order. A run folder holds ``data/annotations/<split>.json``,
#: ``tf_records/<split>-*.tfrecord`` and ``evaluation/<split>/`` for each (DESIGN.md's run layout).
SPLITS: tuple[str, ...] = ("train", "val", "test")

#: Pipeline stages, in order, each one ``detops <stage>`` command; ``run.json``'s ``stages`` records them.
STAGES: tuple[str, ...] = ("prepare", "train", "evaluate", "export")

#: The twelve numbers of pycocotools' ``COCOeval.stats`` (bbox), in its order, as this project's
#: ``metrics.json`` and the registry's metrics name them: ``AP`` (IoU 0.50:0.95), ``AP50``,
#: ``AP75``, ``APs``/``APm``/``APl`` (area < 32², 32²-96², > 96² px), ``AR1``/``AR10``/``AR100``
#: (at most 1/10/100 detections per image), ``ARs``/``ARm``/``ARl`` (AR100 by area).
COCO_METRIC_NAMES: tuple[str, ...] = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)

__all__ = ["COCO_METRIC_NAMES", "SPLITS", "STAGES"]
