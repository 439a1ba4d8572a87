#!/bin/sh
# valgrind-ferry.sh - run ferry under valgrind memcheck, for the integration
# suite (make valgrind sets FERRY_BIN to this script).
#
# It execs valgrind in its own process, so the pid the tests see (signals,
# /proc/PID/status, /proc/PID/fd) is the process running ferry.
#
# A test fails when memcheck finds something, two ways:
#   * --error-exitcode=99: ferry's exit status becomes 99 when memcheck found
#     an error or a definite/indirect leak, and the harness checks the status
#     when it stops ferry (Ferry.stop() and the fixture teardown);
#   * the report goes to ferry's stderr, which the harness collects, and every
#     error is wrapped in VALGRIND-ERROR-BEGIN/END lines: "VALGRIND-ERROR" is
#     one of helpers.SANITIZER_MARKERS, so the test fails even when it killed
#     ferry or expected another exit status, and the report is in the failure.
# FERRY_VALGRIND_LOG=PATH writes the report to PATH instead (valgrind expands
# %p to the pid); then only the exit status tells.
#
# FERRY_VALGRIND_BIN: the binary to run (default: build/release/ferry).
# FERRY_VALGRIND_OPTS: more valgrind options (e.g. --track-origins=yes).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bin=${FERRY_VALGRIND_BIN:-$here/../../build/release/ferry}
if [ -n "${FERRY_VALGRIND_LOG:-}" ]; then
	log="--log-file=$FERRY_VALGRIND_LOG"
else
	log="--log-fd=2"
fi
export FERRY_VALGRIND=1
# shellcheck disable=SC2086  # FERRY_VALGRIND_OPTS is a list of options
exec valgrind --tool=memcheck -q --error-exitcode=99 \
	--leak-check=full --errors-for-leak-kinds=definite,indirect \
	--show-leak-kinds=definite,indirect --track-fds=no \
	--error-markers=VALGRIND-ERROR-BEGIN,VALGRIND-ERROR-END \
	"$log" ${FERRY_VALGRIND_OPTS:-} -- "$bin" "$@"
