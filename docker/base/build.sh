#!/usr/bin/env bash
# Build the stand-in base images into local container storage, once: each is rebuilt only when
# the files it is made from change (their hash is a label on the image).
#
#   docker/base/build.sh torchserve   # prints localhost/mymodel-standin-torchserve:0.12.0-cpu
#   docker/base/build.sh python       # prints localhost/mymodel-standin-python:3.11-slim
#
# torchserve stands in for pytorch/torchserve:0.12.0-cpu (docker/Dockerfile), python for
# python:3.11-slim (the training stage of both Dockerfiles, and docker/Dockerfile.offline). Each starts from a Debian root filesystem made
# by debootstrap from Debian's archive (bullseye has Python 3.9 and a JDK 17, bookworm has
# Python 3.11), imported as an image, then built with buildah from the Dockerfile beside this.
# Needs root, buildah, podman and debootstrap. Progress goes to stderr, the image name to stdout.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
kind="${1:?usage: build.sh torchserve|python}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

case "$kind" in
    torchserve)
        suite=bullseye
        packages=python3.9,python3.9-venv,python3-distutils,openjdk-17-jdk-headless,ca-certificates
        dockerfile=Dockerfile
        context="requirements.txt dockerd-entrypoint.sh config.properties"
        image=localhost/mymodel-standin-torchserve:0.12.0-cpu
        ;;
    python)
        suite=bookworm
        packages=python3.11,python3.11-venv,python3-distutils,ca-certificates
        dockerfile=Dockerfile.python
        context=""
        image=localhost/mymodel-standin-python:3.11-slim
        ;;
    *) echo "unknown stand-in '$kind': torchserve or python" >&2; exit 2 ;;
esac
# Each image is tagged or labelled with the hash of what it is made from, so a change rebuilds
# it and nothing else: the root filesystem from the suite and packages, the image from that
# and the Dockerfile (its comments left out) with the files it copies.
os_hash="$(echo "$suite $packages" | sha256sum | cut -c1-12)"
os_image="localhost/mymodel-standin-os:$suite-$os_hash"
label=org.mymodel.standin.hash
hash="$( (echo "$os_image"; cd "$here" && grep -v '^[[:space:]]*#' "$dockerfile" && cat $context) | sha256sum | cut -c1-16)"
dockerfile="$here/$dockerfile"
current="$(buildah inspect --type image --format "{{index .Docker.Config.Labels \"$label\"}}" "$image" 2>/dev/null || true)"
if [ "$current" = "$hash" ]; then
    echo "$image is up to date (stand-in $hash)" >&2
    echo "$image"
    exit 0
fi

if ! buildah inspect --type image "$os_image" >/dev/null 2>&1; then
    rootfs="$(mktemp -d /var/tmp/mymodel-rootfs.XXXXXX)"
    trap 'rm -rf "$rootfs"' EXIT
    echo "debootstrap $suite with $packages into $rootfs ..." >&2
    debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >&2
    # Package caches and lists are never used in an image; locale data stays.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    echo "importing $rootfs as $os_image ..." >&2
    tar -C "$rootfs" --numeric-owner -c . | podman import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' - "$os_image" >&2
fi

# shellcheck source=../pip-mounts.sh
. "$here/../pip-mounts.sh"
pip_mounts
trap 'rm -rf "$PIP_CONF_DIR" ${rootfs:+"$rootfs"}' EXIT
echo "building $image from $dockerfile ..." >&2
buildah bud --isolation chroot --format docker --layers \
    "${PIP_VOLUMES[@]}" \
    --build-arg OS_IMAGE="$os_image" --label "$label=$hash" \
    -f "$dockerfile" -t "$image" "$here" >&2
echo "$image"
