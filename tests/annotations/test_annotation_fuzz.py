"""Property test of the five readers on mutated real files (issue 33): a malformed value is a record of the
quality report, never a crash.

Each reader gets a small real dataset built from the shared datasets (two BCCD images with their VOC
files, as COCO JSON, Azure ML JSONL and BBox-Label-Tool txt converted from them; two pinochle images with
their rows of ``train_labels.csv``), with one mutation drawn by hypothesis: a value replaced by a number
out of range, a value of the wrong type, a deep nesting, the file re-encoded or with bytes inserted, an
image replaced by a symbolic link (out of the dataset, dangling, a loop, a folder), or a huge file.

A CSV file's header row is left alone by the mutations that change values or insert bytes: it is the
file's layout, and a header that does not name the columns the reader needs is a usage error by design
(:class:`~training.errors.ConfigError`, exit 2, naming the file and the ``columns``/``class_map`` option
to pass; ``tests/annotations/test_annotation_readers.py``). Re-encodings change it too (the file is then
rejected as unreadable before its layout is read).

The property, what ``detops prepare`` relies on: reading and validating either raises a
:class:`~training.errors.DataError` (exit 3) naming the annotation file, or returns a report whose
counts add up, every rejection naming its file; and when nothing is reported, no box went missing.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from training.annotations import ValidationPolicy, read_dataset, to_coco, validate
from training.errors import DetopsError, ExitCode

MAX_IMAGE_BYTES = 400_000  # real images are 25-160 KB; the "huge image" mutation pads past this
BCCD = ("BloodImage_00007", "BloodImage_00010")
PINOCHLE = ("cam_image1.jpg", "cam_image10.jpg")


@dataclass(repr=False)
class Base:
    """One reader's real dataset: ``files`` (relative path -> bytes) and how to read it."""

    format: str
    files: dict[str, bytes]
    annotation: str  # the annotation file that mutations change
    images: list[str]  # the image files (relative paths)
    options: dict
    boxes: int  # boxes kept by validation before any mutation

    def __repr__(self) -> str:  # hypothesis prints its arguments; the file bytes would be megabytes
        return f"Base({self.format!r}, {self.annotation!r}, {self.boxes} boxes)"


def _bccd_voc(shared: Path) -> dict[str, bytes]:
    root = shared / "bccd" / "BCCD"
    files = {}
    for stem in BCCD:
        files[f"Annotations/{stem}.xml"] = (root / "Annotations" / f"{stem}.xml").read_bytes()
        files[f"JPEGImages/{stem}.jpg"] = (root / "JPEGImages" / f"{stem}.jpg").read_bytes()
    return files


def _write(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def _bases(shared: Path) -> dict[str, Base]:
    voc = _bccd_voc(shared)
    jpegs = {k: v for k, v in voc.items() if k.endswith(".jpg")}
    with tempfile.TemporaryDirectory() as tmp:
        _write(Path(tmp), voc)
        clean = validate(read_dataset("voc", Path(tmp))).dataset
    records = clean.records
    coco = json.dumps(to_coco(clean), indent=1).encode()
    jsonl = "".join(
        json.dumps({
            "image_url": f"AmlDatastore://workspaceblobstore/bccd/{r.image}",
            "image_details": {"format": "jpg", "width": f"{r.width}px", "height": f"{r.height}px"},
            "label": [{"label": b.label, "topX": b.xmin / r.width, "topY": b.ymin / r.height,
                       "bottomX": b.xmax / r.width, "bottomY": b.ymax / r.height, "isCrowd": 0} for b in r.boxes],
        }) + "\n"
        for r in records
    ).encode()
    txts = {
        f"labels/{Path(r.image).stem}.txt": (
            f"{len(r.boxes)}\n" + "".join(f"{b.xmin:g} {b.ymin:g} {b.xmax:g} {b.ymax:g} {b.label}\n" for b in r.boxes)
        ).encode()
        for r in records
    }
    pin = shared / "pinochle_cards" / "images"
    lines = (pin / "train_labels.csv").read_text().splitlines()
    rows = [lines[0], *(ln for ln in lines[1:] if ln.split(",")[0] in PINOCHLE)]
    csv_files = {"labels.csv": ("\n".join(rows) + "\n").encode()}
    csv_files.update({f"images/{n}": (pin / "train" / n).read_bytes() for n in PINOCHLE})
    n_boxes = clean.num_boxes
    return {
        "voc": Base("voc", voc, f"Annotations/{BCCD[0]}.xml", list(jpegs), {"path": "."}, n_boxes),
        "coco": Base("coco", {**jpegs, "instances.json": coco}, "instances.json", list(jpegs), {"path": "instances.json"}, n_boxes),
        "azureml": Base("azureml", {**jpegs, "labels.jsonl": jsonl}, "labels.jsonl", list(jpegs),
                        {"path": "labels.jsonl", "images": "."}, n_boxes),
        "bbox_txt": Base("bbox_txt", {**txts, **{f"images/{Path(k).name}": v for k, v in jpegs.items()}},
                         f"labels/{BCCD[0]}.txt", [f"images/{s}.jpg" for s in BCCD], {"path": "."}, n_boxes),
        "csv": Base("csv", csv_files, "labels.csv", [f"images/{n}" for n in PINOCHLE],
                    {"path": "labels.csv", "images": "images"}, len(rows) - 1),
    }


@pytest.fixture(scope="module")
def bases(shared_datasets: Path) -> dict[str, Base]:
    return _bases(shared_datasets)


# -- mutations ------------------------------------------------------------------------------------------

_NUMBERS = ["inf", "-inf", "nan", "1e400", "-1e400", "1" + "0" * 400, "9" * 5000, "-1", "0", "2147483648", "1e-320"]
_TEXTS = ["", " ", "abc", "\x00", "é", "\U0001f600", "a,b", "<x>", "\\..\\..\\x.jpg", "../../x.jpg", "/etc/passwd",
          "<huge>"]
_JSON_VALUES = [float("inf"), float("-inf"), float("nan"), 10**400, -(10**400), 2**63, -1, 0, True, False, None,
                [], {}, [1, 2], {"a": 1}, "", "abc", "\x00", "é", "1e400", "<huge>"]
HUGE = "x" * 200_000  # "<huge>" in a mutation (expanded when applied: hypothesis prints mutations)


def _nested(kind: str, depth: int) -> str:
    return ("[" * depth + "]" * depth) if kind == "list" else ('{"a":' * depth + "1" + "}" * depth)


@st.composite
def mutations(draw):
    """``(kind, *arguments)`` of one mutation (applied by :func:`_apply`)."""
    kind = draw(st.sampled_from(["value", "type", "nesting", "encoding", "symlink", "huge"]))
    pick = draw(st.integers(0, 10**6))  # which value / offset, modulo what the file has
    if kind == "value":
        return ("value", pick, draw(st.sampled_from(_NUMBERS + _TEXTS)))
    if kind == "type":
        return ("type", pick, draw(st.sampled_from(_JSON_VALUES)))
    if kind == "nesting":
        return ("nesting", pick, draw(st.sampled_from(["list", "dict"])), draw(st.sampled_from([5, 200, 3000])))
    if kind == "encoding":
        return ("encoding", pick, draw(st.sampled_from(["utf-16", "utf-32", "cp1252", "bytes", "nul", "bom"])))
    if kind == "symlink":
        return ("symlink", pick, draw(st.sampled_from(["outside", "dangling", "loop", "folder", "device"])))
    return ("huge", pick, draw(st.sampled_from(["image", "annotation", "line"])))


def _replace_text_value(fmt: str, text: str, pick: int, new: str) -> str:
    """Replace one value of a text format: an XML element's text, a CSV data cell, a txt token."""
    if fmt == "voc":
        spans = [m.span(1) for m in re.finditer(r">([^<>\s][^<>]*)<", text)]
    elif fmt == "csv":  # data cells only: the header is the layout (see the module docstring)
        header_end = text.index("\n") + 1
        spans = [(m.start() + header_end, m.end() + header_end) for m in re.finditer(r"[^,\n]+", text[header_end:])]
    else:
        spans = [m.span() for m in re.finditer(r"\S+", text)]
    a, b = spans[pick % len(spans)]
    return text[:a] + new + text[b:]


def _json_paths(node, path=()):
    yield path
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _json_paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _json_paths(v, (*path, i))


def _replace_json_value(fmt: str, text: str, pick: int, new_json: str) -> str:
    """Replace one node (leaf or not, never the root) of a JSON file or of one JSONL line by ``new_json``."""
    if fmt == "azureml":
        lines = text.splitlines()
        i = pick % len(lines)
        lines[i] = _replace_json_value("coco", lines[i], pick // len(lines), new_json)
        return "\n".join(lines) + "\n"
    data = json.loads(text)
    paths = list(_json_paths(data))[1:]
    path = paths[pick % len(paths)]
    marker = "\u2603MUTATED\u2603"
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = marker
    return json.dumps(data).replace(json.dumps(marker), new_json)


def _mutate_text(base: Base, pick: int, new: object) -> bytes:
    new = HUGE if new == "<huge>" else new
    text = base.files[base.annotation].decode("utf-8")
    if base.format in ("coco", "azureml"):
        new_json = new if isinstance(new, str) and new.startswith(("[", "{")) else json.dumps(new)
        return _replace_json_value(base.format, text, pick, new_json).encode("utf-8", "surrogateescape")
    return _replace_text_value(base.format, text, pick, str(new)).encode("utf-8")


def _encode(data: bytes, pick: int, how: str, skip: int = 0) -> bytes:
    """``data`` re-encoded (``utf-16``, ``utf-32``, ``cp1252``, a UTF-8 ``bom``) or with a NUL (``nul``)
    or invalid UTF-8 (``bytes``) inserted at an offset past the first ``skip`` bytes."""
    text = data.decode("utf-8")
    if how in ("utf-16", "utf-32"):
        return text.encode(how)
    if how == "cp1252":
        return text.replace("e", "\u00e9", 1).encode("cp1252", "replace")
    if how == "bom":
        return b"\xef\xbb\xbf" + data
    at = skip + pick % (len(data) - skip + 1)
    return data[:at] + (b"\x00" if how == "nul" else b"\xff\xfe\xc3") + data[at:]


def _symlink(root: Path, outside: Path, image: str, how: str) -> None:
    path = root / image
    path.unlink()
    if how == "outside":
        path.symlink_to(outside)
    elif how == "dangling":
        path.symlink_to(root / "no such file.jpg")
    elif how == "loop":
        path.symlink_to(path)
    elif how == "folder":
        path.symlink_to(root, target_is_directory=True)
    else:
        path.symlink_to("/dev/zero")


def _apply(base: Base, root: Path, outside: Path, mutation: tuple) -> None:
    """Write ``base`` under ``root`` with ``mutation`` applied."""
    kind, pick, *args = mutation
    files = dict(base.files)
    if kind == "value":
        files[base.annotation] = _mutate_text(base, pick, args[0])
    elif kind == "type":
        files[base.annotation] = _mutate_text(base, pick, args[0] if base.format in ("coco", "azureml") else repr(args[0]))
    elif kind == "nesting":
        nested = _nested(*args) if base.format in ("coco", "azureml") else ("<a>" * args[1] + "</a>" * args[1])
        files[base.annotation] = _mutate_text(base, pick, nested)
    elif kind == "encoding":
        header = files[base.annotation].index(b"\n") + 1 if base.format == "csv" else 0
        files[base.annotation] = _encode(files[base.annotation], pick, args[0], header)
    elif kind == "huge" and args[0] == "image":
        image = base.images[pick % len(base.images)]
        files[image] = files[image] + b"\0" * MAX_IMAGE_BYTES
    elif kind == "huge":
        pad = b" " * 3_000_000 if args[0] == "annotation" else b"x" * 3_000_000
        files[base.annotation] = files[base.annotation] + (b"\n" if args[0] == "line" else b"") + pad
    _write(root, files)
    if kind == "symlink":
        _symlink(root, outside, base.images[pick % len(base.images)], args[0])


# -- the property -------------------------------------------------------------------------------------------


def _check(base: Base, root: Path) -> None:
    """Read and validate as ``detops prepare`` does; assert the property of the module docstring."""
    opts = {k: (root / v if k in ("path", "images") else v) for k, v in base.options.items()}
    try:
        ds = read_dataset(base.format, opts.pop("path"), **opts)
        report = validate(ds, ValidationPolicy(max_image_bytes=MAX_IMAGE_BYTES, workers=2)).report
    except DetopsError as e:
        assert e.exit_code == ExitCode.DATA, f"{type(e).__name__} (exit {int(e.exit_code)}): {e}"
        assert Path(base.annotation).name in str(e), str(e)
        return
    assert report.counts_add_up, report.to_dict()["counts"]
    assert all(i.file for i in report.unparseable) and all(r.source or r.image for r in report.rejected)
    if not (report.unparseable or report.rejected or report.warnings):
        assert report.boxes_kept == base.boxes, f"boxes went missing with nothing reported: {report.summary()}"


@pytest.mark.parametrize("fmt", ["voc", "csv", "bbox_txt", "coco", "azureml"])
@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutation=mutations())
def test_mutated_real_files_are_reported_never_a_crash(bases, fmt, mutation):
    base = bases[fmt]
    with tempfile.TemporaryDirectory() as tmp:
        root, outside = Path(tmp) / "dataset", Path(tmp) / "elsewhere" / "secret.jpg"
        outside.parent.mkdir(parents=True)
        outside.write_bytes(base.files[base.images[0]])
        _apply(base, root, outside, mutation)
        _check(base, root)


def test_the_unmutated_bases_are_read_whole(bases):
    """The property's "nothing missing" branch is not vacuous: each base keeps every box it has."""
    for base in bases.values():
        with tempfile.TemporaryDirectory() as tmp:
            _write(Path(tmp), base.files)
            opts = {k: (Path(tmp) / v if k in ("path", "images") else v) for k, v in base.options.items()}
            report = validate(read_dataset(base.format, opts.pop("path"), **opts)).report
            assert (report.boxes_kept, report.images_kept, report.rejected) == (base.boxes, 2, []), base.format
            assert base.boxes >= 5


def test_the_link_out_of_the_dataset_is_a_path_escape_record(bases):
    """One mutation's outcome pinned: an image replaced by a link to a file outside is refused by name."""
    base = bases["voc"]
    with tempfile.TemporaryDirectory() as tmp:
        root, outside = Path(tmp) / "dataset", Path(tmp) / "secret.jpg"
        outside.write_bytes(base.files[base.images[0]])
        _apply(base, root, outside, ("symlink", 0, "outside"))
        report = validate(read_dataset("voc", root)).report
    assert [(r.code, r.image) for r in report.rejected] == [("path_escape", base.images[0])]
    assert os.path.realpath(outside) in report.rejected[0].reason
