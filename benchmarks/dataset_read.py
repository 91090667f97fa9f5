"""Reading and validating a labelled dataset, as a ratio against decoding its images once.

What it measures, in alternating rounds (so that a change in machine load hits both sides alike):

- workload: :func:`training.annotations.readers.read_dataset` + :func:`training.annotations.validate.validate`
  on the dataset (BCCD's Pascal VOC by default: 364 images of 640x480, 4,888 boxes), the work of the
  prepare stage before the split;
- reference: reading every image's bytes and decoding it with Pillow (``Image.open(...).load()``),
  one image after another: the least any validator that checks real image sizes has to do.

Prints seconds of both (best of ``--rounds``), the ratio workload / reference and images/s. The
validator decodes with a thread pool, so on 2 cores the ratio can be below 1.

Aims: ratio <= 1.5 (XML parsing, hashing and the checks cost less than half a decode pass), and on an
idle 2-core machine under 10 s for BCCD (the bound that used to sit in
tests/annotations/test_annotation_datasets.py, where a loaded machine could break it).

Usage::

    python benchmarks/dataset_read.py                         # BCCD from $DETOPS_DATASETS
    python benchmarks/dataset_read.py --format coco --path <annotations.json> --images <folder>
    options: --rounds 3 --out result.json

Data: ``$DETOPS_DATASETS/bccd/BCCD`` (else ../shared/datasets beside the checkout).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def workload(fmt: str, path: str, images: str | None) -> tuple[float, int, int]:
    """Seconds of read + validate; and the images and boxes kept."""
    from training.annotations.readers import read_dataset
    from training.annotations.validate import validate

    t0 = time.perf_counter()
    kwargs = {"images": images} if images else {}
    result = validate(read_dataset(fmt, path, **kwargs))
    seconds = time.perf_counter() - t0
    return seconds, result.report.images_kept, result.report.boxes_kept


def reference(image_files: list[Path]) -> float:
    """Seconds to read and decode every image once with Pillow, one after another."""
    from PIL import Image

    t0 = time.perf_counter()
    for f in image_files:
        with Image.open(f) as im:
            im.load()
    return time.perf_counter() - t0


AIM_RATIO = 1.5  # read + validate seconds / decode-reference seconds (see the module docstring)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the figures (and write them as JSON with ``--out``).

    Returns the exit code: 0 when the ratio meets :data:`AIM_RATIO`, 1 when it does not (the miss is
    printed first)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--format", default="voc", help="reader name (voc, csv, coco, bbox_txt, azureml)")
    p.add_argument("--path", default=None, help="annotations (default: BCCD's VOC folder)")
    p.add_argument("--images", default=None, help="image folder, when the reader needs it")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    from training.settings import CommonSettings

    path = args.path or str(CommonSettings.load().datasets_root() / "bccd" / "BCCD")
    image_root = Path(args.images or (Path(path) / "JPEGImages" if Path(path).is_dir() else Path(path).parent))
    image_files = sorted(f for f in image_root.rglob("*") if f.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if not image_files:
        p.error(f"no images under {image_root}")

    work, ref, kept = [], [], (0, 0)
    for _ in range(args.rounds):
        ref.append(reference(image_files))
        seconds, *kept = workload(args.format, path, args.images)
        work.append(seconds)
    w, r = min(work), min(ref)
    result = {
        "dataset": path, "images_kept": kept[0], "boxes_kept": kept[1], "image_files": len(image_files),
        "rounds": args.rounds, "read_validate_s": round(w, 6), "decode_reference_s": round(r, 6),
        "ratio": round(w / r, 3), "images_per_s": round(kept[0] / w, 1),
    }
    result["aim_met"] = w / r <= AIM_RATIO
    if not result["aim_met"]:
        print(f"AIM MISSED: read + validate takes {w / r:.2f}x the decode reference (aim <= {AIM_RATIO})")
    print(f"{path}: {kept[0]} images, {kept[1]} boxes kept")
    print(f"read + validate {w:.2f} s (best of {args.rounds}), decode reference {r:.2f} s for "
          f"{len(image_files)} images: ratio {w / r:.2f} (aim <= {AIM_RATIO}), {kept[0] / w:.0f} images/s")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0 if result["aim_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
