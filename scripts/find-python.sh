#!/bin/sh
# find-python.sh - print the path of a Python 3 that can import pytest.
# The python3 first on PATH may be a separate build that does not see
# Debian's python3-pytest, so try Debian's own interpreter first.
for py in /usr/bin/python3 python3 python; do
	if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import pytest' >/dev/null 2>&1; then
		command -v "$py"
		exit 0
	fi
done
echo "find-python: no Python with pytest found (apt-get install python3-pytest)" >&2
exit 1
