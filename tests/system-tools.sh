#!/bin/sh
# The outside tools the tests run for real, from Debian's packages, installed when missing (as
# root, or with sudo that needs no password):
#   tests/system-tools.sh prometheus   promtool (checks and unit-tests the alert rules) and
#                                      prometheus (scrapes a real TorchServe)   make monitoring-tools
#   tests/system-tools.sh chromium     headless Chromium (the report pages and the MLflow UI,
#                                      driven by Playwright)                     make browser-tools
#   tests/system-tools.sh wrk          the HTTP load generator of the capacity benchmark   make bench
#   tests/system-tools.sh haproxy      the bounding proxy docker/entrypoint.sh puts in front of the
#                                      inference port (docker/haproxy.cfg)      make run / serve
# Exit 0 when they are there, 3 (with the reason) when they cannot be had on this machine.
set -eu
missing=""
packages=""
for group in "$@"; do
    case "$group" in
        prometheus) commands="promtool prometheus" ;;
        chromium) commands="chromium" ;;
        wrk) commands="wrk" ;;
        haproxy) commands="haproxy" ;;
        *) echo "unknown tool group '$group': prometheus, chromium, wrk or haproxy" >&2; exit 2 ;;
    esac
    for command in $commands; do
        if ! command -v "$command" >/dev/null 2>&1; then
            missing="$missing $command"
            case " $packages " in *" $group "*) ;; *) packages="$packages $group" ;; esac
        fi
    done
done
[ -z "$missing" ] && exit 0
as_root=""
[ "$(id -u)" = 0 ] || { sudo -n true 2>/dev/null && as_root="sudo -n"; } || as_root="none"
if [ "$as_root" != none ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing$packages (missing:$missing)" >&2
    $as_root apt-get update -qq
    # a package's service is not started here: the tests run their own servers on free ports
    # shellcheck disable=SC2086
    $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages >/dev/null
    exit 0
fi
echo "missing:$missing; they cannot be installed without root and apt-get: apt-get install -y$packages" >&2
exit 3
