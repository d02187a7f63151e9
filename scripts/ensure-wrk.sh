#!/usr/bin/env bash
# Make sure Debian's wrk is installed for the HTTP benchmarks (bench/intake.py).
exec bash "$(dirname "$0")/ensure-debian-package.sh" wrk "bench/intake.py" wrk
