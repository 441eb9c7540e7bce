# Convenience targets. `make build` puts bin/manage_tasks in place, as the original promised.
CARGO ?= cargo

.PHONY: build demo test lint bench clean mcp-venv

# On Linux the release binary is static and non-PIE: no dynamic loader and no
# start-up relocations, and with musl no glibc start-up either, whose CPU
# probing (CPUID, a VM exit each) cost 0.65 ms per process on our CI VM.
# Process start is the largest fixed cost of every `manage_tasks execute`
# (docs/performance.md). The price: no ASLR for the binary's own code.
#   - musl, when its Rust target and a musl C compiler (for SQLite) are here:
#     `rustup target add x86_64-unknown-linux-musl; apt-get install musl-tools`;
#   - otherwise static glibc (a warning says what is missing);
#   - `make build STATIC=0` gives an ordinary dynamic binary.
HOST := $(shell rustc -vV 2>/dev/null | sed -n 's/^host: //p')
ARCH := $(firstword $(subst -, ,$(HOST)))
MUSL := $(ARCH)-unknown-linux-musl
STATIC ?= $(if $(filter %-linux-gnu,$(HOST)),1,0)
HAVE_MUSL := $(shell rustup target list --installed 2>/dev/null | grep -qx '$(MUSL)' && command -v musl-gcc >/dev/null && echo 1)
STATIC_RUSTFLAGS := $(RUSTFLAGS) -C target-feature=+crt-static -C relocation-model=static
# mimalloc (the musl build's allocator, see crates/manage-tasks/src/main.rs),
# tuned for a process that often lives a few milliseconds. Its defaults cost
# every command ~0.5 ms here: reserving a 1 GiB arena whose bitmaps alone are
# 42 pages to fault in, scanning the environment for MIMALLOC_* options
# (which this build therefore ignores), and returning all memory to the OS
# with madvise at exit, just before the exit does it anyway. And it starts on
# first use, not in a constructor before `main` (MI_PRIM_HAS_PROCESS_ATTACH:
# crates/manage-tasks/src/alloc.rs starts it), as one-shot commands never use it.
MIMALLOC_CFLAGS := -DMI_DEFAULT_ARENA_RESERVE=65536L -DMI_SKIP_COLLECT_ON_EXIT=1 -DMI_NO_GETENV=1 -DMI_PRIM_HAS_PROCESS_ATTACH=1
# The release binary is linked by tools/link-ordered.sh, which lays the code a
# typical command runs out in one piece (it needs valgrind: `apt-get install
# valgrind`; without it the binary is linked as usual, a warning says so).
LINKER_VAR = CARGO_TARGET_$(shell echo $(1) | tr 'a-z-' 'A-Z_')_LINKER=$(CURDIR)/tools/link-ordered.sh

build:
ifeq ($(STATIC),1)
ifeq ($(HAVE_MUSL),1)
	RUSTFLAGS="$(STATIC_RUSTFLAGS)" CC_$(subst -,_,$(MUSL))=musl-gcc $(call LINKER_VAR,$(MUSL)) \
	  CFLAGS_$(subst -,_,$(MUSL))="$(MIMALLOC_CFLAGS)" \
	  $(CARGO) build --release --locked --bin manage_tasks --target $(MUSL)
	mkdir -p bin
	cp target/$(MUSL)/release/manage_tasks bin/manage_tasks
else
	@echo "warning: building against static glibc; for a faster-starting musl build:" >&2
	@echo "  rustup target add $(MUSL) && apt-get install musl-tools" >&2
	RUSTFLAGS="$(STATIC_RUSTFLAGS)" $(call LINKER_VAR,$(HOST)) \
	  $(CARGO) build --release --locked --bin manage_tasks --target $(HOST)
	mkdir -p bin
	cp target/$(HOST)/release/manage_tasks bin/manage_tasks
endif
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

# nextest runs each test in a process of its own, so the tests ignored for
# `cargo test` (they measure their whole process's peak RSS) run here too.
# Where the musl target is installed, the suite runs a second time against it.
test: mcp-venv
	@export MCP_PYTHON="$(CURDIR)/.venv-mcp/bin/python"; \
	if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  $(CARGO) nextest run --workspace --all-targets --locked --no-fail-fast --run-ignored all; \
	else \
	  $(CARGO) test --workspace --all-targets --locked --no-fail-fast; \
	fi
	$(CARGO) test --workspace --doc --locked
ifeq ($(HAVE_MUSL),1)
	@# Once more as `make build` ships it: musl, the dense heap and mimalloc, SQLite on them.
	@export MCP_PYTHON="$(CURDIR)/.venv-mcp/bin/python" CC_$(subst -,_,$(MUSL))=musl-gcc \
	  CFLAGS_$(subst -,_,$(MUSL))="$(MIMALLOC_CFLAGS)"; \
	if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  $(CARGO) nextest run --workspace --all-targets --locked --no-fail-fast --run-ignored all --target $(MUSL); \
	else \
	  $(CARGO) test --workspace --all-targets --locked --no-fail-fast --target $(MUSL); \
	fi
else
	@echo "note: the musl build (what make build ships) was not tested: rustup target add $(MUSL) && apt-get install musl-tools" >&2
endif

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

clean:
	$(CARGO) clean
	rm -rf bin
