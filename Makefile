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

.PHONY: help venv dev system-deps run fmt lint lint-rust lint-python stubtest test bench bench-quick bench-suite soak bench-scale bench-tls wheels fuzz fuzz-tools fuzz-seeds clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

venv: ## Create .venv and install requirements-dev.txt (no extension build)
	@bash scripts/bootstrap.sh --venv-only

dev: ## Create .venv, install requirements-dev.txt, build and install the extension
	@bash scripts/bootstrap.sh

system-deps: ## Install the apt packages the tests need (redis-server) when missing
	@bash scripts/system-deps.sh

run: dev ## Serve the example chat app (examples/chat.py) on 127.0.0.1:8000
	$(PYTHON) -m zcasgi examples.chat:app --host 127.0.0.1 --port 8000 --log-config examples/logging.json

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

wheels: venv ## Wheels into dist/: abi3 for CPython >= 3.10 and one for 3.9, manylinux2014 (via zig), and the sdist
	@bash scripts/wheels.sh

bench-quick: dev ## Benchmark smoke run (benchmarks/): zcasgi and uvicorn, figures printed, nothing asserted (~2-4 min)
	$(PYTHON) -m benchmarks --quick

bench-suite: dev ## The full backend comparison benchmark (benchmarks/) into docs/benchmarks (~33 min)
	scripts/system-deps.sh bench
	$(PYTHON) -m benchmarks --repeat 3

# Minutes of load per backend for `make soak` (docs/soak.md); under 30 the record goes to
# benchmarks/results/soak instead of docs/soak.
SOAK_MINUTES ?= 30

soak: dev ## Soak both backends SOAK_MINUTES each (default 30; `SOAK_MINUTES=2` for a smoke run; not in `make test`)
	$(PYTHON) -m benchmarks.soak --minutes $(SOAK_MINUTES)

bench: ## Criterion benchmarks of the zcasgi-core codec
	$(CARGO) bench -p zcasgi-core --bench codec

bench-scale: dev ## Idle connections over workers: 100,000 WebSockets and 20,000 Socket.IO clients per backend (docs/benchmarks/scale; ~15 min)
	$(PYTHON) -m benchmarks.scale

bench-tls: dev ## TLS handshakes/s and 1 MiB wss echo, zcasgi (mio, tokio) beside uvicorn (docs/benchmarks/tls; ~3 min)
	$(PYTHON) -m benchmarks.tls

# The cargo-fuzz targets (docs/fuzzing.md), one per file in zcasgi-core/fuzz/fuzz_targets.
FUZZ_TARGETS := $(sort $(basename $(notdir $(wildcard zcasgi-core/fuzz/fuzz_targets/*.rs))))
# Seconds per target for `make fuzz` (the recorded campaign ran for hours: docs/fuzzing.md).
FUZZ_TIME ?= 20

fuzz-tools:
	@$(CARGO) fuzz --version >/dev/null 2>&1 || { \
		echo "cargo-fuzz is not installed: run 'cargo install cargo-fuzz' (docs/fuzzing.md)"; exit 1; }
	@$(CARGO) +nightly --version >/dev/null 2>&1 || { \
		echo "the fuzz targets need a nightly toolchain: run 'rustup toolchain install nightly'"; exit 1; }

fuzz: fuzz-tools ## Run every fuzz target for FUZZ_TIME seconds each (default 20; cargo-fuzz + nightly; not in `make test`)
	@cd zcasgi-core && mkdir -p fuzz/artifacts && for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/corpus/$$t; \
		echo "== $$t, $(FUZZ_TIME) s (log: zcasgi-core/fuzz/artifacts/$$t.log)"; \
		if ! nice -n 19 $(CARGO) +nightly fuzz run $$t fuzz/corpus/$$t fuzz/seeds/$$t -- \
			-max_total_time=$(FUZZ_TIME) -print_final_stats=1 >fuzz/artifacts/$$t.log 2>&1; then \
			tail -n 40 fuzz/artifacts/$$t.log; \
			echo "fuzz target $$t failed: the input is in zcasgi-core/fuzz/artifacts/$$t/"; exit 1; \
		fi; \
		grep -E 'stat::number_of_executed_units' fuzz/artifacts/$$t.log; \
	done

fuzz-seeds: fuzz-tools ## Merge each target's working corpus into its committed seeds, minimized (cargo fuzz cmin)
	@cd zcasgi-core && for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/corpus/$$t fuzz/seeds/$$t; \
		cp -n fuzz/corpus/$$t/* fuzz/seeds/$$t/ 2>/dev/null || true; \
		nice -n 19 $(CARGO) +nightly fuzz cmin $$t fuzz/seeds/$$t 2>&1 | grep -E '^(MERGE-OUTER|INFO: cmin)' || true; \
	done

clean: ## Remove build outputs and tool caches (keeps .venv)
	$(CARGO) clean
	rm -f zcasgi-python/python/zcasgi/_zcasgi*.so
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -path ./.venv -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
