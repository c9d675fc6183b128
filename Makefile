# forkyard's two quick-start commands are `make run` and `make test`; both install
# what they need first (Debian/Ubuntu: apt-get; elsewhere they say what is missing).
SHELL := /bin/bash
CONFIG ?= config.yaml
CARGO ?= cargo

# command:package pairs, installed with apt-get when the command is missing.
BUILD_DEPS := cmake:cmake cc:gcc python3:python3
TEST_DEPS := $(BUILD_DEPS) promtool:prometheus prometheus:prometheus chromium:chromium \
	systemd-analyze:systemd node:nodejs
# Python validators (kubernetes-validate, hadolint, yamllint, check-jsonschema) live in
# a virtualenv under target/, so tests never depend on what is installed by hand.
PYTOOLS := target/pytools

# Python packages for the example apps and the tests (PyPI), in a virtualenv.
VENV := target/venv
PY_REQUIREMENTS := examples/pyramid-sqlalchemy/requirements.txt tests/requirements.txt

BENCH_DEPS := $(BUILD_DEPS) wrk:wrk nginx:nginx haproxy:haproxy

.PHONY: run build test screenshot lint bench bench-lifecycle bench-preload bench-metrics soak deps-build deps-test deps-bench venv clean

run: deps-build
	$(CARGO) build --release --locked
	./target/release/forkyard run -c $(CONFIG)

build: deps-build
	$(CARGO) build --release --locked

# The tests run a binary built with the fault-injection feature (a request header
# that panics on purpose; see docs/reliability.md); `make build` never has it.
TEST_FEATURES := --features fault-injection

test: deps-test venv
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets $(TEST_FEATURES) -- -D warnings
	$(CARGO) test --locked --all-targets $(TEST_FEATURES)

# docs/status-page.png: the status page in headless Chromium after three minutes
# under load, taken by the page's integration test (tests/it/status_page.rs).
screenshot: deps-test venv
	FORKYARD_SCREENSHOT=$(CURDIR)/docs/status-page.png $(CARGO) test --locked $(TEST_FEATURES) --test it -- \
		--exact status_page::the_page_draws_charts_that_move_under_load_and_follows_events_live --nocapture

# Side-by-side benchmark against nginx and HAProxy; writes bench/RESULTS.md.
# ROUNDS, SECONDS, CONNS and SCENARIOS ("static python stall idle") tune it.
bench: deps-bench venv
	$(CARGO) build --release --locked --bin forkyard --example plain_pingora
	python3 bench/bench.py

# Crash-to-replacement and SIGTERM-to-exit times (bench/lifecycle.py).
bench-lifecycle: deps-build
	$(CARGO) build --release --locked --bin forkyard
	python3 bench/lifecycle.py

# Preload figures: memory (PSS), kill-to-answer and boot time of forkyard exec and
# preload pools against gunicorn with and without --preload; writes bench/PRELOAD.md.
# Run it on a quiet machine (nothing else building or testing).
bench-preload: deps-build venv
	$(CARGO) build --release --locked --bin forkyard
	$(VENV)/bin/python bench/preload.py

# Merged worker metrics: scrape time of /metrics with 32 workers x 200 series
# (bench/worker_metrics.py); writes bench/WORKER_METRICS.md. Run it on a quiet machine.
bench-metrics: deps-build
	$(CARGO) build --release --locked --bin forkyard
	python3 bench/worker_metrics.py

# Soak run: keep-alive GETs for SOAK_SECONDS (600) while workers are killed, the
# config is reloaded and a post_fork hook fails now and then; see bench/soak.
soak: deps-build
	$(CARGO) build --release --locked --bin forkyard
	python3 bench/soak

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	$(CARGO) clippy --locked --all-targets $(TEST_FEATURES) -- -D warnings

deps-build:
	@$(call install_missing,$(BUILD_DEPS))

deps-test: $(PYTOOLS)/.installed
	@$(call install_missing,$(TEST_DEPS))
	@python3 -c 'import ensurepip' 2>/dev/null || { $(call install_missing,missing-venv:python3-venv); }

venv: $(VENV)/.installed

$(VENV)/.installed: $(PY_REQUIREMENTS)
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check $(foreach r,$(PY_REQUIREMENTS),-r $(r))
	touch $@

$(PYTOOLS)/.installed: tests/tools/requirements.txt
	@$(call install_missing,$(BUILD_DEPS))
	@python3 -m venv $(PYTOOLS) 2>/dev/null || { \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq python3-venv >/dev/null && \
	  python3 -m venv $(PYTOOLS); }
	$(PYTOOLS)/bin/pip install --quiet --disable-pip-version-check -r tests/tools/requirements.txt
	@touch $@

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
