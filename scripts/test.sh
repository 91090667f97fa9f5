#!/usr/bin/env bash
# The test command: set up everything the suite needs, then run it (all tests, slow ones included).
#   bash scripts/test.sh              # the whole suite, in two shards side by side (see below)
#   bash scripts/test.sh ARGS...      # plain pytest with these arguments, e.g. tests/training -k seed
#
# Most slow tests spend their time in one-core subprocesses (the CI rehearsals, the simulated cloud
# jobs, the serving processes), so on a 2-core machine two pytest processes side by side finish the
# suite in about half the wall time. Each shard is a list of test folders/files; every test belongs to
# exactly one shard (checked below), and the command fails when either shard fails or runs no test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
if [ "$#" -gt 0 ]; then
  exec .venv/bin/python -m pytest -q "$@"
fi

# Measured on the 2-core machine (last full run): shard a ~54 min with the BCCD end-to-end test in it,
# shard b ~38 min without; the end-to-end test (about 10 min) now ends shard b. Top-level test files
# (tests/test_*.py) go to shard b by glob. tests/infra runs first
# in its process: Pulumi's mocks hang when they start after the cloud tests' event loops.
# The container tests (tests/cloud/test_containers.py: the image builds, then the images run as SageMaker
# and Azure ML run them) start shard a, so that their image build (network and disk) overlaps shard b's
# CPU-bound tests; measured here: a cold build 6-9 min (base 1-2 min, training image 4-5, serving 1.5-2),
# a source change about 1 min, nothing changed 0.2 s; the tests themselves 11-12 min (docs/cloud.md).
# The Azure job-by-job rehearsals (tests/ci/test_rehearsal_azure.py, about 12 min, subprocesses only) end shard b.
shard_a=(tests/cloud/test_containers.py tests/ci --ignore=tests/ci/test_rehearsal_azure.py tests/annotations
         tests/deployment/test_browser.py tests/deployment/test_fuzz.py)
shard_b=(tests/infra --ignore=tests/cloud/test_containers.py tests/cloud tests/training tests/test_*.py
         --ignore=tests/deployment/test_browser.py --ignore=tests/deployment/test_fuzz.py tests/deployment
         tests/ci/test_rehearsal_azure.py)

# the layer contracts (pyproject.toml [tool.importlinter]): a back-arrow between layers fails CI first
.venv/bin/lint-imports --no-cache

logs="$(mktemp -d "${TMPDIR:-/tmp}/detops-tests.XXXXXX")"
# every collected test in exactly one shard
all="$(.venv/bin/python -m pytest -q --collect-only -p no:cacheprovider | grep '::' | sort)"
a="$(.venv/bin/python -m pytest -q --collect-only -p no:cacheprovider "${shard_a[@]}" | grep '::' | sort)"
b="$(.venv/bin/python -m pytest -q --collect-only -p no:cacheprovider "${shard_b[@]}" | grep '::' | sort)"
if [ "$all" != "$(printf '%s\n%s\n' "$a" "$b" | sort)" ]; then
  echo "error: the two shards do not hold every test exactly once; edit scripts/test.sh" >&2
  exit 1
fi

echo "running the suite in two shards ($(wc -l <<<"$a") + $(wc -l <<<"$b") tests); logs in $logs"
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 "${shard_a[@]}" >"$logs/a.log" 2>&1 &
pid_a=$!
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 "${shard_b[@]}" >"$logs/b.log" 2>&1 &
pid_b=$!
rc_a=0; wait "$pid_a" || rc_a=$?
rc_b=0; wait "$pid_b" || rc_b=$?

for s in a b; do
  echo "===== shard $s"
  cat "$logs/$s.log"
done
# pytest's closing line, e.g. "2 failed, 618 passed, 1 error in 60.1s": sum one kind over both shards
count() { tail -n 1 "$logs/a.log" "$logs/b.log" 2>/dev/null | grep -Eo "[0-9]+ $1" | awk '{n += $1} END {print n + 0}' || true; }
passed="$(count passed)"
failed="$(( $(count failed) + $(count 'errors?') ))"
echo "shard exit codes: a=$rc_a b=$rc_b"
echo "all shards: $passed passed, $failed failed"
[ "$rc_a" = 0 ] && [ "$rc_b" = 0 ]
