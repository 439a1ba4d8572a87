#!/bin/sh
# run-unit.sh - run every cmocka binary given, then print one summary line.
pass=0
fail=0
for t in "$@"; do
	if "$t"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "unit: $t FAILED" >&2; fi
done
echo "unit binaries: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
