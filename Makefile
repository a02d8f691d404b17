# Every target installs what it needs: `make test` works on a fresh clone.
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")
# llama.cpp with native CPU detection crashes on CPUs with AMX; build for a portable x86-64 feature set.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc)
RUN := $(UV) run --frozen

.PHONY: setup test test-fast lint fmt schemas docs demo bench clean

setup: .venv/.setup-done

$(UV):
	python3 -m pip install --user --quiet "uv>=0.5"

.venv/.setup-done: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --all-extras
	touch $@

test: setup
	$(RUN) pytest

test-fast: setup
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

demo: setup
	@echo "make demo arrives with the cluster (issue 4); meanwhile: make replay-sample"
	@exit 1

replay-sample: setup
	$(RUN) trigreason triggers replay examples/srm_steps.jsonl

bench: setup
	@ls bench/*.py >/dev/null 2>&1 && for b in bench/bench_*.py; do $(RUN) python $$b || exit 1; done

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
