#!/usr/bin/env bash
# Make sure Debian's Chromium is installed for the browser tests; install it with apt as root.
set -euo pipefail
bash "$(dirname "$0")/ensure-debian-package.sh" chromium "the browser tests" chromium && exit 0
if [ "${CI:-}" = "true" ]; then exit 1; fi
echo "Outside CI the browser tests will be skipped." >&2
