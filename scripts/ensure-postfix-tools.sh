#!/usr/bin/env bash
# Make sure Postfix's smtp-sink and smtp-source (Debian's postfix package) are installed for
# bench/fanout.py.
exec bash "$(dirname "$0")/ensure-debian-package.sh" postfix "bench/fanout.py" smtp-sink smtp-source
