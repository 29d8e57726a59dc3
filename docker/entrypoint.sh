#!/bin/sh
# Start TorchServe with mymodel, from the directory that holds config.properties,
# model-store/ and docker/ (the repository natively, the model-server home in the
# image), and stay its parent until it ends. Extra arguments go to torchserve.
#
#   SIGTERM / SIGINT   drain and stop: the healthcheck turns not-ready at once, requests keep
#                      being served for TS_DRAIN_SECONDS (default 0), then every child is asked
#                      to stop; what still runs TS_STOP_SECONDS later (default 10) is killed.
#                      Exit 0 when all stopped in time (in seconds, not the stop's grace
#                      period), 1 when something had to be killed. Both are whole seconds
#   a child ends       TorchServe, the bounding proxy (HAProxy) or the management gateway (any
#                      process started with `start` below) ending on its own ends the container:
#                      it says which and with what status, stops the others the same way, and
#                      exits 1
#   model not loaded   when the frontend is up but the model is not (an unreadable archive,
#                      an unwritable TEMP), it says so and exits 1 instead of serving nothing
#   LOG_FORMAT=json    every log line one JSON object: TorchServe's (docker/log4j2-json.xml), the
#                      handler's request log (handler/request_log.py), the management
#                      gateway's and this script's
#   ACCESS_LOG_LEVEL=info  a line per request: TorchServe's access log and the request log
#   MANAGEMENT_TOKEN_FILE  publish the management API on 0.0.0.0:8081 through
#                      docker/management_gateway.py: every caller needs
#                      "Authorization: Bearer <the file's token>"; TorchServe's own
#                      management API moves to 127.0.0.1:8091. Without it, management
#                      listens on loopback only (config.properties)
#   the bounding proxy HAProxy (docker/haproxy.cfg) takes the inference address (and the
#                      gateway's published one) and forwards whole requests to TorchServe's
#                      inference API on INFERENCE_UPSTREAM_ADDRESS (http://127.0.0.1:8090)
set -eu
cd "$(dirname "$0")/.."
# say LEVEL MESSAGE: this script's own lines, on stderr, as JSON objects with LOG_FORMAT=json
say() {
    if [ "${LOG_FORMAT:-text}" = json ]; then
        printf '{"time":"%s","level":"%s","logger":"entrypoint","message":"%s"}\n' \
            "$(date -u +%Y-%m-%dT%H:%M:%S.000Z)" "$1" "$(printf %s "$2" | sed 's/\\/\\\\/g; s/"/\\"/g')" >&2
    else
        echo "$2" >&2
    fi
}
# --- the children: every process the container needs; any one ending ends the container ---------

children=""   # NAME=PID of each child, in the order they started
stopping=""   # why the container stops: signal (SIGTERM, SIGINT), model (not loaded), child (one ended)
# Installed before any child starts, so that no stop signal is missed; the traps only take note,
# the supervising loop at the end does the work.
trap '[ -n "$stopping" ] || stopping=signal' TERM INT
# The startup watcher's SIGUSR1: the frontend is up without its model (the watcher says why).
trap '[ -n "$stopping" ] || stopping=model' USR1

# start NAME COMMAND...: run a child in the background and supervise it (not once stopping).
start() {
    name=$1
    shift
    [ -z "$stopping" ] || return 0
    "$@" &
    children="$children $name=$!"
}

# ended: the first child that no longer runs, as NAME=PID (nothing while all run). The shell reaps
# a child that exits while it waits (see poll), so kill -0 fails for it from then on.
ended() {
    for child in $children; do
        kill -0 "${child#*=}" 2>/dev/null || { echo "$child"; return 0; }
    done
}

# running: the children that still run, as NAME=PID.
running() {
    for child in $children; do
        if kill -0 "${child#*=}" 2>/dev/null; then echo "$child"; fi
    done
}

# poll: half a second, or less when a signal arrives (the wait returns at once to run its trap).
poll() {
    sleep 0.5 &
    wait $! || true
}

# signal_processes SIGNAL children|tree PID: send SIGNAL to the processes PID started, or to PID
# and every process under it, then wait (5 s at most) until those are gone (with psutil, which
# TorchServe itself needs).
signal_processes() {
    python - "$@" 2>/dev/null <<'EOF' || true
import signal, sys, time, psutil
number, which, pid = getattr(signal, "SIG" + sys.argv[1]), sys.argv[2], int(sys.argv[3])
try:
    root = psutil.Process(pid)
    found = root.children(recursive=which == "tree") + ([root] if which == "tree" else [])
except psutil.Error:
    found = []
for process in found:
    try:
        process.send_signal(number)
    except psutil.Error:
        pass


def running(process):
    try:
        return process.status() != psutil.STATUS_ZOMBIE  # a zombie is gone but for its parent's records
    except psutil.Error:
        return False


deadline = time.monotonic() + 5
while which == "tree" and any(running(process) for process in found) and time.monotonic() < deadline:
    time.sleep(0.05)
EOF
}

# terminate NAME=PID: ask a child to stop. TorchServe's launcher only waits for the frontend (a
# JVM) it started, and would leave it running if it were stopped itself: the JVM is asked, as soon
# as it exists. Any other child is asked itself.
terminate() {
    case $1 in
        torchserve=*) signal_processes TERM children "${1#*=}" ;;
        *) kill -TERM "${1#*=}" 2>/dev/null || true ;;
    esac
}

# The stop's timings, checked before anything starts: a bad value found only at the stop would
# end this script there and leave its children running.
for setting in "TS_DRAIN_SECONDS=${TS_DRAIN_SECONDS:-0}" "TS_STOP_SECONDS=${TS_STOP_SECONDS:-10}"; do
    case ${setting#*=} in
        '' | *[!0-9]*)
            say error "${setting%%=*} must be a whole number of seconds, not '${setting#*=}'"
            exit 1 ;;
    esac
done
# The model store: config.properties' model_store unless TS_MODEL_STORE overrides it,
# as TorchServe itself resolves it (its launcher checks the directory before the JVM starts).
store="${TS_MODEL_STORE:-$(sed -n 's/^model_store=//p' config.properties)}"
# The archives to load at start (load_models, or TS_LOAD_MODELS, e.g. a registry version
# mymodel-v3.mar): each must be in the store, or the server would start with no model.
models="${TS_LOAD_MODELS:-$(sed -n 's/^load_models=//p' config.properties)}"
for entry in $(echo "$models" | tr ',' ' '); do
    archive="${entry#*=}"
    if [ ! -f "$store/$archive" ]; then
        say error "$store/$archive is missing: run 'make archive' first"
        exit 1
    fi
done
# The temporary directory (TMPDIR, TEMP, TMP, else /tmp, as docker/healthcheck.py reads it):
# the draining mark and the notes for the healthcheck live there.
tmp="${TMPDIR:-${TEMP:-${TMP:-/tmp}}}"
draining="$tmp/.mymodel.draining"
rm -f "$draining"

# The bounding proxy (docker/haproxy.cfg) takes the inference address; TorchServe's inference API
# moves behind it, to loopback. Every request reaches TorchServe whole and within its deadline.
command -v haproxy >/dev/null 2>&1 || {
    say error "haproxy is missing: it bounds the inference port (make run installs it; apt-get install haproxy)"
    exit 1
}
inference="${TS_INFERENCE_ADDRESS:-$(sed -n 's/^inference_address=//p' config.properties)}"
export PROXY_INFERENCE_BIND="${inference#*://}"
upstream="${INFERENCE_UPSTREAM_ADDRESS:-http://127.0.0.1:8090}"
export TS_INFERENCE_ADDRESS="$upstream" PROXY_INFERENCE_SERVER="${upstream#*://}"
MAX_REQUEST_SIZE="${TS_MAX_REQUEST_SIZE:-$(sed -n 's/^max_request_size=//p' config.properties)}"
export MAX_REQUEST_SIZE PROXY_BUFSIZE=$((MAX_REQUEST_SIZE + 65536))
proxy_configs="-f docker/haproxy.cfg"

management="${TS_MANAGEMENT_ADDRESS:-$(sed -n 's/^management_address=//p' config.properties)}"
rm -f "$tmp/.mymodel.management"
if [ -n "${MANAGEMENT_TOKEN_FILE:-}" ]; then
    # TorchServe's management moves to another loopback port; the gateway listens on loopback
    # behind the proxy, which takes 8081 on all interfaces.
    published="${MANAGEMENT_GATEWAY_ADDRESS:-http://0.0.0.0:8081}"
    management="${MANAGEMENT_UPSTREAM_ADDRESS:-http://127.0.0.1:8091}"
    gateway_address="${MANAGEMENT_GATEWAY_UPSTREAM_ADDRESS:-http://127.0.0.1:8092}"
    export TS_MANAGEMENT_ADDRESS="$management"
    export PROXY_MANAGEMENT_BIND="${published#*://}" PROXY_MANAGEMENT_SERVER="${gateway_address#*://}"
    proxy_configs="$proxy_configs -f docker/haproxy-management.cfg"
    ( echo "$management" > "$tmp/.mymodel.management" ) 2>/dev/null || true
    start management-gateway python docker/management_gateway.py --listen "$gateway_address" \
        --upstream "$management" --token-file "$MANAGEMENT_TOKEN_FILE"
fi
# shellcheck disable=SC2086
haproxy -q -c $proxy_configs || { say error "the proxy's configuration is not valid (docker/haproxy.cfg)"; exit 1; }
# shellcheck disable=SC2086
start proxy haproxy -db $proxy_configs

# LOG_FORMAT=json: every log line one JSON object (docker/log4j2-json.xml; the handler's
# request log follows the same variable).
logging=docker/log4j2.xml
[ "${LOG_FORMAT:-text}" = json ] && logging=docker/log4j2-json.xml

# The frontend plugins: plugins/ unless TS_PLUGINS_PATH names another folder. The one folder is
# both the launcher's class path entry and the frontend's plugins_path (TS_PLUGINS_PATH, read as
# enable_envvars_config allows), so no other build of the same classes can be loaded instead.
TS_PLUGINS_PATH="${TS_PLUGINS_PATH:-plugins}"
export TS_PLUGINS_PATH

start torchserve torchserve --foreground --ncs \
    --ts-config config.properties \
    --plugins-path "$TS_PLUGINS_PATH" \
    --model-store "$store" \
    --log-config "$logging" \
    "$@"

# A frontend that is up without its model is a failed start, not a degraded one: the watcher
# says why and sends SIGUSR1. It ends once the model is loaded, so it is not a supervised child.
watcher=""
if [ -n "$models" ] && [ -z "$stopping" ]; then
    python docker/healthcheck.py --management-url "$management" --wait-loaded \
        --timeout "${TS_STARTUP_SECONDS:-300}" --notify-pid $$ &
    watcher=$!
fi

# --- supervise until a stop signal, a failed start or a child's end ------------------------------

dead=""
while [ -z "$stopping" ]; do
    dead=$(ended)
    if [ -n "$dead" ]; then stopping=child; else poll; fi
done

# --- stop: not ready at once, drain, ask every child to stop, a bounded wait, then KILL ----------

# (a subshell: a failed redirection of the special builtin ':' would end this shell)
( : > "$draining" ) 2>/dev/null || true
case $stopping in
    signal)
        say info "stopping: not ready from now on, draining for ${TS_DRAIN_SECONDS:-0} s"
        sleep "${TS_DRAIN_SECONDS:-0}" ;;
    child)
        status=0
        wait "${dead#*=}" || status=$?
        say error "${dead%%=*} stopped unexpectedly (status $status): stopping the container" ;;
esac
[ -z "$watcher" ] || kill -TERM "$watcher" 2>/dev/null || true

# In milliseconds (GNU date): whole seconds would cut the wait short by up to one second.
deadline=$(( $(date +%s%3N) + ${TS_STOP_SECONDS:-10} * 1000 ))
# The proxy first stops taking connections and finishes the requests in flight (HAProxy's soft
# stop, SIGUSR1), so none is cut when TorchServe stops behind it; the stop's deadline bounds it.
for child in $(running); do
    case $child in
        proxy=*)
            kill -USR1 "${child#*=}" 2>/dev/null || true
            while kill -0 "${child#*=}" 2>/dev/null && [ "$(date +%s%3N)" -lt "$deadline" ]; do poll; done ;;
    esac
done
left=$(running)
while [ -n "$left" ] && [ "$(date +%s%3N)" -lt "$deadline" ]; do
    for child in $left; do terminate "$child"; done
    poll
    left=$(running)
done
killed=0
for child in $left; do
    say error "${child%%=*} still ran ${TS_STOP_SECONDS:-10} s after it was asked to stop (TS_STOP_SECONDS): killed"
    signal_processes KILL tree "${child#*=}"
    killed=1
done
for child in $children; do wait "${child#*=}" 2>/dev/null || true; done
rm -f "$draining"
[ "$stopping" = signal ] && [ "$killed" = 0 ] && exit 0
exit 1
