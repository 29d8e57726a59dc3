#!/usr/bin/env bash
# Build the project's images from its sources, Dockerfiles unchanged, and print their sizes.
#
#   docker/images.sh                                   # `make image`: mymodel-serve (docker/Dockerfile)
#                                                      # and mymodel-offline (docker/Dockerfile.offline)
#   docker/images.sh build -t TAG -f DOCKERFILE CONTEXT  # one `docker build`, as the README types it
#                                                      # (what tests/image/docker runs for it)
#
# Both builds train the model themselves from the shipped data (no artifacts/ in the context),
# sharing the training stage. With a Docker engine: `docker build`, from the official bases
# (pytorch/torchserve:0.12.0-cpu, python:3.11-slim). Without one: buildah (daemonless, needs root
# here), from the official bases when they are in local storage (e.g. after `podman pull`), else
# from stand-ins built once by docker/base/build.sh and cached in local storage. Layers are
# cached: a rebuild after a code change redoes only the layers it changes (the training only
# after a change to the data, the training code, params.yaml or docker/train.lock).
#
#   SERVE_IMAGE, OFFLINE_IMAGE      the tags `make image` builds (default mymodel-serve, mymodel-offline)
#   TORCHSERVE_IMAGE, PYTHON_IMAGE  the bases, to override the choice above
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    builder=docker
elif command -v buildah >/dev/null 2>&1; then
    builder=buildah
    export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/podman/containers.conf}"
    export CONTAINERS_STORAGE_CONF="${CONTAINERS_STORAGE_CONF:-$here/podman/storage.conf}"
else
    echo "no Docker engine and no buildah: install Docker, or buildah and podman (make container-tools)" >&2
    exit 2
fi

# shellcheck source=pip-mounts.sh
. "$here/pip-mounts.sh"

present() { buildah inspect --type image "$1" >/dev/null 2>&1; }

base() {  # ARG-name Dockerfile -> the base to build it on: given, official, or a stand-in
    local arg="$1" dockerfile="$2" official given kind
    official="$(sed -n "s/^ARG $arg=//p" "$dockerfile")"
    given="${!arg:-}"
    if [ -n "$given" ]; then echo "$given"; return; fi
    if [ "$builder" = docker ] || present "$official"; then echo "$official"; return; fi
    case "$arg" in TORCHSERVE_IMAGE) kind=torchserve ;; *) kind=python ;; esac
    echo "$official is not in local storage: using the stand-in (docker/base)" >&2
    "$here/base/build.sh" "$kind"
}

build() {  # tag dockerfile context: one `docker build -t tag -f dockerfile context`
    local tag="$1" dockerfile="$2" context="$3" arg args=()
    for arg in PYTHON_IMAGE TORCHSERVE_IMAGE; do
        if grep -q "^ARG $arg=" "$dockerfile"; then
            args+=(--build-arg "$arg=$(base "$arg" "$dockerfile")")
        fi
    done
    echo "building $tag from $dockerfile ($builder, ${args[*]}) ..." >&2
    if [ "$builder" = docker ]; then
        docker build -f "$dockerfile" "${args[@]}" -t "$tag" "$context"
    else
        pip_mounts
        # The CPU build of torch comes from the wheel folder here, not from the PyTorch index.
        [ -n "$PIP_WHEELS" ] && args+=(--build-arg TORCH_INDEX_URL=)
        buildah bud --isolation chroot --format docker --layers "${PIP_VOLUMES[@]}" "${args[@]}" \
            --ignorefile "$dockerfile.dockerignore" -f "$dockerfile" -t "$tag" "$context" >&2
        rm -rf "$PIP_CONF_DIR"
    fi
}

if [ "${1:-}" = build ]; then
    shift
    tag="" dockerfile=Dockerfile
    while [ $# -gt 1 ]; do
        case "$1" in
            -t|--tag) tag="$2"; shift 2 ;;
            -f|--file) dockerfile="$2"; shift 2 ;;
            *) echo "images.sh build: unknown option $1 (-t TAG -f DOCKERFILE CONTEXT)" >&2; exit 2 ;;
        esac
    done
    [ $# = 1 ] && [ -n "$tag" ] || { echo "usage: images.sh build -t TAG -f DOCKERFILE CONTEXT" >&2; exit 2; }
    build "$tag" "$dockerfile" "$1"
    exit 0
fi

cd "$here/.."
serve_tag="${SERVE_IMAGE:-mymodel-serve}"
offline_tag="${OFFLINE_IMAGE:-mymodel-offline}"
started=$SECONDS
build "$serve_tag" docker/Dockerfile .
# Also the release tag Kubernetes runs, never `latest`: model version + commit (deploy/k8s/image-tag.sh;
# docs/docker-and-kubernetes.md, "Releasing a new version").
if release_tag="$(deploy/k8s/image-tag.sh)"; then
    case "${serve_tag##*/}" in *:*) repository="${serve_tag%:*}" ;; *) repository="$serve_tag" ;; esac
    "$builder" tag "$serve_tag" "$repository:$release_tag" >&2
    echo "release: $repository:$release_tag"
fi
build "$offline_tag" docker/Dockerfile.offline .

size() {
    if [ "$builder" = docker ]; then docker image inspect --format '{{.Size}}' "$1"
    else podman image inspect --format '{{.Size}}' "$1"; fi
}
for tag in "$serve_tag" "$offline_tag"; do
    printf '%s: %s MB\n' "$tag" "$(size "$tag" | awk '{ printf "%.0f", $1 / 1e6 }')"
done
echo "built in $((SECONDS - started)) s" >&2
