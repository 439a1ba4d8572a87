#!/bin/sh
# deps.sh - install the Debian packages `make bench` needs, only those that
# are missing.  Skips with a message when not root.
#
# Debian starts nginx and haproxy as system services when they are installed.
# The benchmark runs its own instances (own prefix, own ports), so a system
# service would only hold port 80 and take CPU.  During the install a
# policy-rc.d that answers 101 ("action forbidden") keeps invoke-rc.d from
# starting them; it is removed afterwards (an existing one is left alone).
# Should a service have started anyway, it is stopped by its pid file.
set -u
need="gcc make python3 haproxy nginx libnginx-mod-stream socat gnuplot-nox"
missing=""
for p in $need; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "bench/deps: missing Debian packages:$missing (not root: skipping install)" >&2
	exit 0
fi

policy=/usr/sbin/policy-rc.d
ours=0
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && ours=1
fi
cleanup() { [ "$ours" = 1 ] && rm -f "$policy"; }
trap cleanup EXIT INT TERM

echo "bench/deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
rc=0
apt-get install -y -q $missing >/dev/null 2>&1 ||
	{ apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $missing >/dev/null; } ||
	{ echo "bench/deps: apt-get install$missing failed" >&2; rc=1; }

# Belt and braces: stop system instances the install may have started.
for pidfile in /run/nginx.pid /run/haproxy.pid; do
	if [ -s "$pidfile" ]; then
		pid=$(cat "$pidfile")
		kill "$pid" 2>/dev/null && echo "bench/deps: stopped system service (pid $pid from $pidfile)" >&2
	fi
done
exit $rc
