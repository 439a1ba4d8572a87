#!/bin/sh
# deps.sh - install the Debian packages ferry needs to build and test, only
# those that are missing.  Skips with a message when not root.
#   scripts/deps.sh build|test|demo|asan
#   scripts/deps.sh fuzz     (also clang and libFuzzer, for make fuzz)
set -u
need="gcc make pkg-config libyaml-dev liburing-dev libmicrohttpd-dev libc-ares-dev"
case "${1:-build}" in
test | asan) need="$need libcmocka-dev python3 python3-pytest" ;;
demo) need="$need python3" ;;
fuzz) need="$need clang libfuzzer-14-dev" ;;
esac
missing=""
for p in $need; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "deps: missing Debian packages:$missing (not root: skipping install)" >&2
	exit 0
fi
echo "deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q $missing >/dev/null 2>&1 ||
	{ apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $missing >/dev/null; } ||
	{ echo "deps: apt-get install$missing failed" >&2; exit 1; }
