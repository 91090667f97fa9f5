#!/usr/bin/env bash
# The test command: set up everything the suite needs, then run it (all tests, slow ones included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
exec .venv/bin/python -m pytest -q "$@"
