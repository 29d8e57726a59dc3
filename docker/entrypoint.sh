#!/bin/sh
# Start TorchServe with mymodel, from the directory that holds config.properties,
# model-store/ and docker/ (the repository natively, the model-server home in the
# image), and stay its parent until it ends. Extra arguments go to torchserve.
#
#   SIGTERM / SIGINT   drain and stop: the healthcheck turns not-ready at once, requests keep
#                      being served for TS_DRAIN_SECONDS (default 0), then TorchServe stops and
#                      this script exits 0 (in seconds, not the stop's grace period)
#   model not loaded   when the frontend is up but the model is not (an unreadable archive,
#                      an unwritable TEMP), it says so and exits 1 instead of serving nothing
#   LOG_FORMAT=json    every log line one JSON object: TorchServe's (docker/log4j2-json.xml), the
#                      handler's request log (handler/request_log.py) and this script's
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
gateway=""
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
    python docker/management_gateway.py --listen "$gateway_address" --upstream "$management" \
        --token-file "$MANAGEMENT_TOKEN_FILE" &
    gateway=$!
fi
# shellcheck disable=SC2086
haproxy -q -c $proxy_configs || { say error "the proxy's configuration is not valid (docker/haproxy.cfg)"; exit 1; }
# shellcheck disable=SC2086
haproxy -db $proxy_configs &
proxy=$!

# LOG_FORMAT=json: every log line one JSON object (docker/log4j2-json.xml; the handler's
# request log follows the same variable).
logging=docker/log4j2.xml
[ "${LOG_FORMAT:-text}" = json ] && logging=docker/log4j2-json.xml

torchserve --foreground --ncs \
    --ts-config config.properties \
    --model-store "$store" \
    --log-config "$logging" \
    "$@" &
launcher=$!

stopping=0
stop() {
    [ "$stopping" = 1 ] && return
    stopping=1
    # (a subshell: a failed redirection of the special builtin ':' would end this shell)
    ( : > "$draining" ) 2>/dev/null || true
    say info "stopping: not ready from now on, draining for ${TS_DRAIN_SECONDS:-0} s"
    sleep "${TS_DRAIN_SECONDS:-0}"
    # The proxy stops taking connections and finishes the requests in flight (a soft stop, at
    # most 10 s), so none is cut when TorchServe stops behind it.
    if kill -USR1 "$proxy" 2>/dev/null; then
        waited=0
        # (an exited child stays a zombie until waited for: kill -0 would still find it)
        while grep -qs '^State:[[:space:]]*[^Z[:space:]]' "/proc/$proxy/status" && [ "$waited" -lt 50 ]; do
            sleep 0.2
            waited=$((waited + 1))
        done
    fi
    # The frontend (the JVM the launcher started) stops its listeners and workers and exits;
    # the launcher then returns. The launcher itself ignores SIGTERM when it is PID 1.
    python -c 'import sys, psutil; [child.terminate() for child in psutil.Process(int(sys.argv[1])).children()]' \
        "$launcher" 2>/dev/null || kill -TERM "$launcher" 2>/dev/null || true
}
trap stop TERM INT

# A frontend that is up without its model is a failed start, not a degraded one: the watcher
# says why and sends SIGUSR1.
failed=0
trap 'failed=1; stop' USR1
watcher=""
if [ -n "$models" ]; then
    python docker/healthcheck.py --management-url "$management" --wait-loaded \
        --timeout "${TS_STARTUP_SECONDS:-300}" --notify-pid $$ &
    watcher=$!
fi

status=0
while kill -0 "$launcher" 2>/dev/null; do
    wait "$launcher" || status=$?
done
for helper in $watcher $gateway $proxy; do kill -TERM "$helper" 2>/dev/null || true; done
rm -f "$draining"
[ "$failed" = 1 ] && exit 1
[ "$stopping" = 1 ] && exit 0
say error "TorchServe stopped unexpectedly (status $status)"
exit 1
