# Sourced by docker/images.sh and docker/base/build.sh (bash). pip inside a buildah build reaches
# the package index with the host's certificate authorities and, where the machine keeps one, its
# local wheel folder (e.g. the CPU build of torch), both mounted read-only for the RUN steps only:
# the image never contains them, and the host's PIP_* variables never reach it (buildah passes
# no host environment to RUN).
#
# pip_mounts sets PIP_VOLUMES (buildah options), PIP_WHEELS (the wheel folder, or empty) and
# PIP_CONF_DIR (the generated pip.conf's folder, for the caller to remove).
pip_mounts() {
    local ca="${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}"
    PIP_CONF_DIR="$(mktemp -d /var/tmp/mymodel-pip.XXXXXX)"
    PIP_WHEELS="${WHEELS_DIR:-${PIP_FIND_LINKS:-}}"
    printf '[global]\ncert = /run/host-ca.crt\ndisable-pip-version-check = true\n' > "$PIP_CONF_DIR/pip.conf"
    PIP_VOLUMES=(--volume "$ca:/run/host-ca.crt:ro" --volume "$PIP_CONF_DIR/pip.conf:/etc/pip.conf:ro")
    if [ -n "$PIP_WHEELS" ] && [ -d "$PIP_WHEELS" ]; then
        printf 'find-links = /run/host-wheels\n' >> "$PIP_CONF_DIR/pip.conf"
        PIP_VOLUMES+=(--volume "$PIP_WHEELS:/run/host-wheels:ro")
    else
        PIP_WHEELS=""
    fi
}
