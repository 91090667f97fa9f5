#!/usr/bin/env bash
# Rehearse the train and release workflows on this machine, no cloud: the same `detops` commands as
# .github/workflows/{train,release}.yml (and their Azure Pipelines twins), in the same order, against
# the local backend, a local MLflow registry (SQLite) and the local deploy target (127.0.0.1).
#
#   train:    submit --wait -> evaluate -> gate -> register (PendingManualApproval)
#   a person: approve (a second identity; the registrant is refused)
#   release:  deploy local -> smoke test
#   then a second candidate whose deployment fails its smoke test is rolled back to the first.
#
# Usage: bash scripts/rehearse.sh            (a tiny run: 2 steps at 64x64, about a few minutes on CPU)
# Settings (environment): DETOPS_DATASETS (default ../shared/datasets), REHEARSAL_DIR (default a new
# temporary folder; kept, its path is printed), REHEARSAL_CONFIG (default configs/bccd.yaml),
# DETOPS_LOCAL_PORT (default a free port), DETOPS_BIN (default .venv/bin/detops).
# Exit code 0 only when every step behaved as the workflows expect, including the refusals.
set -euo pipefail
cd "$(dirname "$0")/.."

DETOPS_BIN="${DETOPS_BIN:-$PWD/.venv/bin/detops}"
PY="${PYTHON:-$PWD/.venv/bin/python}"
detops() { "$DETOPS_BIN" "$@"; }
step() { printf '\n== rehearsal: %s\n' "$*"; }
fail() { printf '\nREHEARSAL FAILED: %s\n' "$*" >&2; exit 1; }

work="${REHEARSAL_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/detops-rehearsal.XXXXXX")}"
mkdir -p "$work"
work="$(cd "$work" && pwd)"
config="${REHEARSAL_CONFIG:-configs/bccd.yaml}"

# The workflows' variables, pointed at this machine.
export DETOPS_HOME="$work/home"
export DETOPS_DATASTORE="$work/datastore"
export DETOPS_DATASETS="${DETOPS_DATASETS:-$(cd .. && pwd)/shared/datasets}"
export DETOPS_REGISTRY=mlflow
export MLFLOW_TRACKING_URI="sqlite:///$work/mlflow.db"
export DETOPS_LOCAL_PORT="${DETOPS_LOCAL_PORT:-$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
# The endpoint's API key: made up here, as a secret store would hand it to the release job.
DETOPS_API_KEY="$("$PY" -c 'import secrets; print(secrets.token_urlsafe(24))')"
export DETOPS_API_KEY
unset DETOPS_ALLOW_SELF_APPROVAL
export DETOPS_IDENTITY=declared      # one machine plays both the CI principal and the reviewer (--by)
DETOPS_MODEL_NAME="rehearsal-detector"
ENDPOINT_NAME="rehearsal"
ENDPOINT_URL="http://127.0.0.1:${DETOPS_LOCAL_PORT}"
SMOKE_IMAGE="tests/ci/data/smoke.jpg"
CI_IDENTITY="ci-rehearsal"            # plays GITHUB_ACTOR / Build.RequestedForEmail
REVIEWER="reviewer@example.com"       # the person who approves

# A tiny run: the CI config with fewer, smaller steps.
tiny=(--set train.steps=2 --set train.image_size=64 --set train.batch_size=2 --set export.calibration_steps=2)

stop_endpoint() {
  "$PY" -c 'import sys; from deployment.targets.local import LocalTarget; LocalTarget().stop(sys.argv[1])' \
    "$ENDPOINT_NAME" >/dev/null 2>&1 || true
}
trap stop_endpoint EXIT

echo "rehearsal folder: $work"

# expect_exit CODE COMMAND...: run a command that must be refused with exit code CODE.
expect_exit() {
  local want="$1"; shift
  set +e
  "$@"
  local got=$?
  set -e
  [ "$got" = "$want" ] || fail "expected exit code $want, got $got: $*"
  echo "(refused as expected, exit code $got)"
}

# latest_version STATUS: newest version of the model with that approval status.
latest_version() {
  detops models list --name "$DETOPS_MODEL_NAME" --status "$1" --json \
    | "$PY" -c 'import json, sys; v = json.load(sys.stdin); print(max((x["version"] for x in v), key=int) if v else "")'
}

# train_candidate: the train workflow (train job, then the register job after the human gate).
train_candidate() {
  step "submit (local backend, wait)"
  detops submit "$config" --backend local --wait "${tiny[@]}" | tee "$work/submit.log"
  # submit ends with its result as JSON (as in train.yml): run_url is the run folder
  RUN_DIR="$("$PY" -c 'import json, sys; t = "\n" + sys.stdin.read(); print(json.loads(t[t.rindex("\n{") + 1 :])["run_url"])' < "$work/submit.log")"
  [ -n "$RUN_DIR" ] || fail "submit printed no run folder"
  step "evaluate $RUN_DIR"
  detops evaluate --run-dir "$RUN_DIR" --split val --split test
  step "quality gate"
  detops gate --run-dir "$RUN_DIR" --name "$DETOPS_MODEL_NAME"
  step "register (after the human gate), by $CI_IDENTITY"
  detops register --run-dir "$RUN_DIR" --name "$DETOPS_MODEL_NAME" --by "$CI_IDENTITY"
  detops models list --name "$DETOPS_MODEL_NAME" --status PendingManualApproval
  VERSION="$(latest_version PendingManualApproval)"
  [ -n "$VERSION" ] || fail "no PendingManualApproval version after register"
}

# approve_version: the person's step between the two workflows.
approve_version() {
  step "deploying version $VERSION before approval is refused"
  expect_exit 4 detops deploy --target local --name "$DETOPS_MODEL_NAME" --version "$VERSION" --endpoint "$ENDPOINT_NAME"
  step "the registrant may not approve version $VERSION"
  expect_exit 4 detops approve "$DETOPS_MODEL_NAME" "$VERSION" --by "$CI_IDENTITY" --comment "self-approval attempt"
  step "approve version $VERSION by $REVIEWER"
  detops approve "$DETOPS_MODEL_NAME" "$VERSION" --by "$REVIEWER" --comment "rehearsal: metrics and gate reviewed"
}

# release: the release workflow's job (show, deploy, smoke test, roll back when either fails).
# Returns 0 when the smoke test passed, 1 when it failed and the endpoint was rolled back, 2 when
# the rollback failed too.
release() {
  step "show version $VERSION"
  detops models show "$DETOPS_MODEL_NAME" "$VERSION"
  step "deploy version $VERSION to local endpoint $ENDPOINT_NAME"
  if detops deploy --target local --name "$DETOPS_MODEL_NAME" --version "$VERSION" --endpoint "$ENDPOINT_NAME" \
    && { step "smoke test $ENDPOINT_URL"; detops smoke-test --url "$ENDPOINT_URL" --image "$SMOKE_IMAGE" --api-key-env DETOPS_API_KEY; }; then
    return 0
  fi
  step "deployment or smoke test failed: roll back"
  detops rollback --target local --name "$DETOPS_MODEL_NAME" --endpoint "$ENDPOINT_NAME" --if-serving "$VERSION" || return 2
  return 1
}

# serving_version: the model version the endpoint answers with (its /readyz body).
serving_version() {
  "$PY" -c 'import json, sys, urllib.request; print(json.load(urllib.request.urlopen(sys.argv[1] + "/readyz", timeout=30))["model"]["version"])' \
    "$ENDPOINT_URL"
}

# 1. A first candidate goes all the way to the endpoint.
train_candidate
FIRST="$VERSION"
approve_version
release || fail "the first release's smoke test failed"
[ "$(serving_version)" = "$FIRST" ] || fail "endpoint does not serve version $FIRST"

# 2. A second candidate whose deployment is broken: the service comes up with a rotated API key the
#    release job does not hold, so the smoke test gets 401. The release must roll back to $FIRST.
train_candidate
SECOND="$VERSION"
approve_version
good_key="$DETOPS_API_KEY"
rotated_key="$("$PY" -c 'import secrets; print(secrets.token_urlsafe(24))')"
step "release version $SECOND with a deployment that fails its smoke test"
set +e
(
  # deploy runs with the rotated key; the smoke test and the rollback with the job's own key.
  detops() {
    if [ "$1" = deploy ]; then DETOPS_API_KEY="$rotated_key" "$DETOPS_BIN" "$@"; else "$DETOPS_BIN" "$@"; fi
  }
  release
)
released=$?
set -e
[ "$released" = 1 ] || fail "the broken release was not caught by its smoke test (status $released)"
export DETOPS_API_KEY="$good_key"
step "after the rollback"
[ "$(serving_version)" = "$FIRST" ] || fail "endpoint serves $(serving_version), not the rolled-back version $FIRST"
detops smoke-test --url "$ENDPOINT_URL" --image "$SMOKE_IMAGE" --api-key-env DETOPS_API_KEY
detops models list --name "$DETOPS_MODEL_NAME"

printf '\nREHEARSAL PASSED: versions %s and %s registered and approved; %s served; %s failed its smoke test and was rolled back to %s\n' \
  "$FIRST" "$SECOND" "$FIRST" "$SECOND" "$FIRST"
