# forkyard's two quick-start commands are `make run` and `make test`; both install
# what they need first (Debian/Ubuntu: apt-get; elsewhere they say what is missing).
SHELL := /bin/bash
CONFIG ?= config.yaml
CARGO ?= cargo

# command:package pairs, installed with apt-get when the command is missing.
BUILD_DEPS := cmake:cmake cc:gcc python3:python3
TEST_DEPS := $(BUILD_DEPS) promtool:prometheus
BENCH_DEPS := $(BUILD_DEPS) wrk:wrk nginx:nginx haproxy:haproxy

.PHONY: run build test lint bench deps-build deps-test deps-bench clean

run: deps-build
	$(CARGO) build --release --locked
	./target/release/forkyard run -c $(CONFIG)

build: deps-build
	$(CARGO) build --release --locked

test: deps-test
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	$(CARGO) test --locked --all-targets

# Side-by-side benchmark against nginx and HAProxy; writes bench/RESULTS.md.
# ROUNDS, SECONDS, CONNS and SCENARIOS ("static python") tune it.
bench: deps-bench
	$(CARGO) build --release --locked --bin forkyard --example plain_pingora
	python3 bench/bench.py

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

deps-build:
	@$(call install_missing,$(BUILD_DEPS))

deps-test:
	@$(call install_missing,$(TEST_DEPS))

deps-bench:
	@$(call install_missing,$(BENCH_DEPS))

clean:
	$(CARGO) clean

# Install the packages of the missing commands in $(1) ("cmd:pkg cmd:pkg ...").
define install_missing
missing=""; \
for pair in $(1); do \
  cmd=$${pair%%:*}; pkg=$${pair##*:}; \
  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; \
done; \
if [ -n "$$missing" ]; then \
  if command -v apt-get >/dev/null 2>&1; then \
    sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
    echo "installing:$$missing"; \
    $$sudo apt-get update -qq && \
    DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; \
  else \
    echo "forkyard needs:$$missing (cmake and a C compiler build Pingora's zlib-ng; python3 runs the example app and test fixtures). Install them with your package manager and rerun."; \
    exit 1; \
  fi; \
fi
endef
