#!/usr/bin/env bash
# The one test command: installs what the suite needs, then runs every test.
# Debian packages (redis-server for the Redis tests, chromium for the page test) are
# installed when missing and we are root; elsewhere those tests skip, or fail under CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing ${missing[*]} (Debian packages)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "warning: ${missing[*]} not installed; the tests that need them will skip" >&2
    fi
fi

python -m pip install -q --disable-pip-version-check -e '.[dev]'
exec python -m pytest "$@"
