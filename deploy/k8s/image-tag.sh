#!/bin/sh
# The serving image's release tag: the model version the image serves (the "version" of
# artifacts/model/config.json, 1.0-<weights hash>) and the commit it is built from, as
# `make image` tags mymodel-serve, e.g. 1.0-63a6473f-g0123456789ab. A build from a work tree
# that differs from its commit gets "-dirty" appended, and deploy/k8s/set-image.sh refuses it.
#
#   MODEL_DIR  where training wrote config.json (default artifacts/model, what the image is built from)
set -eu
cd "$(dirname "$0")/../.."
config="${MODEL_DIR:-artifacts/model}/config.json"
if [ ! -f "$config" ]; then
    echo "$config is missing: run 'make train' first (the tag names the model version)" >&2
    exit 1
fi
version="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["version"])' "$config")"
if ! echo "$version" | grep -Eq '^[A-Za-z0-9][A-Za-z0-9._-]*$'; then
    echo "$config: version '$version' cannot be part of an image tag" >&2
    exit 1
fi
if ! commit="$(git rev-parse --short=12 HEAD 2>/dev/null)"; then
    echo "not a git work tree with a commit: the tag names the commit the image is built from" >&2
    exit 1
fi
dirty=""
[ -z "$(git status --porcelain)" ] || dirty="-dirty"
echo "$version-g$commit$dirty"
