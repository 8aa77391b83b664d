# chunkbus — the two commands: `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
export AWS_EC2_METADATA_DISABLED := true

.PHONY: run build test lint fmt bench bench-quick bench-deps clean

## Build and start a single-node broker on 127.0.0.1:8080 with ./data.
run:
	$(CARGO) run --release --bin chunkbus -- serve

build:
	$(CARGO) build --release --workspace

## Install what the tests need, then run lints and every test.
test: lint
	$(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc
	$(CARGO) build --bin chunkbus
	$(CARGO) run -p chunkbus-bench -- --smoke --server-bin target/debug/chunkbus

lint:
	@rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## Benchmarks (not in CI): builds release, starts its own servers.
bench: bench-deps
	$(CARGO) build --release --bin chunkbus
	$(CARGO) run --release -p chunkbus-bench --

bench-quick: bench-deps
	$(CARGO) build --release --bin chunkbus
	$(CARGO) run --release -p chunkbus-bench -- --quick

## nginx is the HTTP ceiling; best effort (the bench says so when it is missing).
bench-deps:
	@command -v nginx >/dev/null || ( (apt-get update -qq && apt-get install -y -qq nginx-light) >/dev/null 2>&1 || echo "nginx not installed: HTTP ceiling will be skipped" )

clean:
	$(CARGO) clean
