#!/usr/bin/env bash
# Fills deploy/wheelhouse/ with wheels for every pinned runtime dependency (requirements.lock), using the
# host's pip, so that the image build installs them with `pip install --no-index` and needs no network. This
# is how air-gapped users build, and how the deployment test builds here (no registry reachable from inside
# a build). Skips when the wheelhouse matches the lock (FORCE=1 rebuilds).
#
# The wheels must suit the image's Python: CPython 3.11 on x86_64 Linux (the host pip must be that). torch
# must be a CPU build: the check below refuses a CUDA torch or any nvidia-* wheel. On this machine kind pip
# finds the torch 2.13.0+cpu wheel on disk; elsewhere point pip at the CPU wheels, e.g.
#   PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu deploy/wheelhouse.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCK="$ROOT/requirements.lock"
DEST="$ROOT/deploy/wheelhouse"
PYTHON="${PYTHON:-python3}"

log() { echo "[wheelhouse] $*" >&2; }
die() { echo "[wheelhouse] ERROR: $*" >&2; exit 1; }

[ -f "$LOCK" ] || die "no $LOCK"
target="$("$PYTHON" -c 'import platform, sys; print(f"{sys.implementation.name}{sys.version_info[0]}{sys.version_info[1]}-{platform.machine()}")')"
[ "$target" = cpython311-x86_64 ] || die "the host Python is $target; the image needs wheels for cpython311-x86_64 (set PYTHON=)"
stamp="$(sha256sum "$LOCK" | cut -d' ' -f1) $target"
if [ "${FORCE:-0}" != 1 ] && [ -f "$DEST/.stamp" ] && [ "$(cat "$DEST/.stamp")" = "$stamp" ]; then
    log "up to date with requirements.lock ($(du -sh "$DEST" | cut -f1))"
    exit 0
fi

tmp="$DEST.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
log "downloading the wheels of requirements.lock with the host's pip"
if ! "$PYTHON" -m pip download -q --disable-pip-version-check --only-binary=:all: --require-hashes -r "$LOCK" -d "$tmp" \
        >"$tmp/.pip.log" 2>&1; then
    grep -v 'is ignored: it is neither a file nor a directory' "$tmp/.pip.log" | tail -20 >&2
    die "pip download failed"
fi
rm -f "$tmp/.pip.log"
shopt -s nullglob
torch_wheels=("$tmp"/torch-*.whl)
[ ${#torch_wheels[@]} -eq 1 ] || die "expected one torch wheel, found ${#torch_wheels[@]}"
case "$(basename "${torch_wheels[0]}")" in
    *+cpu-*) ;;
    *) die "$(basename "${torch_wheels[0]}") is not a CPU build of torch; refusing (see the header of $0)" ;;
esac
nvidia=("$tmp"/nvidia_*.whl "$tmp"/triton-*.whl)
[ ${#nvidia[@]} -eq 0 ] || die "CUDA wheels were resolved: ${nvidia[*]##*/}"
echo "$stamp" >"$tmp/.stamp"
rm -rf "$DEST"
mv "$tmp" "$DEST"
trap - EXIT
log "$(find "$DEST" -name '*.whl' | wc -l) wheels, $(du -sh "$DEST" | cut -f1)"
