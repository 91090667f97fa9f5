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
# Usage: bash scripts/rehearse.sh [local]    (a tiny run: 2 steps at 64x64, about a few minutes on CPU)
#        bash scripts/rehearse.sh sagemaker  train.yml and release.yml job by job, each as its own AWS role, on
#                                            a moto server that enforces IAM (scripts/rehearse_jobs.py)
#        bash scripts/rehearse.sh azureml    the same on Azure: Azurite behind Azure RBAC and an Azure ML workspace
#                                            stand-in, each call authorized as the job's own identity
#                                            (scripts/rehearse_azure.py)
#
# The cloud modes read the jobs from the workflow files and build each job's environment the way its CI
# system gives it, from the Pulumi program's outputs under mocks (`detops settings ci-variables`); the cloud
# job's own steps run here, as the identity the cloud runs them as, between submit and wait.
# Settings (environment): DETOPS_DATASETS (default ../shared/datasets), REHEARSAL_CI (cloud modes: github or
# azure-devops), REHEARSAL_TRAINED / REHEARSAL_KEEP_TRAINED (cloud modes), REHEARSAL_DIR (default a new
# temporary folder; kept, its path is printed), REHEARSAL_CONFIG (default configs/bccd.yaml),
# DETOPS_LOCAL_PORT (default a free port), DETOPS_BIN (default .venv/bin/detops).
# Exit code 0 only when every step behaved as the workflows expect, including the refusals.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-local}"
case "$mode" in
  local | sagemaker | azureml) ;;
  *) echo "usage: $0 [local|sagemaker|azureml]" >&2; exit 2 ;;
esac

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
DETOPS_DATASETS_LOCAL="$DETOPS_DATASETS"
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

# A tiny run: the CI config with fewer, smaller steps. Two steps learn nothing: every score stays near
# the head's prior (0.01), so a low score threshold keeps detections (the parity check needs
# export.parity_min_detections of them) and the quality floor is lowered to 0 (a rehearsal checks
# the workflow, not the model; a real run keeps the config's gate.min_ap50 / gate.min_class_ap50).
tiny=(--set train.steps=2 --set train.image_size=64 --set train.batch_size=2 --set export.calibration_steps=2
      --set train.overrides.task.model.detection_generator.pre_nms_score_threshold=0.005
      --set gate.min_ap50=0 --set gate.min_class_ap50=0)

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
  step "who passed the human gate: the model-registration reviewer from the run's approvals (GitHub's shape)"
  printf '[{"state": "approved", "comment": "ok", "environments": [{"id": 1, "name": "model-registration"}], "user": {"login": "%s", "id": 2}}]\n' \
    "$REVIEWER" > "$work/approvals.json"
  detops reviewer "$work/approvals.json" --environment model-registration > "$work/reviewer.txt"
  DETOPS_REVIEWER="$(cat "$work/reviewer.txt")"
  export DETOPS_REVIEWER
  step "register (after the human gate), by $CI_IDENTITY"
  detops register --run-dir "$RUN_DIR" --name "$DETOPS_MODEL_NAME" --by "$CI_IDENTITY"
  detops models list --name "$DETOPS_MODEL_NAME" --status PendingManualApproval
  VERSION="$(latest_version PendingManualApproval)"
  [ -n "$VERSION" ] || fail "no PendingManualApproval version after register"
  detops models show "$DETOPS_MODEL_NAME" "$VERSION" --json \
    | "$PY" -c 'import json, sys; t = json.load(sys.stdin)["tags"]; sys.exit(t.get("gate.reviewer") != sys.argv[1])' "$REVIEWER" \
    || fail "register did not record the gate reviewer $REVIEWER"
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

# promote_to_production: the release workflow's production job with separate dev and prod stacks:
# promote the approved version from the dev registry (MLFLOW_TRACKING_URI) into the prod registry (a
# second MLflow store), digest verified, then deploy the promoted copy and smoke-test it.
promote_to_production() {
  local prod_uri="sqlite:///$work/mlflow-prod.db" prod_version MLFLOW_TRACKING_URI_DEV="$MLFLOW_TRACKING_URI"
  local prod_port
  prod_port="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  step "production: promote version $VERSION from the dev registry (same digest, verified)"
  (
    export DETOPS_IDENTITY=os MLFLOW_TRACKING_URI="$prod_uri"
    detops promote --name "$DETOPS_MODEL_NAME" --version "$VERSION" --source-uri "$MLFLOW_TRACKING_URI_DEV" \
      --artifact-root "$work/prod-models" --print-version > "$work/prod-version.txt"
  )
  prod_version="$(cat "$work/prod-version.txt")"
  [ -n "$prod_version" ] || fail "promote printed no production version"
  step "deploy the promoted version $prod_version to the production endpoint and smoke-test it"
  (
    export MLFLOW_TRACKING_URI="$prod_uri"
    detops deploy --target local --name "$DETOPS_MODEL_NAME" --version "$prod_version" --endpoint "$ENDPOINT_NAME-prod" --port "$prod_port"
    detops smoke-test --target local --endpoint "$ENDPOINT_NAME-prod" --url "http://127.0.0.1:$prod_port" --image "$SMOKE_IMAGE" --api-key-env DETOPS_API_KEY --expect-version "$prod_version"
  ) || fail "the promoted version did not deploy or failed its smoke test"
  "$PY" -c 'import sys; from deployment.targets.local import LocalTarget; LocalTarget().stop(sys.argv[1])' \
    "$ENDPOINT_NAME-prod" >/dev/null 2>&1 || true
}

# release: the release workflow's job (show, deploy, smoke test, roll back when either fails).
# Returns 0 when the smoke test passed, 1 when it failed and the endpoint was rolled back, 2 when
# the rollback failed too.
release() {
  step "show version $VERSION"
  detops models show "$DETOPS_MODEL_NAME" "$VERSION"
  step "deploy version $VERSION to local endpoint $ENDPOINT_NAME"
  if detops deploy --target local --name "$DETOPS_MODEL_NAME" --version "$VERSION" --endpoint "$ENDPOINT_NAME" \
    && { step "smoke test $ENDPOINT_URL"; detops smoke-test --target local --endpoint "$ENDPOINT_NAME" --url "$ENDPOINT_URL" --image "$SMOKE_IMAGE" --api-key-env DETOPS_API_KEY --expect-version "$VERSION"; }; then
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

# The cloud modes: every job of train.yml and release.yml with exactly its workflow's environment, as its own
# identity (scripts/rehearse_jobs.py's docstring; Azure: scripts/rehearse_azure.py's); the jobs run
# configs/bccd.yaml (the workflows'), so REHEARSAL_CONFIG does not apply. REHEARSAL_TRAINED / REHEARSAL_KEEP_TRAINED:
# reuse / keep the tiny trained run (one training shared between rehearsals, of either cloud). REHEARSAL_CI:
# github (default, .github/workflows) or azure-devops (.azure-pipelines: linked variable groups, service connections).
if [ "$mode" != local ]; then
  exec "$PY" scripts/rehearse_jobs.py --cloud "$([ "$mode" = sagemaker ] && echo aws || echo azure)" --work "$work" \
    --datasets "$DETOPS_DATASETS_LOCAL" --ci "${REHEARSAL_CI:-github}" \
    ${REHEARSAL_TRAINED:+--trained "$REHEARSAL_TRAINED"} ${REHEARSAL_KEEP_TRAINED:+--keep-trained "$REHEARSAL_KEEP_TRAINED"}
fi

# 1. A first candidate goes all the way to the endpoint.
train_candidate
FIRST="$VERSION"
approve_version
release || fail "the first release's smoke test failed"
[ "$(serving_version)" = "$FIRST" ] || fail "endpoint does not serve version $FIRST"
promote_to_production

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
detops smoke-test --target local --endpoint "$ENDPOINT_NAME" --url "$ENDPOINT_URL" --image "$SMOKE_IMAGE" --api-key-env DETOPS_API_KEY --expect-version "$FIRST"
detops models list --name "$DETOPS_MODEL_NAME"

printf '\nREHEARSAL PASSED: versions %s and %s registered and approved; %s served; %s failed its smoke test and was rolled back to %s\n' \
  "$FIRST" "$SECOND" "$FIRST" "$SECOND" "$FIRST"
