#!/usr/bin/env bash
# Make sure Debian's Chromium is installed for the browser tests; install it with apt as root.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian's chromium for the browser tests (apt-get)..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
  command -v chromium >/dev/null && exit 0
fi
echo "chromium is not installed: run 'sudo apt-get install chromium' (the browser tests need it)." >&2
if [ "${CI:-}" = "true" ]; then exit 1; fi
echo "Outside CI the browser tests will be skipped." >&2
