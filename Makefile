# chunkbus — the two commands: `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
export AWS_EC2_METADATA_DISABLED := true
## Python venv with confluent-kafka (librdkafka) for tests/it/kafka.rs.
KAFKA_VENV := $(CURDIR)/tests/kafka/.venv

.PHONY: run build test test-deps lint fmt bench bench-quick bench-deps clean

## Build and start a single-node broker on 127.0.0.1:8080 with ./data.
run:
	$(CARGO) run --release --bin chunkbus -- serve

build:
	$(CARGO) build --release --workspace

## Install what the tests need, then run lints and every test.
test: test-deps lint
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

## What the bench compares with: nginx (HTTP ceiling), Redis and NATS (what
## users would pick instead). Best effort: the bench skips, and says so, what
## is missing. The smoke run in `make test` exercises them too.
bench-deps:
	@missing=""; \
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$$missing nginx-light"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || missing="$$missing nats-server"; \
	if [ -n "$$missing" ]; then \
	  echo "installing bench peers:$$missing"; \
	  ( (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null 2>&1 \
	    && (service redis-server stop >/dev/null 2>&1 || true) ) \
	  || echo "could not install$$missing: those bench rows will be skipped"; \
	fi

## The tests also render the status page in a real headless Chromium, run
## real Kafka clients (Debian's kcat, PyPI's confluent-kafka in a venv), and
## the power-loss suite mounts a FUSE file system (fuse3; best effort: it
## prints SKIP when /dev/fuse is missing).
test-deps: bench-deps
	@if [ -e /dev/fuse ] && ! command -v fusermount3 >/dev/null; then \
	  echo "installing fuse3 for the power-loss suite"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3) >/dev/null 2>&1 \
	  || echo "could not install fuse3: powerfs mounts directly as root, or the suite prints SKIP"; \
	fi
	@if ! command -v kcat >/dev/null; then \
	  echo "installing kcat for the Kafka protocol tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat) >/dev/null 2>&1 \
	  || { echo "could not install kcat (needed by tests/it/kafka.rs)"; exit 1; }; \
	fi
	@if [ ! -x $(KAFKA_VENV)/bin/python3 ] || ! $(KAFKA_VENV)/bin/python3 -c 'import confluent_kafka' 2>/dev/null; then \
	  echo "creating $(KAFKA_VENV) with confluent-kafka for the Kafka protocol tests"; \
	  python3 -c 'import ensurepip' 2>/dev/null \
	  || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv) >/dev/null 2>&1; \
	  (python3 -m venv $(KAFKA_VENV) && $(KAFKA_VENV)/bin/pip install -q 'confluent-kafka>=2.6,<3') \
	  || { echo "could not create the confluent-kafka venv (needed by tests/it/kafka.rs)"; exit 1; }; \
	fi
	@if [ ! -x /usr/bin/chromium ]; then \
	  echo "installing chromium for the status page test"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
	  || { echo "could not install chromium (needed by tests/it/status_page.rs)"; exit 1; }; \
	fi

clean:
	$(CARGO) clean
