"""benchmarks/dataset_read.py: read + validate time against a decode-only reference, on made-up VOC data."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image


def _voc(root: Path, n: int) -> Path:
    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations").mkdir()
    for i in range(n):
        Image.new("RGB", (64, 48), (10 * i, 80, 160)).save(root / "JPEGImages" / f"im_{i}.jpg")
        boxes = "".join(
            f"<object><name>cell</name><bndbox><xmin>{2 + k}</xmin><ymin>3</ymin><xmax>{20 + k}</xmax>"
            f"<ymax>30</ymax></bndbox></object>"
            for k in range(i % 3 + 1)
        )
        (root / "Annotations" / f"im_{i}.xml").write_text(
            f"<annotation><filename>im_{i}.jpg</filename><size><width>64</width><height>48</height>"
            f"<depth>3</depth></size>{boxes}</annotation>"
        )
    return root


def test_the_benchmark_counts_the_dataset_and_reports_the_ratio_of_its_times(tmp_path, capsys, load_benchmark):
    bench = load_benchmark("dataset_read")
    bench.AIM_RATIO = float("inf")  # the exit code's aim is tested below; here any ratio meets it
    data = _voc(tmp_path / "tiny voc", n=5)
    out = tmp_path / "result.json"
    assert bench.main(["--path", str(data), "--rounds", "2", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert (r["images_kept"], r["boxes_kept"], r["image_files"]) == (5, 1 + 2 + 3 + 1 + 2, 5)
    assert r["read_validate_s"] > 0 and r["decode_reference_s"] > 0
    assert abs(r["ratio"] - r["read_validate_s"] / r["decode_reference_s"]) < 0.01 * r["ratio"] + 0.002
    assert f"ratio {r['ratio']:.2f}" in capsys.readouterr().out


def test_a_missed_aim_sets_the_exit_code_and_leads_the_output(tmp_path, capsys, load_benchmark):
    bench = load_benchmark("dataset_read")
    bench.AIM_RATIO = 0.0  # no ratio of two positive times meets it
    data = _voc(tmp_path / "tiny voc", n=2)
    out = tmp_path / "result.json"
    assert bench.main(["--path", str(data), "--rounds", "1", "--out", str(out)]) == 1
    assert json.loads(out.read_text())["aim_met"] is False
    assert capsys.readouterr().out.splitlines()[0].startswith("AIM MISSED: read + validate takes")
