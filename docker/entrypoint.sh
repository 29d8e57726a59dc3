#!/bin/sh
# Start TorchServe in the foreground with mymodel, from the directory that holds
# config.properties, model-store/ and docker/ (the repository natively, the
# model-server home in the image). Extra arguments go to torchserve.
set -eu
cd "$(dirname "$0")/.."
# The model store: config.properties' model_store unless TS_MODEL_STORE overrides it,
# as TorchServe itself resolves it (its launcher checks the directory before the JVM starts).
store="${TS_MODEL_STORE:-$(sed -n 's/^model_store=//p' config.properties)}"
if [ ! -f "$store/mymodel.mar" ]; then
    echo "$store/mymodel.mar is missing: run 'make archive' first" >&2
    exit 1
fi
# exec: TorchServe gets the signals (docker stop, Ctrl-C) directly.
exec torchserve --foreground --ncs \
    --ts-config config.properties \
    --model-store "$store" \
    --log-config docker/log4j2.xml \
    "$@"
