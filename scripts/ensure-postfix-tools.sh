#!/usr/bin/env bash
# Make sure Postfix's smtp-sink and smtp-source are installed for bench/fanout.py (Debian's
# postfix package carries them); install it with apt as root.
set -euo pipefail
if command -v smtp-sink >/dev/null 2>&1 && command -v smtp-source >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian's postfix for smtp-sink and smtp-source (apt-get)..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postfix >/dev/null
  command -v smtp-sink >/dev/null && exit 0
fi
echo "smtp-sink is not installed: run 'sudo apt-get install postfix' (bench/fanout.py needs it)." >&2
exit 1
