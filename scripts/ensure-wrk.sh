#!/usr/bin/env bash
# Make sure Debian's wrk is installed for the HTTP benchmarks; install it with apt as root.
set -euo pipefail
if command -v wrk >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian's wrk for the HTTP benchmarks (apt-get)..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq wrk >/dev/null
  command -v wrk >/dev/null && exit 0
fi
echo "wrk is not installed: run 'sudo apt-get install wrk' (bench/intake.py needs it)." >&2
exit 1
