"""The layers as contracts (``[tool.importlinter]`` in pyproject.toml, docs/architecture.md): the code
keeps them, and each contract fails when the code breaks it on purpose.

The broken copies are made in ``tmp_path`` (the three packages and pyproject.toml), one back-arrow
each, and checked by the same ``lint-imports`` CI runs; the checkout itself is never edited.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("training", "deployment", "detops")
LINT = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` over the packages under ``root`` (they shadow the installed checkout)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT), "--no-cache", "--config", str(root / "pyproject.toml")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


def contract_names() -> dict[str, str]:
    """Contract id -> name, from pyproject.toml."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["id"]: c["name"] for c in cfg["contracts"]}


def test_the_checkout_keeps_every_contract():
    r = lint(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    names = contract_names()
    assert set(names) == {"layers", "acyclic", "ground-floor", "registry-before-targets", "serving-alone"}
    for name in names.values():
        assert f"{name} KEPT" in " ".join(r.stdout.split()), r.stdout


#: contract id -> (module file, the back-arrow appended to it)
BREAKS = {
    "layers": ("training/errors.py", "import deployment.registry.base"),
    "acyclic": ("training/backends/base.py", "import training.backends.local"),
    "ground-floor": ("training/cloud/aws.py", "import training.backends"),
    "registry-before-targets": ("deployment/registry/base.py", "import deployment.targets.base"),
    "serving-alone": ("deployment/serving/metrics.py", "import detops.cli"),
}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A copy of the three packages and pyproject.toml (source files only)."""
    root = tmp_path_factory.mktemp("layers")
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, root / pkg, ignore=shutil.ignore_patterns("__pycache__", "static"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


@pytest.mark.parametrize("contract", sorted(BREAKS))
def test_a_back_arrow_breaks_its_contract(tree, contract):
    path, line = BREAKS[contract]
    f = tree / path
    original = f.read_text()
    f.write_text(original + f"\n{line}  # the back-arrow of this test\n")
    try:
        r = lint(tree)
    finally:
        f.write_text(original)
    out = " ".join(r.stdout.split())
    assert r.returncode != 0, out
    assert f"{contract_names()[contract]} BROKEN" in out, out
