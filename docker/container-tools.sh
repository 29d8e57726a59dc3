#!/bin/sh
# Make sure the images can be built and run here: a Docker engine, or buildah and podman with
# what they need to run without one (Debian's packages, installed when missing and run as root).
# Exit 0 when they are there, 3 (with the reason) when they cannot be had on this machine.
set -eu
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    exit 0
fi
packages="buildah podman runc fuse-overlayfs slirp4netns uidmap debootstrap"
missing=""
for tool in buildah podman runc fuse-overlayfs slirp4netns newuidmap debootstrap; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing the container tools ($packages): missing$missing" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages >/dev/null
    exit 0
fi
echo "the images cannot be built here: no Docker engine answers, and buildah/podman are missing ($missing)" >&2
echo "and cannot be installed without root and apt-get; install Docker, or: apt-get install -y $packages" >&2
exit 3
