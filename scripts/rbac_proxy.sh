# Shell functions (source this file; it runs nothing by itself): put Azure RBAC in front of Azurite for a
# rehearsal, one proxy per identity (tests/infra/azurite_rbac.py), so each job's blob calls are authorized
# as that job's identity with the Azure program's role assignments, as Azure Storage authorizes them.
#
#   start_rbac_proxies WORK AZURITE_PORT STACK PRINCIPAL...   # e.g. ... dev trainer registrar approver
#   as_identity PRINCIPAL            # AZURE_STORAGE_CONNECTION_STRING := that identity's proxy
#   rbac_denials JOB                 # fails (status 1) naming JOB, principal, action and scope of any denial
#   stop_rbac_proxies
#
# Needs: PY (the venv's python), AZURITE_KEY (Azurite's public account key). Decisions: WORK/rbac.jsonl.
# What the proxies cannot check: MLClient (control-plane) calls, which go to the fakes, not to Azurite;
# tests/ci/job_access.py's static table covers those.

RBAC_PROXY_PID=""
RBAC_LOG=""
RBAC_SEEN=0

start_rbac_proxies() {
  local work="$1" port="$2" stack="$3"; shift 3
  local args=() p
  for p in "$@"; do args+=(--principal "$p"); done
  RBAC_LOG="$work/rbac.jsonl"
  : >"$RBAC_LOG"
  rm -f "$work/rbac.env"
  PYTHONPATH="$PWD:$PWD/tests${PYTHONPATH:+:$PYTHONPATH}" "$PY" tests/infra/azurite_rbac.py --upstream-port "$port" \
    --stack "$stack" --key "$AZURITE_KEY" --env-out "$work/rbac.env" --log "$RBAC_LOG" "${args[@]}" \
    >"$work/rbac-proxy.log" 2>&1 &
  RBAC_PROXY_PID=$!
  local _
  for _ in $(seq 300); do
    [ -s "$work/rbac.env" ] && break
    kill -0 "$RBAC_PROXY_PID" 2>/dev/null || { cat "$work/rbac-proxy.log" >&2; return 1; }
    sleep 0.2
  done
  [ -s "$work/rbac.env" ] || { echo "RBAC proxies did not start (see $work/rbac-proxy.log)" >&2; return 1; }
  # shellcheck disable=SC1091
  . "$work/rbac.env"
}

as_identity() {
  local name; name="RBAC_CONNECTION_STRING_$(printf '%s' "$1" | tr -c 'A-Za-z0-9' '_' | tr 'a-z' 'A-Z')"
  [ -n "${!name:-}" ] || { echo "no RBAC proxy for identity $1 (start_rbac_proxies ... $1)" >&2; return 1; }
  export AZURE_STORAGE_CONNECTION_STRING="${!name}"
  unset AZURE_STORAGE_ACCOUNT_KEY AZURE_STORAGE_SAS_TOKEN
}

rbac_denials() { # the denials recorded since the last call; status 1 when there is one
  local job="$1"
  "$PY" - "$RBAC_LOG" "$RBAC_SEEN" "$job" <<'PY'
import json, sys
lines = open(sys.argv[1], encoding="utf-8").read().splitlines()[int(sys.argv[2]):]
denied = [json.loads(line) for line in lines if not json.loads(line)["allowed"]]
for d in denied:
    print(f"job {sys.argv[3]} as {d['principal']}: {d['operation']} {d['action']} on {d['scope']} denied ({d['reason']})", file=sys.stderr)
sys.exit(1 if denied else 0)
PY
  local status=$?
  RBAC_SEEN="$(wc -l <"$RBAC_LOG")"
  return "$status"
}

stop_rbac_proxies() {
  [ -z "$RBAC_PROXY_PID" ] || { kill "$RBAC_PROXY_PID" 2>/dev/null; wait "$RBAC_PROXY_PID" 2>/dev/null; } || true
  RBAC_PROXY_PID=""
}
