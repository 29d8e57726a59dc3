#!/bin/sh
# Point deploy/k8s at one build of the serving image: writes release/kustomization.yaml beside
# this script (the component kustomization.yaml includes) and prints the reference.
#
#   deploy/k8s/set-image.sh registry.example.com/ml/mymodel-serve:1.0-63a6473f-g0123456789ab@sha256:<64 hex>
#
# The reference needs a tag, the release's name (deploy/k8s/image-tag.sh: model version +
# commit); the digest after it, as the registry reported it on push, pins the very image, so
# every node runs the same bytes whatever happens to the tag later. Refused: no tag, `latest`,
# and a build from a work tree that differed from its commit ("-dirty").
# The Deployment also gets the reference as its change-cause (`kubectl rollout history`) and
# its pods the tag as app.kubernetes.io/version (`kubectl get pods -L app.kubernetes.io/version`).
set -eu
usage="usage: $0 <registry>/<path>/mymodel-serve:<tag>[@sha256:<digest>]"
[ $# -eq 1 ] || { echo "$usage" >&2; exit 2; }
reference="$1"
refuse() { echo "refused '$reference': $1" >&2; exit 2; }

case "$reference" in
    *@*) named="${reference%@*}" digest="${reference##*@}" ;;
    *) named="$reference" digest="" ;;
esac
case "${named##*/}" in
    *:*) name="${named%:*}" tag="${named##*:}" ;;
    *) refuse "no tag: name the release (deploy/k8s/image-tag.sh), e.g. $named:1.0-63a6473f-g0123456789ab" ;;
esac
echo "$name" | grep -Eq '^[a-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)*$' \
    || refuse "'$name' is not an image name"
# A tag that is also a valid label value (63 characters, letters and digits at both ends).
echo "$tag" | grep -Eq '^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$' \
    || refuse "'$tag' is not a tag of at most 63 letters, digits, '.', '_' and '-'"
[ "$tag" != latest ] || refuse "'latest' names whatever was pushed last: use the release tag"
case "$tag" in *-dirty) refuse "built from uncommitted changes: commit, then build again" ;; esac
if [ -n "$digest" ]; then
    echo "$digest" | grep -Eq '^sha256:[0-9a-f]{64}$' || refuse "'$digest' is not a sha256 digest"
fi

release="$(dirname "$0")/release"
mkdir -p "$release"
{
    echo "# Written by deploy/k8s/set-image.sh: the build of the serving image this deployment runs."
    echo "apiVersion: kustomize.config.k8s.io/v1alpha1"
    echo "kind: Component"
    echo "images:"
    echo "  - name: mymodel-serve"
    echo "    newName: $name"
    echo "    newTag: \"$tag\""
    [ -z "$digest" ] || echo "    digest: $digest"
    echo "patches:"
    echo "  - patch: |-"
    echo "      apiVersion: apps/v1"
    echo "      kind: Deployment"
    echo "      metadata:"
    echo "        name: mymodel-serve"
    echo "        annotations:"
    echo "          kubernetes.io/change-cause: \"image $reference\""
    echo "      spec:"
    echo "        template:"
    echo "          metadata:"
    echo "            labels:"
    echo "              app.kubernetes.io/version: \"$tag\""
} > "$release/kustomization.yaml.tmp"
mv "$release/kustomization.yaml.tmp" "$release/kustomization.yaml"
echo "$reference"
