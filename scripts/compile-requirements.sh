#!/bin/sh
# Regenerate the hashed requirement sets (no index URLs are written). Run from the checkout root.
#   constraints.txt    every package of every extra (CI's install, `pip install -c`)
#   training.txt       training image, CPU: the core + azure + aws extras
#   training-gpu.txt   training image, GPU: the same + tensorflow[and-cuda] (nvidia-*-cu12 wheels)
#   serving.txt        serving image: requirements/serving.in (tensorflow-cpu, no training packages)
#   build.txt          the wheel's build backend (setuptools)
# All but constraints.txt are constrained by it, so every image runs the versions CI tested.
set -eu
common="--generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 --no-header"
uv pip compile pyproject.toml --all-extras $common -o requirements/constraints.txt
uv pip compile pyproject.toml --extra azure --extra aws $common -c requirements/constraints.txt -o requirements/training.txt
uv pip compile pyproject.toml requirements/gpu.in --extra azure --extra aws $common -c requirements/constraints.txt \
  -o requirements/training-gpu.txt
uv pip compile requirements/serving.in $common -c requirements/constraints.txt -o requirements/serving.txt
uv pip compile requirements/build.in $common -o requirements/build.txt
