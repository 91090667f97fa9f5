"""scripts/images.sh against a stand-in registry with immutable tags (as ECR's IMMUTABLE repositories,
infra/components/aws.py): the image tag is the commit, so a re-run of the images job on the same commit
must reuse what the first run pushed instead of failing on the tag.

The stand-in is a ``docker`` on PATH (no docker daemon here): ``buildx build --push`` refuses a tag its
repository already holds, with ECR's message, and otherwise "pushes" an image with a fresh digest (builds
are not reproducible, so a rebuild never has the first build's digest); ``buildx imagetools inspect``
prints the pushed manifest's descriptor as ``--format '{{json .Manifest}}'`` does, or fails when the tag
is not there.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from cicd_helpers import REPO

FAKE_DOCKER = r'''#!/usr/bin/env python3
import hashlib, json, os, sys, uuid
from pathlib import Path

store = Path(os.environ["FAKE_REGISTRY"])
args = sys.argv[1:]
with open(store / "calls.log", "a") as log:
    log.write(" ".join(args) + "\n")

def ref_file(ref):
    return store / (ref.replace("/", "_").replace(":", "__") + ".json")

if args[:2] == ["buildx", "build"]:
    ref = args[args.index("--tag") + 1]
    repo, tag = ref.rsplit(":", 1)
    if ref_file(ref).exists():
        print(f"ERROR: failed to push {ref}: tag invalid: The image tag '{tag}' already exists in the '{repo}' "
              "repository and cannot be overwritten because the repository is immutable.", file=sys.stderr)
        sys.exit(1)
    digest = "sha256:" + hashlib.sha256(uuid.uuid4().bytes).hexdigest()
    ref_file(ref).write_text(json.dumps({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest, "size": 856}))
    Path(args[args.index("--metadata-file") + 1]).write_text(json.dumps({"containerimage.digest": digest}))
elif args[:3] == ["buildx", "imagetools", "inspect"]:
    ref = args[3]
    if not ref_file(ref).exists():
        print(f"ERROR: {ref}: not found", file=sys.stderr)
        sys.exit(1)
    assert args[4:] == ["--format", "{{json .Manifest}}"], args
    print(ref_file(ref).read_text())
else:
    print(f"fake docker: unexpected {args}", file=sys.stderr)
    sys.exit(2)
'''
TRAINING = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/detops-dev/training"
SERVING = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/detops-dev/serving"


def _images(tmp_path: Path, tag: str = "0123456789ab") -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run images.sh once; return its result and the docker calls it made."""
    bin_dir = tmp_path / "bin"
    if not bin_dir.exists():
        bin_dir.mkdir()
        docker = bin_dir / "docker"
        docker.write_text(FAKE_DOCKER)
        docker.chmod(docker.stat().st_mode | stat.S_IEXEC)
        (tmp_path / "registry").mkdir()
    log = tmp_path / "registry" / "calls.log"
    log.unlink(missing_ok=True)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_REGISTRY": str(tmp_path / "registry")}
    r = subprocess.run(["bash", str(REPO / "scripts" / "images.sh"), TRAINING, SERVING, tag], cwd=REPO, env=env,
                       capture_output=True, text=True, check=False, timeout=120)
    return r, (log.read_text().splitlines() if log.exists() else [])


def _outputs(r: subprocess.CompletedProcess) -> dict[str, str]:
    return dict(line.split("=", 1) for line in r.stdout.splitlines())


def test_a_rerun_on_the_same_commit_reuses_the_pushed_images(tmp_path) -> None:
    first, calls = _images(tmp_path)
    assert first.returncode == 0, first.stderr
    assert sum(c.startswith("buildx build") for c in calls) == 3
    digests = _outputs(first)
    assert sorted(digests) == ["serving_image", "training_image", "training_image_cpu"]
    assert digests["serving_image"].startswith(f"{SERVING}@sha256:")
    assert digests["training_image"].startswith(f"{TRAINING}@sha256:")

    again, calls = _images(tmp_path)
    assert again.returncode == 0, again.stderr
    assert not [c for c in calls if c.startswith("buildx build")]  # nothing rebuilt, nothing pushed
    assert _outputs(again) == digests  # the digests the first run pushed, handed on as before
    assert "is already pushed" in again.stderr


def test_only_the_missing_images_are_built(tmp_path) -> None:
    """A first run that pushed the training images and failed before the serving image: the re-run builds
    the serving image only."""
    first, _ = _images(tmp_path)
    assert first.returncode == 0, first.stderr
    for pushed in (tmp_path / "registry").glob("*serving*"):
        pushed.unlink()
    again, calls = _images(tmp_path)
    assert again.returncode == 0, again.stderr
    assert [c.split("--tag ")[1].split()[0] for c in calls if c.startswith("buildx build")] == [f"{SERVING}:0123456789ab"]
    assert _outputs(again)["training_image"] == _outputs(first)["training_image"]


def test_another_commit_builds_new_images(tmp_path) -> None:
    first, _ = _images(tmp_path, "0123456789ab")
    other, calls = _images(tmp_path, "ba9876543210")
    assert other.returncode == 0, other.stderr
    assert sum(c.startswith("buildx build") for c in calls) == 3
    assert set(_outputs(other).values()).isdisjoint(_outputs(first).values())
