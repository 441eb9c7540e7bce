# Convenience targets. `make build` puts bin/manage_tasks in place, as the original promised.
CARGO ?= cargo

.PHONY: build demo test lint bench clean mcp-venv e2e-deps

# A plain release build: the same binary `cargo install --path crates/manage-tasks` gives.
build:
	$(CARGO) build --release --locked --bin manage_tasks
	mkdir -p bin
	cp target/release/manage_tasks bin/manage_tasks

# Registers the bundled examples into a throwaway store and executes one.
# (A debug build: quicker to compile than `make build`, and just as correct.)
demo:
	@$(CARGO) build --locked --bin manage_tasks
	@store=$$(mktemp -d)/tasks.db; mt=target/debug/manage_tasks; \
	set -e; \
	echo "== store: $$store"; \
	TASK_STORE=$$store $$mt register --name greet --location examples/bash.sh; \
	TASK_STORE=$$store $$mt register --name wordcount --location examples/python.py; \
	TASK_STORE=$$store $$mt list; \
	TASK_STORE=$$store $$mt execute --name wordcount \
	  --taskArgs '{"text":"the quick brown fox jumps over the lazy dog the end","top":2}'

# The whole test suite: unit, integration and doc tests.
# The MCP tests drive the server with the official Python SDK, installed from
# PyPI into .venv-mcp (once; later runs only check the version).
MCP_PY_VERSION := 2.3.0
PYTHON ?= $(shell [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || echo python3)

mcp-venv:
	@if ! .venv-mcp/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('mcp') != '$(MCP_PY_VERSION)')" 2>/dev/null; then \
	  echo "== installing mcp==$(MCP_PY_VERSION) into .venv-mcp"; \
	  $(PYTHON) -m venv .venv-mcp && \
	  .venv-mcp/bin/pip install -q --disable-pip-version-check "mcp==$(MCP_PY_VERSION)"; \
	fi

# The browser test (tests/browser.rs) drives Debian's chromium with
# playwright-core from npm, installed into e2e/node_modules from the lock file
# (once; again when the lock file changes). It never downloads a browser.
e2e-deps:
	@if [ ! -f e2e/node_modules/.package-lock.json ] || [ e2e/package-lock.json -nt e2e/node_modules/.package-lock.json ]; then \
	  echo "== npm ci --prefix e2e"; \
	  npm ci --prefix e2e --no-audit --no-fund; \
	fi

# nextest runs each test in a process of its own, so the tests ignored for
# `cargo test` (they measure their whole process's peak RSS) run here too.
test: mcp-venv e2e-deps
	@export MCP_PYTHON="$(CURDIR)/.venv-mcp/bin/python"; \
	if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  $(CARGO) nextest run --workspace --all-targets --locked --no-fail-fast --run-ignored all; \
	else \
	  $(CARGO) test --workspace --all-targets --locked --no-fail-fast; \
	fi
	$(CARGO) test --workspace --doc --locked

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

bench:
	bench/run.sh

clean:
	$(CARGO) clean
	rm -rf bin
