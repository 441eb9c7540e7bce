# Convenience targets. `make build` puts bin/manage_tasks in place, as the original promised.
CARGO ?= cargo

.PHONY: build demo test lint bench clean mcp-venv

# On linux-gnu hosts the release binary is a static, non-PIE executable (glibc
# linked in, no start-up relocations; the price is no ASLR for its own code):
# process start
# is the largest fixed cost of every `manage_tasks execute` (see
# docs/performance.md). `make build STATIC=0` gives an ordinary dynamic binary.
HOST := $(shell rustc -vV 2>/dev/null | sed -n 's/^host: //p')
STATIC ?= $(if $(filter %-linux-gnu,$(HOST)),1,0)

build:
ifeq ($(STATIC),1)
	RUSTFLAGS="$(RUSTFLAGS) -C target-feature=+crt-static -C relocation-model=static" \
	  $(CARGO) build --release --locked --bin manage_tasks --target $(HOST)
	mkdir -p bin
	cp target/$(HOST)/release/manage_tasks bin/manage_tasks
else
	$(CARGO) build --release --locked --bin manage_tasks
	mkdir -p bin
	cp target/release/manage_tasks bin/manage_tasks
endif

# Registers the bundled examples into a throwaway store and executes one.
# (A debug build: quicker to compile than `make build`, and just as correct.)
demo:
	@$(CARGO) build --quiet --locked --bin manage_tasks
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

test: mcp-venv
	@export MCP_PYTHON="$(CURDIR)/.venv-mcp/bin/python"; \
	if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  $(CARGO) nextest run --workspace --all-targets --locked --no-fail-fast; \
	else \
	  $(CARGO) test --workspace --all-targets --locked --no-fail-fast; \
	fi
	$(CARGO) test --workspace --doc --locked

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

clean:
	$(CARGO) clean
	rm -rf bin
