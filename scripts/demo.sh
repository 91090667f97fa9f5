#!/usr/bin/env bash
# The main job: set up, then run the whole local pipeline on BCCD and print the test-split COCO metrics.
# The dataset is found through DETOPS_DATASETS (default: ../shared/datasets beside the checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DETOPS_DATASETS="${DETOPS_DATASETS:-$(cd .. && pwd)/shared/datasets}"
exec .venv/bin/detops run configs/bccd.yaml "$@"
