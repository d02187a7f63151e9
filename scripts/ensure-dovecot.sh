#!/usr/bin/env bash
# Make sure Debian's Dovecot (IMAP server and its delivery agent) is installed for the
# inbound mail tests; install it with apt as root. The tests start their own Dovecot on free
# ports: a system one the package may have started is stopped (it is never used).
set -euo pipefail
PATH="$PATH:/usr/sbin:/sbin"
missing=0
[ -x /usr/lib/dovecot/dovecot-lda ] || missing=1
if [ "$missing" = 0 ] && command -v dovecot >/dev/null 2>&1; then exit 0; fi
if bash "$(dirname "$0")/ensure-debian-package.sh" dovecot-imapd "the inbound mail tests" dovecot; then
  if [ "$(id -u)" = "0" ]; then
    # The package's own service (ports 143 and 993) is not what the tests use.
    (systemctl disable --now dovecot.service || service dovecot stop || true) >/dev/null 2>&1
    if pid=$(cat /run/dovecot/master.pid 2>/dev/null) && [ -n "$pid" ]; then
      kill "$pid" 2>/dev/null || true
    fi
  fi
  [ -x /usr/lib/dovecot/dovecot-lda ] && exit 0
fi
if [ "${CI:-}" = "true" ]; then exit 1; fi
echo "Outside CI the inbound mail tests will be skipped." >&2
