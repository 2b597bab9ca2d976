#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: the whole suite in release and
# under ASan+UBSan, and the concurrency tests under TSan. Ends with one line of totals.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

passed=0
failed=0
status=0
for preset in release asan-ubsan tsan; do
  echo "=== ${preset}: build ==="
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset"
  echo "=== ${preset}: test ==="
  log=$(mktemp)
  set +e
  ctest --preset "$preset" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  if [ "$rc" -ne 0 ]; then status=1; fi
  # "100% tests passed, 0 tests failed out of 42"
  line=$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1 || true)
  if [ -z "$line" ]; then
    echo "test.sh: no ctest summary for ${preset}" >&2
    status=1
  else
    f=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
    n=$(sed -E 's/.* failed out of ([0-9]+).*/\1/' <<<"$line")
    passed=$((passed + n - f))
    failed=$((failed + f))
  fi
  rm -f "$log"
done
echo "total: ${passed} passed, ${failed} failed"
if [ "$failed" -ne 0 ]; then status=1; fi
exit "$status"
