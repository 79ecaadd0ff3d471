#!/usr/bin/env bash
# Deployment test (`make deploy-test`): the docker compose deployment, end to end, against a real engine.
#
# On a fresh machine of this project's kind (Debian bookworm, root, no init system, no container registry)
# it installs what is missing (Debian's docker.io, the compose v2 plugin, mmdebstrap), starts dockerd when
# none answers, builds the stand-in base image local/python:3.11-slim and the wheelhouse, then:
#   1. docker compose build (server image, HAProxy balancer image; prints their digests), then up -d --wait
#      --scale server=3: the keys job generates the API and admin keys into the `keys` volume, the train job
#      writes digits v1 into the volume, three server replicas become healthy behind the balancer;
#   2. from the host: every replica is healthy and runs as non-root; only the balancer publishes a port;
#      the balancer routes to every replica; with the generated keys (copied out to a 0600 file): inference
#      needs the API key, the admin routes and /metrics refuse it and take only the admin key;
#   3. deploy/invariance_check.py through the balancer (the probe of service/guarantee/probe.py, C from the server's
#      metadata, exact bits) plus V2 infer against V1's bits;
#   4. scale-out (deploy/replica_check.py): requests spread over all replicas, one numerics fingerprint,
#      identical bits for the same probe rows from every replica; one replica killed (SIGKILL) under load
#      costs at most its in-flight requests and the balancer routes around it; then 3 replicas again;
#   5. a second training job (docker compose run --rm train ...) while the replicas serve, no restart: every
#      replica picks up version 2 by polling the repository; prints the time from the training job's end to
#      the first answer from version 2 and to every replica answering from it; versioned V1/V2, invariance
#      and the cross-replica bits on version 2;
#   6. docker compose down -v, which must take < 5 s.
# Every phase is timed; the image size is printed. On any failure: diagnostics, then down -v.
#
# Environment: DEPLOY_PORT (host port, default: a free one), DEPLOY_KEEP_ENGINE=1 (leave a dockerd that this
# run started running), DEPLOY_DOWN_LIMIT_S (default 5), DEPLOY_REPLICAS (default 3), PYTHON (host python,
# default .venv/bin/python).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

LOGS="$ROOT/deploy/.cache/logs"
mkdir -p "$LOGS"
# The generated keys, copied out of the `keys` volume for the checks (0600, removed at exit).
KEYS_DIR="$(mktemp -d "$ROOT/deploy/.cache/keys.XXXXXX")"
export API_KEY_FILE="$KEYS_DIR/api-keys" ADMIN_KEY_FILE="$KEYS_DIR/admin-keys"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHON
export COMPOSE_PROJECT_NAME="invariant-deploytest-$$"
export BASE_IMAGE="${BASE_IMAGE:-local/python:3.11-slim}"
export INVARIANT_IMAGE="${INVARIANT_IMAGE:-invariant-serve:deploy-test}"
export COMPOSE_PROGRESS=plain BUILDKIT_PROGRESS=plain
DOWN_LIMIT_S="${DEPLOY_DOWN_LIMIT_S:-5}"
REPLICAS="${DEPLOY_REPLICAS:-3}"
export BALANCER_BASE_IMAGE="$BASE_IMAGE"
export INVARIANT_BALANCER_IMAGE="${INVARIANT_BALANCER_IMAGE:-invariant-serve-balancer:deploy-test}"
MODEL=digits

T_START=$EPOCHREALTIME
STARTED_DOCKERD=""
BG_PIDS=()
PHASES=()
FINISHED=0
STACK_UP=0

log() { echo "[deploy-test $(elapsed_since "$T_START")s] $*"; }
fail() { echo "[deploy-test] FAILED: $*" >&2; exit 1; }
elapsed_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
logfile() { local n="$1"; echo "$LOGS/${n//[^A-Za-z0-9._-]/_}.log"; }
record() { PHASES+=("$(printf '%-44s %7ss' "$1" "$2")"); log "phase done: $1 ($2 s)"; }

# Runs "$@" as the phase NAME, timing it; its output goes to deploy/.cache/logs/NAME.log, whose tail is shown
# when it fails.
phase() {
    local name="$1" file t0 rc=0
    shift
    file="$(logfile "$name")"
    log "phase: $name"
    t0=$EPOCHREALTIME
    "$@" >"$file" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "----- last lines of $file -----" >&2
        tail -40 "$file" >&2
        echo "-----" >&2
        fail "phase '$name' exited with status $rc"
    fi
    record "$name" "$(elapsed_since "$t0")"
}

compose() { timeout 600 docker compose "$@"; }

on_exit() {
    local rc=$?
    set +e
    rm -rf "$KEYS_DIR"
    for pid in "${BG_PIDS[@]}"; do [ -n "$pid" ] && kill -TERM -- "-$pid" 2>/dev/null; done
    if [ "$FINISHED" != 1 ] && [ "$STACK_UP" = 1 ]; then
        echo "[deploy-test] diagnostics for project $COMPOSE_PROJECT_NAME:" >&2
        timeout 30 docker compose ps -a >&2
        timeout 30 docker compose logs --no-color --tail 60 >&2
        echo "[deploy-test] cleaning up: docker compose down -v" >&2
        timeout 120 docker compose down -v --timeout 5 >&2
    fi
    if [ -n "$STARTED_DOCKERD" ] && [ "${DEPLOY_KEEP_ENGINE:-0}" != 1 ]; then
        bash "$ROOT/deploy/engine.sh" stop "$STARTED_DOCKERD"
    fi
    if [ "$rc" -ne 0 ]; then
        echo "[deploy-test] FAILED (exit $rc) after $(elapsed_since "$T_START") s; logs in $LOGS" >&2
    fi
}
trap on_exit EXIT
trap 'exit 130' INT TERM

# URL [JSON-BODY]: prints the HTTP status code (000 when no answer). Sends the first key of $KEY_FILE (default
# the API key file; KEY_FILE= sends none).
http_status() {
    KEY_FILE="${KEY_FILE-$API_KEY_FILE}" "$PYTHON" - "$@" <<'PY'
import os, sys, urllib.request, urllib.error
from service.guarantee.probe_http import bearer_headers
url = sys.argv[1]
data = sys.argv[2].encode() if len(sys.argv) > 2 else None
headers = {"Content-Type": "application/json", **bearer_headers(os.environ.get("KEY_FILE") or None)}
req = urllib.request.Request(url, data=data, headers=headers)
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        print(r.status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print("000")
PY
}

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ---------------------------------------------------------------------------------------------- setup
[ "$(id -u)" -eq 0 ] || fail "run as root (installs packages, starts dockerd)"
command -v "$PYTHON" >/dev/null 2>&1 || [ -x "$PYTHON" ] || fail "no host python '$PYTHON'"
PORT="${DEPLOY_PORT:-$(free_port)}"
export INVARIANT_HOST_PORT="$PORT"
URL="http://127.0.0.1:$PORT"
log "project $COMPOSE_PROJECT_NAME, image $INVARIANT_IMAGE, base $BASE_IMAGE, $REPLICAS replicas behind $URL"

# Background jobs: NAME CMD... runs CMD with its output in deploy/.cache/logs/NAME.log; bg_wait NAME waits
# for it, fails with the log's tail if it failed, and records its duration as a phase.
declare -A BG_PID BG_T0
# Each job runs in its own session (setsid), so that a failure can stop it with all its children.
bg() {
    local name="$1"
    shift
    BG_T0[$name]=$EPOCHREALTIME
    setsid bash -c 'out="$1"; shift; rc=0; "$@" >"$out" 2>&1 </dev/null || rc=$?; echo "$rc $EPOCHREALTIME" >"$out.done"' \
        _ "$(logfile "$name")" "$@" &
    BG_PID[$name]=$!
    BG_PIDS+=($!)
    log "phase (in the background): $name"
}
bg_wait() {
    local name="$1" rc end
    wait "${BG_PID[$name]}" || true
    local keep=() p
    for p in "${BG_PIDS[@]}"; do [ "$p" = "${BG_PID[$name]}" ] || keep+=("$p"); done
    BG_PIDS=("${keep[@]}")
    read -r rc end <"$(logfile "$name").done" || fail "background phase '$name' left no status"
    sed 's/^/  /' "$(logfile "$name")"
    if [ "$rc" != 0 ]; then fail "phase '$name' exited with status $rc (log: $(logfile "$name"))"; fi
    record "$name (in parallel)" "$(awk -v a="${BG_T0[$name]}" -v b="$end" 'BEGIN { printf "%.1f", b - a }')"
}

# The wheelhouse and the compose plugin need only pip, and the base image's root filesystem only mmdebstrap:
# they run beside the apt install of the engine.
bg "wheelhouse" bash deploy/wheelhouse.sh
bg "compose plugin" bash deploy/engine.sh install-compose
ENGINE_STARTED=0
start_engine() {
    log "phase: start docker engine"
    local t0=$EPOCHREALTIME
    STARTED_DOCKERD="$(bash deploy/engine.sh start 2>"$LOGS/engine_start.log")" \
        || { cat "$LOGS/engine_start.log" >&2; fail "could not start the docker engine"; }
    sed 's/^/  /' "$LOGS/engine_start.log"
    ENGINE_STARTED=1
    record "start docker engine${STARTED_DOCKERD:+ (started pid $STARTED_DOCKERD)}" "$(elapsed_since "$t0")"
}
NEED_BASE=1
if command -v dockerd >/dev/null 2>&1; then
    start_engine
    if bash deploy/base_image.sh current "$BASE_IMAGE"; then
        NEED_BASE=0
        log "base image $BASE_IMAGE present"
    fi
fi
ROOTFS="$ROOT/deploy/.cache/base-rootfs.tar"
if [ "$NEED_BASE" = 1 ]; then
    phase "apt: mmdebstrap (when missing)" bash deploy/engine.sh install-packages mmdebstrap
    rm -f "$ROOTFS"
    bg "base rootfs (mmdebstrap)" bash deploy/base_image.sh rootfs "$ROOTFS"
fi
phase "apt: docker.io (when missing)" bash deploy/engine.sh install-packages docker
[ "$ENGINE_STARTED" = 1 ] || start_engine
if [ "$NEED_BASE" = 1 ]; then
    bg_wait "base rootfs (mmdebstrap)"
    phase "base image import $BASE_IMAGE" bash deploy/base_image.sh import "$ROOTFS" "$BASE_IMAGE"
    rm -f "$ROOTFS"
fi
bg_wait "compose plugin"
docker compose version >/dev/null 2>&1 || fail "docker compose (v2 plugin) does not run"
bg_wait "wheelhouse"
docker compose config --quiet || fail "docker-compose.yml is invalid"

# ---------------------------------------------------------------------------------------------- build, up
STACK_UP=1
phase "image build (server, balancer)" compose build server balancer
IMAGE_SIZE="$(docker image inspect -f '{{.Size}}' "$INVARIANT_IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
# The content digest of what was built: deploy by it (README "Pinning images by digest"). After a push, the
# registry's digest is in .RepoDigests (docker image inspect -f '{{index .RepoDigests 0}}').
IMAGE_DIGEST="$(docker image inspect -f '{{.Id}}' "$INVARIANT_IMAGE")"
BALANCER_DIGEST="$(docker image inspect -f '{{.Id}}' "$INVARIANT_BALANCER_IMAGE")"
log "image $INVARIANT_IMAGE: $IMAGE_SIZE, digest $IMAGE_DIGEST; balancer digest $BALANCER_DIGEST"
phase "up --wait --scale server=$REPLICAS (train v1, replicas healthy)" \
    compose up -d --wait --wait-timeout 300 --scale "server=$REPLICAS"

replica_check() {
    "$PYTHON" deploy/replica_check.py "$@" --url "$URL" --model "$MODEL" --replicas "$REPLICAS" --key-file "$API_KEY_FILE"
}

# ---------------------------------------------------------------------------------------------- checks
t0=$EPOCHREALTIME
TRAIN_ID="$(docker compose ps -aq train)"
KEYS_ID="$(docker compose ps -aq keys)"
[ "$(docker inspect -f '{{.State.ExitCode}}' "$KEYS_ID")" = 0 ] || fail "the keys job did not exit 0"
(umask 077
 docker compose exec -T --index 1 server cat /keys/api-keys >"$API_KEY_FILE"
 docker compose exec -T --index 1 server cat /keys/admin-keys >"$ADMIN_KEY_FILE") || fail "cannot read the generated keys"
[ "$(docker compose exec -T --index 1 server stat -c %a /keys/api-keys)" = 400 ] || fail "the api-keys file is not mode 0400"
[ "$(docker inspect -f '{{.State.ExitCode}}' "$TRAIN_ID")" = 0 ] || fail "the train job did not exit 0"
mapfile -t SERVER_IDS < <(docker compose ps -q server)
[ "${#SERVER_IDS[@]}" = "$REPLICAS" ] || fail "${#SERVER_IDS[@]} server containers, expected $REPLICAS"
for id in "${SERVER_IDS[@]}"; do
    health="$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$id")"
    [ "$health" = healthy ] || fail "server container ${id:0:12} health is '$health', expected healthy"
    # The uids of all the container's processes, as the host's ps sees them.
    top="$(docker top "$id" -eo uid,pid,args)" || fail "docker top on server container ${id:0:12} failed"
    uids="$(echo "$top" | awk 'NR > 1 { print $1 }' | sort -u | tr '\n' ' ')"
    [ -n "$uids" ] || fail "could not read the server processes' uid"
    for u in $uids; do [ "$u" != 0 ] || fail "a server process runs as root (uids: $uids)"; done
done
exec_uid="$(docker compose exec -T --index 1 server python -c 'import os; print(os.getuid())')"
[ "$exec_uid" != 0 ] || fail "the server container's user is root"
for id in "${SERVER_IDS[@]}"; do
    bindings="$(docker inspect -f '{{json .HostConfig.PortBindings}}' "$id")"
    [ "$bindings" = "{}" ] || fail "server container ${id:0:12} publishes ports: $bindings"
done
[ "$(docker compose port balancer 8080)" = "127.0.0.1:$PORT" ] || fail "the balancer is not published on $URL"
log "$REPLICAS server replicas healthy, processes run as uid ${uids% }(not root); only the balancer publishes a port"
record "health, non-root and port checks" "$(elapsed_since "$t0")"

# HAProxy finds the replicas through docker's DNS and health-checks them: wait until each one answers.
phase "balancer routes to all $REPLICAS replicas (v1)" replica_check versions --version 1 --timeout 60
[ "$(http_status "$URL/v2/health/ready")" = 200 ] || fail "GET /v2/health/ready is not 200 through the balancer"
[ "$(http_status "$URL/v2/health/live")" = 200 ] || fail "GET /v2/health/live is not 200"
# Closed by default (issue 28): the generated keys are required, the API key does not open admin routes.
[ "$(KEY_FILE= http_status "$URL/v2/models/$MODEL")" = 401 ] || fail "model metadata without a key is not 401"
[ "$(http_status "$URL/v2/models/$MODEL")" = 200 ] || fail "model metadata with the generated API key is not 200"
[ "$(KEY_FILE= http_status "$URL/v2/repository/index" '{}')" = 401 ] || fail "the admin route without a key is not 401"
[ "$(http_status "$URL/v2/repository/index" '{}')" = 403 ] || fail "the admin route with the API key is not 403"
[ "$(KEY_FILE="$ADMIN_KEY_FILE" http_status "$URL/v2/repository/index" '{}')" = 200 ] \
    || fail "the admin route with the generated admin key is not 200"
[ "$(http_status "$URL/metrics")" = 403 ] || fail "/metrics with the API key is not 403"
log "generated keys: inference needs the API key; admin routes and /metrics take only the admin key"

log "phase: invariance check (V1, exact) + V2 infer through the balancer, model $MODEL"
t0=$EPOCHREALTIME
"$PYTHON" deploy/invariance_check.py --url "$URL" --model "$MODEL" --v2 --key-file "$API_KEY_FILE" \
    || fail "invariance check failed"
record "invariance check + V2 infer" "$(elapsed_since "$t0")"

log "phase: spread, fingerprints and bits across replicas"
t0=$EPOCHREALTIME
replica_check spread --requests $((REPLICAS * 4)) || fail "replicas differ"
record "spread, fingerprints, bits across replicas" "$(elapsed_since "$t0")"

log "phase: kill one replica under load"
t0=$EPOCHREALTIME
kill_clients=6
replica_check kill --clients $kill_clients --seconds 8 --kill-after 3 | tee "$LOGS/kill.log" || fail "killing a replica under load"
# What the replica had in flight: the sessions HAProxy had open to it when it took it out of the HTTP backend
# ("Server replicas/...": the gRPC backend grpc_replicas/ has its own lines) when it left the rotation,
# plus at most one per client that the replica was answering when it died (those end before that, as a 502).
in_flight="$(docker compose logs --no-color balancer | sed -n 's/.*Server replicas\/.* is \(going \)\{0,1\}DOWN.* \([0-9]*\) sessions active.*/\2/p' | head -1)"
failed="$(sed -n 's/^kill: passed: failed=\([0-9]*\) .*/\1/p' "$LOGS/kill.log")"
[ -n "$in_flight" ] && [ -n "$failed" ] || fail "could not read the balancer's sessions or the failures"
[ "$failed" -le $((in_flight + kill_clients)) ] ||
    fail "$failed requests failed, more than the $in_flight in flight to the killed replica at its removal + $kill_clients"
KILL_SUMMARY="$failed failed of $(sed -n 's/^kill: \([0-9]*\) requests.*/\1/p' "$LOGS/kill.log"); the balancer had $in_flight in flight to it"
log "kill: $KILL_SUMMARY"
record "kill one replica under load" "$(elapsed_since "$t0")"
phase "restore $REPLICAS replicas (up --wait)" compose up -d --wait --wait-timeout 120 --scale "server=$REPLICAS"
phase "balancer routes to all $REPLICAS replicas again" replica_check versions --version 1 --timeout 60

# ---------------------------------------------------------------------------------------------- version 2
# No restart: every replica polls the repository (--model-control poll) and loads version 2 by itself. A
# watcher sends requests through the balancer from before training starts until every replica has answered
# from version 2 (every request must succeed meanwhile), and records when each one first did.
bg "watch for version 2 on every replica" "$PYTHON" deploy/replica_check.py versions --url "$URL" --model "$MODEL" \
    --replicas "$REPLICAS" --version 2 --timeout 600 --key-file "$API_KEY_FILE"
phase "train v2 (compose run --rm train) while serving" compose run --rm -T train \
    --data digits --arch mlp --hidden 256,256 --norm batch --dropout 0.2 --weight-decay 5e-4 --epochs 5 \
    --name "$MODEL"
TRAIN_LOG="$(logfile "train v2 (compose run --rm train) while serving")"
tail -3 "$TRAIN_LOG" | sed 's/^/  train: /'
TRAIN_END="$(sed -n 's/^invariant-train-job: training exited with status 0 at \([0-9.]*\)$/\1/p' "$TRAIN_LOG")"
[ -n "$TRAIN_END" ] || fail "the training job did not report its end"
bg_wait "watch for version 2 on every replica"
WATCH_LOG="$(logfile "watch for version 2 on every replica")"
read -r V2_FIRST V2_ALL < <(sed -n 's/^versions: first at \([0-9.]*\), all replicas at \([0-9.]*\)$/\1 \2/p' "$WATCH_LOG")
[ -n "${V2_ALL:-}" ] || fail "the version 2 watcher reported no times"
# Training renames its staging directory to digits/2 when the checkpoint is complete: the directory's ctime.
V2_PUBLISHED="$(docker compose exec -T --index 1 server python -c \
    'import os, sys; print(os.stat(sys.argv[1]).st_ctime)' "/models/$MODEL/2")"
TIME_TO_V2="$(awk -v p="$V2_PUBLISHED" -v e="$TRAIN_END" -v f="$V2_FIRST" -v a="$V2_ALL" 'BEGIN {
    printf "from the checkpoint directory'"'"'s appearance: first answer %.2f s, every replica %.2f s; ", f - p, a - p
    printf "from the training job'"'"'s exit (%.2f s after it): %+.2f s, %+.2f s", e - p, f - e, a - e }')"
log "training job end -> version 2 through the balancer (no restart): $TIME_TO_V2"

t0=$EPOCHREALTIME
for v in 1 2; do
    [ "$(http_status "$URL/v2/models/$MODEL/versions/$v/ready")" = 200 ] \
        || fail "GET /v2/models/$MODEL/versions/$v/ready is not 200"
    [ "$(http_status "$URL/v2/models/$MODEL/versions/$v")" = 200 ] \
        || fail "GET /v2/models/$MODEL/versions/$v is not 200"
done
"$PYTHON" deploy/invariance_check.py --url "$URL" --model "$MODEL" --version 2 --v2 --key-file "$API_KEY_FILE" \
    || fail "version 2: versioned V1/V2 predictions or invariance failed"
replica_check spread --requests $((REPLICAS * 4)) || fail "replicas differ on version 2"
log "version 2 ready and answering on every replica (versioned V1 and V2; unversioned requests get version 2)"
record "version 2 checks" "$(elapsed_since "$t0")"

# ---------------------------------------------------------------------------------------------- down
log "phase: docker compose down -v"
t0=$EPOCHREALTIME
compose down -v >"$LOGS/down.log" 2>&1 || { cat "$LOGS/down.log" >&2; fail "docker compose down -v failed"; }
down_s="$(elapsed_since "$t0")"
STACK_UP=0
record "compose down -v" "$down_s"
awk -v d="$down_s" -v l="$DOWN_LIMIT_S" 'BEGIN { exit !(d < l) }' \
    || fail "docker compose down -v took $down_s s, limit $DOWN_LIMIT_S s (signals not handled?)"
[ -z "$(docker volume ls -q --filter "name=${COMPOSE_PROJECT_NAME}_")" ] || fail "volumes left behind"

FINISHED=1
echo
echo "deploy-test: phase timings"
for p in "${PHASES[@]}"; do echo "  $p"; done
echo "  total                                        $(elapsed_since "$T_START")s"
echo "  one of $REPLICAS replicas killed under load: $KILL_SUMMARY"
echo "  training job end -> version 2 answering through the balancer (no restart): $TIME_TO_V2"
echo "  image $INVARIANT_IMAGE digest: $IMAGE_DIGEST (balancer: $BALANCER_DIGEST)"
echo "  image $INVARIANT_IMAGE: $IMAGE_SIZE (base $BASE_IMAGE: $(docker image inspect -f '{{.Size}}' "$BASE_IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
echo "deploy-test: PASSED"
