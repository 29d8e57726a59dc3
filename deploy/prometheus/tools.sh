#!/bin/sh
# Make sure Prometheus's own tools are here for the tests: promtool (checks and unit-tests the
# alert rules) and prometheus (scrapes a real TorchServe in the integration tests), from
# Debian's prometheus package, installed when missing (as root, or with sudo that needs no password).
# Exit 0 when they are there, 3 (with the reason) when they cannot be had on this machine.
set -eu
command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 && exit 0
# as root, or through sudo where it needs no password (a CI runner)
as_root=""
[ "$(id -u)" = 0 ] || { sudo -n true 2>/dev/null && as_root="sudo -n"; } || as_root="none"
if [ "$as_root" != none ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing prometheus (promtool, prometheus)" >&2
    $as_root apt-get update -qq
    # the package's service is not started here: the tests run their own server on a free port
    $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    exit 0
fi
echo "promtool and prometheus are missing and cannot be installed without root and apt-get:" >&2
echo "apt-get install -y prometheus" >&2
exit 3
