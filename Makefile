# invariant-serve: every target creates the environment it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
REPOSITORY ?= model-repository
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: venv test lint typecheck serve train-demo bench soak bench-peers deploy-test clean fuzz

# The stamp depends on the lock files, so a changed pin reinstalls. torch==2.13.0 resolves to the CPU
# wheel on these machines (pip finds it on disk), never a CUDA download.
$(BIN)/.installed: requirements.lock requirements-dev.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q \
		-r requirements-dev.lock
	$(BIN)/pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	touch $@

venv: $(BIN)/.installed

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

test: lint
	$(BIN)/pytest -q

# The fuzz tests of `make test`, with many more examples per operation (same fixed seed, so a finding repeats).
FUZZ_EXAMPLES ?= 200
fuzz: venv
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q -s tests/test_fuzz_api.py tests/test_fuzz_decoders.py

train-demo: venv
	$(BIN)/python -m training --data digits --arch mlp --hidden 256,256 --norm batch --dropout 0.2 \
		--weight-decay 5e-4 --epochs 20 --name digits --repository $(REPOSITORY)

# The study of the lecture notes' claims (training/study.py): docs/study/report.md and its figures; the
# checkpoints it trains go to docs/study/runs/ (not committed).
.PHONY: study
study: venv
	$(BIN)/python -m training.study --out docs/study --seed 0

# Trains the demo model only when the repository holds no model yet.
serve: venv
	@if [ -z "$$(ls -A $(REPOSITORY) 2>/dev/null)" ]; then $(MAKE) train-demo; fi
	$(BIN)/python -m service --repository $(REPOSITORY) --host $(HOST) --port $(PORT)

# BASE=<git ref>: also run the service/ of that commit (a worktree under bench/results/base), side by side.
BASE ?=
bench: venv
	@if [ -n "$(BASE)" ]; then rm -rf bench/results/base; git worktree prune; \
		git worktree add --detach bench/results/base $(BASE) >/dev/null; fi
	$(BIN)/python bench/run_bench.py --workers 2 $(if $(BASE),--candidate bench/results/base)

# Issue 11's soak: MINUTES closed loop at 64 connections, then an open loop; bitwise checks, RSS, latency.
MINUTES ?= 10
soak: venv
	$(BIN)/python bench/soak.py --minutes $(MINUTES)

# MLServer, Ray Serve, BentoML and LitServe, each in its own venv under bench/peers/.venvs/ (first run installs).
bench-peers: venv
	$(BIN)/python bench/peers/run_peers.py

deploy-test: venv
	bash deploy/deploy_test.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
