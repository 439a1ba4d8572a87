#!/bin/sh
# run-fuzz.sh - runs the libFuzzer targets built by `make fuzz`, then prints
# one line per target and writes the same as a Markdown table to
# build/fuzz/summary.md (docs/fuzzing.md keeps the table of a reference run).
#
#   FUZZ_SECONDS=600 FUZZ_JOBS=2 scripts/run-fuzz.sh config proxyproto ...
#
# Each target runs for FUZZ_SECONDS (-max_total_time) with -timeout=5 and
# -rss_limit_mb=2048 over build/fuzz/corpus-<target>/, a copy of
# tests/fuzz/corpus/<target>/ and tests/fuzz/regressions/<target>/ that also
# keeps what earlier runs found; the repository's corpus is never written.
# Inputs that crash, leak, time out or run out of memory go to
# build/fuzz/crashes-<target>/ (only those of this run are counted; copy one
# to tests/fuzz/regressions/<target>/ once the bug is fixed).  FUZZ_JOBS targets run at once (libFuzzer
# itself is single-threaded).  Exits 1 when any target found something.
set -u
FUZZ_SECONDS=${FUZZ_SECONDS:-600}
FUZZ_JOBS=${FUZZ_JOBS:-2}
FUZZ_BUILD=build/fuzz

run_one() {
	t=$1
	corpus=$FUZZ_BUILD/corpus-$t
	crashes=$FUZZ_BUILD/crashes-$t
	mkdir -p "$corpus" "$crashes"
	cp -pR "tests/fuzz/corpus/$t/." "$corpus/"
	[ -d "tests/fuzz/regressions/$t" ] && cp -pR "tests/fuzz/regressions/$t/." "$corpus/"
	set -- -max_total_time="$FUZZ_SECONDS" -timeout=5 -rss_limit_mb=2048 \
		-artifact_prefix="$crashes/" -print_final_stats=1
	[ -f "tests/fuzz/dict/$t.dict" ] && set -- "$@" -dict="tests/fuzz/dict/$t.dict"
	touch "$FUZZ_BUILD/.start-$t" # crashes of earlier runs are not counted
	echo "fuzz: $t: ${FUZZ_SECONDS}s over $corpus (log: $FUZZ_BUILD/fuzz-$t.log)"
	"$FUZZ_BUILD/fuzz_$t" "$@" "$corpus" >"$FUZZ_BUILD/fuzz-$t.log" 2>&1
	echo $? >"$FUZZ_BUILD/fuzz-$t.rc"
}

# The numbers of one finished run, from its log: "execs cov ft corpus crashes rc".
stats() {
	t=$1
	log=$FUZZ_BUILD/fuzz-$t.log
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	last=$(grep -E '^#[0-9]+[[:space:]].*cov: ' "$log" | tail -n 1)
	cov=$(printf '%s\n' "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
	ft=$(printf '%s\n' "$last" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
	corp=$(printf '%s\n' "$last" | sed -n 's/.* corp: \([0-9]*\/[0-9A-Za-z]*\).*/\1/p')
	found=$(find "$FUZZ_BUILD/crashes-$t" -type f -newer "$FUZZ_BUILD/.start-$t" | wc -l)
	rc=$(cat "$FUZZ_BUILD/fuzz-$t.rc" 2>/dev/null || echo '?')
	echo "${execs:-?} ${cov:-?} ${ft:-?} ${corp:-?} $found $rc"
}

mkdir -p "$FUZZ_BUILD"
# Start FUZZ_JOBS targets, wait for that group, start the next.
n=0
for t in "$@"; do
	rm -f "$FUZZ_BUILD/fuzz-$t.rc"
	run_one "$t" &
	n=$((n + 1))
	if [ "$n" -ge "$FUZZ_JOBS" ]; then
		wait
		n=0
	fi
done
wait

bad=0
summary=$FUZZ_BUILD/summary.md
{
	echo "| target | seconds | executions | cov | ft | corpus (inputs/bytes) | crashes |"
	echo "|---|---|---|---|---|---|---|"
} >"$summary"
printf '%-11s %8s %12s %6s %7s %14s %8s\n' target seconds executions cov ft corpus crashes
for t in "$@"; do
	set -- $(stats "$t")
	printf '%-11s %8s %12s %6s %7s %14s %8s\n' "$t" "$FUZZ_SECONDS" "$1" "$2" "$3" "$4" "$5"
	echo "| $t | $FUZZ_SECONDS | $1 | $2 | $3 | $4 | $5 |" >>"$summary"
	if [ "$5" != 0 ] || [ "$6" != 0 ]; then
		bad=1
		echo "fuzz: $t: libFuzzer exited $6, $5 input(s) in $FUZZ_BUILD/crashes-$t/ (see $FUZZ_BUILD/fuzz-$t.log)" >&2
	fi
done
echo "fuzz: summary in $summary"
exit $bad
