#!/usr/bin/env bash
# Pins every Kubernetes and KServe manifest (deploy/k8s/) to one image by digest, so that every node runs the
# same build (the service's contract is bitwise-identical replicas; a tag can move between pulls).
#
#   deploy/pin_image.sh REGISTRY/invariant-serve@sha256:<64 hex>    # rewrites the `image:` lines in place
#
# The digest: `docker push` prints it, or `docker image inspect -f '{{index .RepoDigests 0}}' IMAGE` after a
# push (deploy/deploy_test.sh prints the content digest of the image it built). A reference without a digest
# is refused.
set -euo pipefail
REF="${1:-}"
[[ "$REF" =~ ^[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}$ ]] \
    || { echo "usage: $0 REGISTRY/invariant-serve@sha256:<64 hex digits> (a reference by digest)" >&2; exit 2; }
DIR="${K8S_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/k8s}"
mapfile -t files < <(grep -rlE '^\s*image: ' "$DIR" --include='*.yaml')
for file in "${files[@]}"; do
    sed -i -E "s#^(\s*image: ).*#\1$REF#" "$file"
    echo "pinned $file"
done
