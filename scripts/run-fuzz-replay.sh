#!/bin/sh
# run-fuzz-replay.sh - replays every input kept for the fuzz targets through
# the same target code, built without libFuzzer (see tests/fuzz/replay_main.c):
# each build/<variant>/fuzz-replay-<target> gets tests/fuzz/corpus/<target>/
# and tests/fuzz/regressions/<target>/.  One summary line at the end.
#   scripts/run-fuzz-replay.sh build/release/fuzz-replay-config ...
pass=0
fail=0
for b in "$@"; do
	t=${b##*fuzz-replay-}
	out=$("$b" "tests/fuzz/corpus/$t" "tests/fuzz/regressions/$t")
	rc=$?
	p=$(printf '%s\n' "$out" | sed -n 's/.*: \([0-9]*\) passed, \([0-9]*\) failed$/\1/p' | tail -n 1)
	f=$(printf '%s\n' "$out" | sed -n 's/.*: \([0-9]*\) passed, \([0-9]*\) failed$/\2/p' | tail -n 1)
	if [ -z "$p" ] || [ -z "$f" ]; then
		p=0
		f=1
	fi
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		f=1
	fi
	[ "$f" -eq 0 ] || echo "fuzz replay: $t: $f input(s) FAILED (see above)" >&2
	pass=$((pass + p))
	fail=$((fail + f))
done
echo "fuzz replay: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
