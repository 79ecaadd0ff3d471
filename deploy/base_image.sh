#!/usr/bin/env bash
# Builds the stand-in base image local/python:3.11-slim from Debian bookworm packages (Debian's "essential"
# set plus python3 3.11, python3-venv and libstdc++6, which torch needs, and apt, as in python:3.11-slim, so
# the load balancer image can install HAProxy from Debian on the same base), for machines that cannot pull
# python:3.11-slim from a registry. The image carries the label invariant.base-revision=$BASE_REVISION: a
# stand-in built by an older revision of this script (without apt) is rebuilt.
# Skips when the image exists (FORCE=1 rebuilds). Needs root, mmdebstrap and a running docker engine.
#
#   deploy/base_image.sh [IMAGE]              # rootfs + import; default IMAGE: local/python:3.11-slim
#   deploy/base_image.sh rootfs TAR           # only the root filesystem tarball (no docker engine needed)
#   deploy/base_image.sh import TAR [IMAGE]   # only the import of that tarball
#   deploy/base_image.sh current [IMAGE]      # exit 0 when IMAGE exists and this revision built it
set -euo pipefail

MODE=all
case "${1:-}" in
    rootfs) MODE=rootfs; TAR="${2:?rootfs needs a TAR path}"; shift 2 ;;
    import) MODE=import; TAR="${2:?import needs a TAR path}"; shift 2 ;;
    current) MODE=current; shift ;;
esac
IMAGE="${1:-${BASE_IMAGE:-local/python:3.11-slim}}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
BASE_REVISION=2

log() { echo "[base-image] $*" >&2; }
die() { echo "[base-image] ERROR: $*" >&2; exit 1; }

make_rootfs() { # OUT (a file, or - for stdout)
    command -v mmdebstrap >/dev/null 2>&1 || die "mmdebstrap not installed (run: deploy/engine.sh install)"
    log "building a bookworm root filesystem (mmdebstrap: essential + python3, python3-venv, libstdc++6, apt)"
    # No apt, docs, man pages or translations in the image, as in the official slim images.
    mmdebstrap --quiet --variant=essential --include=python3,python3-venv,libstdc++6,apt \
        --aptopt='Acquire::Languages "none"' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        bookworm "$1" \
        "deb $MIRROR bookworm main" \
        "deb $MIRROR bookworm-updates main" \
        "deb $SECURITY_MIRROR bookworm-security main"
}

import_rootfs() { # TAR (or - for stdin)
    docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
        --change "LABEL invariant.base-revision=$BASE_REVISION" "$1" "$IMAGE" >/dev/null
    docker run --rm --network none "$IMAGE" \
        sh -c 'command -v apt-get >/dev/null && python3 -c "import ctypes, ensurepip, sys, venv; ctypes.CDLL(\"libstdc++.so.6\"); assert sys.version_info[:2] == (3, 11)"' \
        || die "$IMAGE lacks Python 3.11 with venv, libstdc++ or apt"
    log "built $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
}

# Whether IMAGE exists and was built by this revision of the script (exit status).
current() { [ "$(docker image inspect -f '{{index .Config.Labels "invariant.base-revision"}}' "$IMAGE" 2>/dev/null)" = "$BASE_REVISION" ]; }

case "$MODE" in
    current) current; exit ;;
    rootfs) make_rootfs "$TAR"; exit 0 ;;
    import) import_rootfs "$TAR"; exit 0 ;;
esac
if [ "${FORCE:-0}" != 1 ] && current; then
    log "$IMAGE already present"
    exit 0
fi
make_rootfs - | import_rootfs -
