#!/bin/bash
# The official image's entrypoint (pytorch/serve v0.12.0 docker/dockerd-entrypoint.sh):
# `serve` starts TorchServe with the image's config.properties, anything else is run as given.
set -e

if [[ "$1" = "serve" ]]; then
    shift 1
    torchserve --start --ts-config /home/model-server/config.properties --disable-token-auth
else
    eval "$@"
fi

# prevent docker exit
tail -f /dev/null
