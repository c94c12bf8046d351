# Developer entry points. README.md, .ci/run and .pre-commit-config.yaml call these targets.
# `make help` lists them.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

VENV ?= .venv
PYTHON := $(VENV)/bin/python
CARGO ?= cargo

# Crates zcasgi-core must never depend on (it is sans-I/O; STYLE.md D).
CORE_FORBIDDEN_DEPS := tokio|mio|pyo3

# Targets run one after another even under -j: several of them share .venv and target/.
.NOTPARALLEL:

.PHONY: help venv dev system-deps run fmt lint lint-rust lint-python stubtest test bench bench-quick bench-suite fuzz clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

venv: ## Create .venv and install requirements-dev.txt (no extension build)
	@bash scripts/bootstrap.sh --venv-only

dev: ## Create .venv, install requirements-dev.txt, build and install the extension
	@bash scripts/bootstrap.sh

system-deps: ## Install the apt packages the tests need (redis-server) when missing
	@bash scripts/system-deps.sh

run: dev ## Serve the example chat app (examples/chat.py) on 127.0.0.1:8000
	$(PYTHON) -m zcasgi examples.chat:app --host 127.0.0.1 --port 8000

fmt: venv ## Format Rust and Python code, apply safe ruff fixes
	$(CARGO) fmt --all
	$(VENV)/bin/ruff check --fix --quiet .
	$(VENV)/bin/ruff format --quiet .

lint: lint-rust lint-python ## All lints (Rust and Python)

lint-rust: ## cargo fmt --check, clippy -D warnings, zcasgi-core stays free of tokio/mio/pyo3
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --profile ci --quiet -- -D warnings
	@deps="$$($(CARGO) tree -p zcasgi-core -e normal --target all --prefix none --format '{p}' \
		| awk '{print $$1}' | sort -u)"; \
	bad="$$(grep -xE '$(CORE_FORBIDDEN_DEPS)' <<<"$$deps" || true)"; \
	if [[ -n "$$bad" ]]; then \
		echo "zcasgi-core must not depend on: $$bad (cargo tree -p zcasgi-core -e normal -i <crate>)"; \
		exit 1; \
	fi; \
	echo "zcasgi-core dependencies: none of $(CORE_FORBIDDEN_DEPS)"

lint-python: venv ## ruff check, ruff format --check, mypy --strict
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

stubtest: dev ## The stubs of the compiled module match it (mypy.stubtest)
	$(PYTHON) -m mypy.stubtest zcasgi._zcasgi

test: dev system-deps lint stubtest ## Every test: lints, stubs, Rust tests and doctests, pytest
	$(CARGO) nextest run --workspace --exclude zcasgi-python --cargo-profile ci
	$(CARGO) test --doc --workspace --exclude zcasgi-python --profile ci
	$(PYTHON) -m pytest -q
	$(MAKE) bench-quick

bench-quick: dev ## Benchmark smoke run: 3 servers, figures printed, nothing asserted (~1-3 min)
	$(PYTHON) -m zcasgi.bench --quick

bench-suite: dev ## The full backend comparison benchmark into docs/benchmarks (~33 min)
	$(PYTHON) -m zcasgi.bench --repeat 3

bench: ## Criterion benchmarks of the zcasgi-core codec
	$(CARGO) bench -p zcasgi-core --bench codec

fuzz: ## Fuzz the frame decoder and Connection for 60 s (cargo-fuzz + nightly; not in `make test`)
	cd zcasgi-core && $(CARGO) +nightly fuzz run decode -- -max_total_time=60

clean: ## Remove build outputs and tool caches (keeps .venv)
	$(CARGO) clean
	rm -f zcasgi-python/python/zcasgi/_zcasgi*.so
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -path ./.venv -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
