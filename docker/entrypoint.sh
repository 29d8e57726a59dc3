#!/bin/sh
# Start TorchServe in the foreground with mymodel, from the directory that holds
# config.properties, model-store/ and docker/ (the repository natively, the
# model-server home in the image). Extra arguments go to torchserve.
set -eu
cd "$(dirname "$0")/.."
# TS_MODEL_STORE overrides config.properties' model_store, as TorchServe itself does.
archive="${TS_MODEL_STORE:-model-store}/mymodel.mar"
if [ ! -f "$archive" ]; then
    echo "$archive is missing: run 'make archive' first" >&2
    exit 1
fi
# exec: TorchServe gets the signals (docker stop, Ctrl-C) directly.
exec torchserve --foreground --ncs \
    --ts-config config.properties \
    --log-config docker/log4j2.xml \
    "$@"
