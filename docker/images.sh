#!/usr/bin/env bash
# `make image`: build mymodel-serve (docker/Dockerfile) and mymodel-offline
# (docker/Dockerfile.offline) from the repository, unchanged, and print their sizes.
#
# With a Docker engine: `docker build`, from the official bases (pytorch/torchserve:0.12.0-cpu,
# python:3.11-slim). Without one: buildah (daemonless, needs root here), from the official bases
# when they are in local storage (e.g. after `podman pull`), else from stand-ins built once by
# docker/base/build.sh and cached in local storage. A rebuild after a code or model change redoes
# only the project's layers.
#
#   SERVE_IMAGE, OFFLINE_IMAGE  the tags to build (default mymodel-serve, mymodel-offline)
#   TORCHSERVE_IMAGE, PYTHON_IMAGE  the bases, to override the choice above
set -euo pipefail
cd "$(dirname "$0")/.."
here=docker
serve_tag="${SERVE_IMAGE:-mymodel-serve}"
offline_tag="${OFFLINE_IMAGE:-mymodel-offline}"
official_torchserve="$(sed -n 's/^ARG TORCHSERVE_IMAGE=//p' "$here/Dockerfile")"
official_python="$(sed -n 's/^ARG PYTHON_IMAGE=//p' "$here/Dockerfile.offline")"

if [ -z "$(ls -A artifacts/model 2>/dev/null)" ]; then
    echo "artifacts/model is empty: run 'make train' first (the images are built from the saved weights)" >&2
    exit 1
fi

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    builder=docker
elif command -v buildah >/dev/null 2>&1; then
    builder=buildah
    export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/$here/podman/containers.conf}"
    export CONTAINERS_STORAGE_CONF="${CONTAINERS_STORAGE_CONF:-$PWD/$here/podman/storage.conf}"
else
    echo "no Docker engine and no buildah: install Docker, or buildah and podman (make container-tools)" >&2
    exit 2
fi

# shellcheck source=pip-mounts.sh
. "$here/pip-mounts.sh"

present() { buildah inspect --type image "$1" >/dev/null 2>&1; }

# The bases: given, official, or (buildah without the official image) the stand-ins.
if [ "$builder" = docker ]; then
    torchserve_base="${TORCHSERVE_IMAGE:-$official_torchserve}"
    python_base="${PYTHON_IMAGE:-$official_python}"
else
    if [ -n "${TORCHSERVE_IMAGE:-}" ]; then torchserve_base="$TORCHSERVE_IMAGE"
    elif present "$official_torchserve"; then torchserve_base="$official_torchserve"
    else
        echo "$official_torchserve is not in local storage: using the stand-in (docker/base)" >&2
        torchserve_base="$("$here/base/build.sh" torchserve)"
    fi
    if [ -n "${PYTHON_IMAGE:-}" ]; then python_base="$PYTHON_IMAGE"
    elif present "$official_python"; then python_base="$official_python"
    else
        echo "$official_python is not in local storage: using the stand-in (docker/base)" >&2
        python_base="$("$here/base/build.sh" python)"
    fi
fi

build() {  # dockerfile tag base-arg base
    local dockerfile="$1" tag="$2" arg="$3" base="$4"
    echo "building $tag from $dockerfile on $base ($builder) ..." >&2
    if [ "$builder" = docker ]; then
        docker build -f "$dockerfile" --build-arg "$arg=$base" -t "$tag" .
    else
        pip_mounts
        # The CPU build of torch comes from the wheel folder here, not from a separate index.
        local extra=()
        [ "$arg" = PYTHON_IMAGE ] && [ -n "$PIP_WHEELS" ] && extra=(--build-arg TORCH_INDEX_URL=)
        buildah bud --isolation chroot --format docker --layers "${PIP_VOLUMES[@]}" "${extra[@]}" \
            --ignorefile "$dockerfile.dockerignore" --build-arg "$arg=$base" -f "$dockerfile" -t "$tag" . >&2
        rm -rf "$PIP_CONF_DIR"
    fi
}

build "$here/Dockerfile" "$serve_tag" TORCHSERVE_IMAGE "$torchserve_base"
# Also the release tag Kubernetes runs, never `latest`: model version + commit (deploy/k8s/image-tag.sh;
# docs/docker-and-kubernetes.md, "Releasing a new version").
if release_tag="$(deploy/k8s/image-tag.sh)"; then
    case "${serve_tag##*/}" in *:*) repository="${serve_tag%:*}" ;; *) repository="$serve_tag" ;; esac
    "$builder" tag "$serve_tag" "$repository:$release_tag" >&2
    echo "release: $repository:$release_tag"
fi
build "$here/Dockerfile.offline" "$offline_tag" PYTHON_IMAGE "$python_base"

size() {
    if [ "$builder" = docker ]; then docker image inspect --format '{{.Size}}' "$1"
    else podman image inspect --format '{{.Size}}' "$1"; fi
}
for tag in "$serve_tag" "$offline_tag"; do
    printf '%s: %s MB\n' "$tag" "$(size "$tag" | awk '{ printf "%.0f", $1 / 1e6 }')"
done
