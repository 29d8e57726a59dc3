#!/bin/sh
# Start TorchServe in the foreground with mymodel, from the directory that holds
# config.properties, model-store/ and docker/ (the repository natively, the
# model-server home in the image). Extra arguments go to torchserve.
set -eu
cd "$(dirname "$0")/.."
# The model store: config.properties' model_store unless TS_MODEL_STORE overrides it,
# as TorchServe itself resolves it (its launcher checks the directory before the JVM starts).
store="${TS_MODEL_STORE:-$(sed -n 's/^model_store=//p' config.properties)}"
# The archives to load at start (load_models, or TS_LOAD_MODELS, e.g. a registry version
# mymodel-v3.mar): each must be in the store, or the server would start with no model.
models="${TS_LOAD_MODELS:-$(sed -n 's/^load_models=//p' config.properties)}"
for entry in $(echo "$models" | tr ',' ' '); do
    archive="${entry#*=}"
    if [ ! -f "$store/$archive" ]; then
        echo "$store/$archive is missing: run 'make archive' first" >&2
        exit 1
    fi
done
# exec: TorchServe gets the signals (docker stop, Ctrl-C) directly.
exec torchserve --foreground --ncs \
    --ts-config config.properties \
    --model-store "$store" \
    --log-config docker/log4j2.xml \
    "$@"
