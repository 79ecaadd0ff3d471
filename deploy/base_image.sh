#!/usr/bin/env bash
# Builds the stand-in base image local/python:3.11-slim from Debian bookworm packages (python3 3.11 and
# python3-venv), for machines that cannot pull python:3.11-slim from a registry. Skips when the image exists
# (FORCE=1 rebuilds). Needs root, mmdebstrap and a running docker engine.
#
#   deploy/base_image.sh [IMAGE]       # default IMAGE: local/python:3.11-slim
set -euo pipefail

IMAGE="${1:-${BASE_IMAGE:-local/python:3.11-slim}}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"

log() { echo "[base-image] $*" >&2; }
die() { echo "[base-image] ERROR: $*" >&2; exit 1; }

if [ "${FORCE:-0}" != 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "$IMAGE already present"
    exit 0
fi
command -v mmdebstrap >/dev/null 2>&1 || die "mmdebstrap not installed (run: deploy/engine.sh install)"

log "building $IMAGE from Debian bookworm packages (mmdebstrap, minbase + python3 + python3-venv)"
# Docs, man pages and translations are left out, as in the official slim images.
mmdebstrap --quiet --variant=minbase --include=python3,python3-venv \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    bookworm - \
    "deb $MIRROR bookworm main" \
    "deb $MIRROR bookworm-updates main" \
    "deb $SECURITY_MIRROR bookworm-security main" \
    | docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$IMAGE" >/dev/null
docker run --rm "$IMAGE" python3 -c 'import sys, venv, ensurepip; assert sys.version_info[:2] == (3, 11), sys.version' \
    || die "$IMAGE has no working Python 3.11 with venv"
log "built $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
