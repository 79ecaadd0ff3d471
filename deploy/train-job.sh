#!/bin/sh
# Entrypoint of the `train` compose service (installed in the image as /usr/local/bin/invariant-train-job).
#
#   invariant-train-job [--if-missing NAME] TRAINING-ARGS...
#
# Runs `python -m training --repository $INVARIANT_REPOSITORY TRAINING-ARGS...`. With --if-missing NAME it
# first checks the repository and exits 0 without training when model NAME already has a version: this is
# what the compose file's default command uses, so `docker compose up` trains the demo model on the first
# start only. `docker compose run --rm train ARGS...` replaces the default command and always trains (a new
# model, or the next version of an existing one). The last line says when training ended.
set -eu
repository="${INVARIANT_REPOSITORY:-/models}"
if [ "${1:-}" = "--if-missing" ]; then
    name="${2:?--if-missing needs a model name}"
    shift 2
    for manifest in "$repository/$name"/*/manifest.json; do
        if [ -f "$manifest" ]; then
            echo "invariant-train-job: model '$name' already has a version in $repository; not training." \
                 "Use 'docker compose run --rm train ARGS...' to train a new version."
            exit 0
        fi
    done
fi
# Not exec: after training, print when it ended (epoch seconds), for the deployment test's time to serve.
status=0
python -m training --repository "$repository" "$@" || status=$?
echo "invariant-train-job: training exited with status $status at $(date +%s.%N)"
exit "$status"
