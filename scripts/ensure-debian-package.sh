#!/usr/bin/env bash
# ensure-debian-package.sh PACKAGE PURPOSE COMMAND...: make sure every COMMAND exists,
# installing Debian's PACKAGE with apt when running as root. Exits 1 when it cannot.
set -euo pipefail
package=$1 purpose=$2
shift 2
have_all() { for command in "$@"; do command -v "$command" >/dev/null 2>&1 || return 1; done; }
if have_all "$@"; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian's $package for $purpose (apt-get)..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || true
  apt-get install -y -qq "$package" >/dev/null || true
  have_all "$@" && exit 0
fi
echo "$1 is not installed: run 'sudo apt-get install $package' (needed by $purpose)." >&2
exit 1
