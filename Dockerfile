# invariant-serve image: one image for the training job (`python -m training`) and the server
# (`python -m service`). Needs BuildKit (the default builder of current Docker, and what compose uses).
#
# Dependencies come from requirements.lock, every file checked against the lock's sha256 hashes
# (`pip install --require-hashes`). When the build context holds a wheelhouse (deploy/wheelhouse/*.whl, made by
# deploy/wheelhouse.sh) they are installed from it with no network (`pip install --no-index`); otherwise from
# the package index plus the CPU-only torch index: the lock's only torch hash is the CPU wheel's, so no CUDA
# build can ever be installed.
# The wheelhouse is bind-mounted for the install step only: it never becomes part of the image.
ARG BASE_IMAGE=python:3.11-slim

# The lock, plus the wheels when there is a wheelhouse: the lock always matches, so this COPY never fails
# without one, and a matched wheelhouse directory has its contents (the .whl files) copied next to the lock.
FROM scratch AS wheels
COPY requirements.lock deploy/wheelhouse* /

FROM ${BASE_IMAGE}
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN --mount=type=bind,from=wheels,target=/tmp/wheels \
    set -eux; \
    export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1; \
    python3 -m venv /opt/venv; \
    if ls /tmp/wheels/*.whl >/dev/null 2>&1; then \
        /opt/venv/bin/pip install --no-compile --require-hashes --no-index --find-links /tmp/wheels \
            -r /tmp/wheels/requirements.lock; \
    else \
        /opt/venv/bin/pip install --no-compile --require-hashes --extra-index-url "${TORCH_INDEX_URL}" \
            -r /tmp/wheels/requirements.lock; \
    fi; \
    /opt/venv/bin/python -c "import torch; assert torch.version.cuda is None, 'not a CPU build: ' + torch.__version__"; \
    /opt/venv/bin/pip uninstall -y -q pip; \
    # torch's C++ unit-test binaries and protoc (~130 MB) are never used at run time.
    site=/opt/venv/lib/python3.11/site-packages/torch; \
    rm -rf "$site/test" "$site"/bin/*Test "$site"/bin/test_* "$site"/bin/protoc*; \
    # Byte-compile what the server and the training job import, by importing it, rather than all ~8000 files:
    # the app user cannot write .pyc files at run time, and the build skips ~40 s of compiling unused modules.
    /opt/venv/bin/python -c "import torch, torch.nn, torch.nn.functional, numpy, scipy, sklearn, sklearn.datasets, \
        sklearn.model_selection, safetensors.torch, fastapi, starlette.applications, uvicorn, uvicorn.main, \
        uvicorn.loops.uvloop, uvicorn.protocols.http.httptools_impl, pydantic, pydantic_settings, orjson, \
        prometheus_client, tqdm, torch._dynamo, torch._inductor.config, pydantic.v1, uvicorn.lifespan.on"

# Non-root user with a fixed uid, so volume ownership is predictable. Written directly into /etc/passwd and
# /etc/group: works on any base, with or without the useradd tool. /models is owned by that user in the
# image, so a fresh named volume mounted there inherits the ownership (docker copies the mount point's
# ownership and contents into an empty named volume). /keys likewise: the compose `keys` service writes the
# generated key files into a named volume there (docker-compose.yml), readable by that user only.
COPY deploy/train-job.sh /usr/local/bin/invariant-train-job
RUN set -eux; \
    chmod 0755 /usr/local/bin/invariant-train-job; \
    echo 'app:x:10001:10001:invariant-serve:/home/app:/usr/sbin/nologin' >>/etc/passwd; \
    echo 'app:x:10001:' >>/etc/group; \
    mkdir -p /home/app /models /keys; \
    chown 10001:10001 /home/app /models /keys; \
    chmod 0700 /keys

COPY models/ /app/models/
COPY training/ /app/training/
COPY service/ /app/service/
# Byte-compile the code, and import every module of the three packages once so that the dependency modules
# they load get their .pyc too (compiling torch's lazily imported modules at every start costs seconds).
RUN set -eux; \
    /opt/venv/bin/python -m compileall -q /app; \
    cd /app && /opt/venv/bin/python -c "import importlib, pkgutil; \
[importlib.import_module(m.name) for p in ('models', 'training', 'service') \
 for m in pkgutil.walk_packages(importlib.import_module(p).__path__, p + '.') if not m.name.endswith('__main__')]"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    HOME=/home/app \
    INVARIANT_REPOSITORY=/models \
    INVARIANT_HOST=0.0.0.0 \
    INVARIANT_PORT=8000
WORKDIR /app
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as u; sys.exit(0 if u.urlopen('http://127.0.0.1:%s/v2/health/ready' % os.environ.get('INVARIANT_PORT', '8000'), timeout=2).status == 200 else 1)"]
# Exec form: the server is the container's main process and receives SIGTERM directly (uvicorn drains
# in-flight requests, then exits). docker-compose.yml adds `init: true` for zombie reaping as well.
ENTRYPOINT ["python", "-m", "service"]
