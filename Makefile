# Dime's developer entry points; CI runs `make test` through .ci/run. `make` alone lists them.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
# The steps share one cargo build directory, and `make test` must run them in order.
.NOTPARALLEL:
MAKEFLAGS += --no-builtin-rules --no-builtin-variables

# A login shell puts ~/.cargo/bin on PATH; a CI runner's plain shell may not.
ifeq ($(shell command -v cargo 2>/dev/null),)
export PATH := $(or $(CARGO_HOME),$(HOME)/.cargo)/bin:$(PATH)
endif

# What .ci/deps.sh installs where the machine's own is missing or too old (Node.js, kubectl).
export PATH := $(CURDIR)/.dev/bin:$(PATH)

CARGO ?= cargo
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
EDGE_DEBUG := $(TARGET_DIR)/debug/dime-edge
CONFIGS := $(sort $(wildcard config/*.toml))
EDGE_SOURCES := Cargo.toml Cargo.lock proxy/Cargo.toml $(shell find proxy/src -name '*.rs')
# The debug binaries the browser and fleet tests start: alone, these two. Under `make test`,
# the workspace with its tests, as nextest built it: dev-dependencies turn on features of
# shared crates (bitflags/std, zerocopy/derive, reqwest's rustls), so building the two alone
# would rebuild 37 crates and relink both binaries, where this finds everything fresh.
BUILD_BINS = $(CARGO) build -p dime-edge -p dime-origin
test: BUILD_BINS = $(CARGO) build --workspace --tests

.PHONY: help deps build fmt lint nextest check-config k8s-lint ansible-lint k8s-secrets images k8s-up k8s-down \
	k8s-test k8s-cluster-create k8s-cluster-copy k8s-cluster-start k8s-cluster-clean fleet-up fleet-down fleet-test \
	e2e e2e-failover cache-tests conformance test run bench microbench instructions tail chaos fuzz viewers viewers-ll loaded soak clean

help: ## List the targets (this text)
	@echo 'Usage: make TARGET'
	@echo
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) \
		| awk 'BEGIN { FS = ":.*## " } { printf "  %-13s %s\n", $$1, $$2 }'

deps: ## Install what is missing (apt: build tools, GStreamer, PostgreSQL, Chromium; Node.js 20+ and kubectl 1.32+ when older; cargo-nextest; k6; npm)
	@bash .ci/deps.sh

build: deps ## Debug build of the workspace (dime-edge, dime-origin)
	$(CARGO) build --workspace

fmt: ## Format all Rust code in place
	$(CARGO) fmt --all

lint: ## Check formatting, then clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

nextest: ## Run the whole test suite with cargo-nextest (a hung test is killed after 3 minutes, the run after 20: .config/nextest.toml)
	$(CARGO) nextest run --workspace --no-fail-fast

# `make test` finds this binary fresh from nextest (integration tests build it); alone,
# `make check-config` builds it when a source is newer.
$(EDGE_DEBUG): $(EDGE_SOURCES) | deps
	$(CARGO) build -p dime-edge

check-config: $(EDGE_DEBUG) ## Validate every config/*.toml with `dime-edge check`
	@# config/dev.toml serves HTTPS with the certificate `make run` generates: make it first.
	@$(EDGE_DEBUG) cert generate --out .dev/certs --name localhost --name 127.0.0.1 >/dev/null
	@failed=0; \
	for config in $(CONFIGS); do \
		echo "$(EDGE_DEBUG) check -c $$config"; \
		$(EDGE_DEBUG) check -c "$$config" || failed=1; \
	done; \
	exit $$failed

k8s-lint: $(EDGE_DEBUG) ## Kubernetes manifests offline: kustomize, strict schemas, checkov, wiring tests (pip-installs pinned tools)
	DIME_EDGE=$(EDGE_DEBUG) DIME_ORIGIN=$(TARGET_DIR)/debug/dime-origin bash k8s/lint/run.sh

ansible-lint: $(EDGE_DEBUG) ## Ansible playbook offline: syntax check, ansible-lint (production), rendered configs checked, WireGuard keys, unit exposure (pip-installs pinned tools)
	DIME_EDGE=$(EDGE_DEBUG) bash ansible/lint.sh

k8s-secrets: ## Write the git-ignored credentials k8s/base's secretGenerator reads (kept when present)
	bash k8s/secrets.sh

images: ## Build the dime-edge, dime-origin and dime-postgres images with podman (base from debootstrap)
	bash k8s/images/build.sh

k8s-up: images ## Run the dev overlay here with podman kube play; the shield on :30080
	bash k8s/play/up.sh

k8s-down: ## Remove everything k8s-up started (pods, volumes, network)
	bash k8s/play/down.sh

k8s-test: images ## The postgres image's interrupted first start; k8s-up, then the browser test, k6 and a live ConfigMap edit through the shield; k8s-down
	bash k8s/images/test-postgres.sh
	bash k8s/play/test.sh

# A real cluster (docs/kubernetes.md): CLUSTER=kind (default) or CLUSTER=k3s.
k8s-cluster-create: ## Create a local kind or k3s cluster for the manifests (CLUSTER=kind|k3s)
	bash k8s/cluster.sh create

k8s-cluster-copy: images ## Load the images into the cluster's nodes
	bash k8s/cluster.sh copy

k8s-cluster-start: ## kubectl apply -k the overlay (OVERLAY=dev), wait for the rollouts, set up the catalog
	bash k8s/cluster.sh start

k8s-cluster-clean: ## Delete the overlay's objects, then the cluster
	bash k8s/cluster.sh clean

fleet-up: deps ## The simulated edge fleet: namespaces, WireGuard overlay, origin site, two edge regions
	$(BUILD_BINS)
	bash ansible/sim/fleet.sh up

fleet-down: ## Remove every namespace and process fleet-up made
	bash ansible/sim/fleet.sh down

fleet-test: deps ## fleet-up, then reachability, shield coalescing, k6 per region, edge failover in Chromium; fleet-down
	$(BUILD_BINS)
	bash ansible/sim/test.sh

cache-tests: $(EDGE_DEBUG) ## The HTTP cache test suite (cache-tests.fyi) against the edge: fails on a required test proxy/tests/cache-tests/expected.json does not list
	test -d proxy/tests/cache-tests/node_modules/undici || npm ci --prefix proxy/tests/cache-tests --no-audit --no-fund --loglevel=error
	node proxy/tests/cache-tests/run.mjs --edge $(EDGE_DEBUG)

conformance: $(EDGE_DEBUG) ## The same, and writes its figures beside other caches' to docs/conformance.md
	test -d proxy/tests/cache-tests/node_modules/undici || npm ci --prefix proxy/tests/cache-tests --no-audit --no-fund --loglevel=error
	node proxy/tests/cache-tests/run.mjs --edge $(EDGE_DEBUG) --docs docs/conformance.md --commit "$$(git describe --always --dirty)"

e2e: deps ## The platform in headless Chromium through the edge (debug build, ports 18080-18085, 18443, 19090: DIME_HTTP_PORT, DIME_HTTPS_PORT, DIME_ADMIN_PORT)
	$(BUILD_BINS)
	bash origin/e2e/run.sh

e2e-failover: deps ## An edge killed mid-play in headless Chromium: the player goes on from the next edge (own processes, ports above 20000)
	$(BUILD_BINS)
	test -d origin/e2e/node_modules/playwright-core || npm ci --prefix origin/e2e --no-audit --no-fund --loglevel=error
	cd origin/e2e && node --test --test-concurrency=1 failover.test.mjs

test: deps lint nextest check-config cache-tests k8s-lint ansible-lint e2e e2e-failover k8s-test fleet-test ## What CI runs: deps, fmt, clippy, tests, config check, HTTP cache test suite, manifests, Ansible, browser tests, podman overlay, simulated fleet

run: deps ## Release build, then the local stack on :8080 (Ctrl-C stops it)
	$(CARGO) build --release -p dime-edge -p dime-origin
	@bash .ci/dev-stack.sh

bench: deps ## dime-edge beside nginx and Varnish (apt-installs them); writes docs/benchmarks.md
	bash benches/run.sh

# Not part of `make test`: its timings compare two builds and are never asserted.
microbench: deps ## The edge's own code on a cache hit, piece by piece, in-process (Criterion, about a minute); BENCH_FILTER=regex picks benches
	$(CARGO) bench -p dime-edge --bench hit_path -- $(if $(BENCH_FILTER),'$(BENCH_FILTER)')

# Counts, not times: runs beside other work, where `make bench` cannot.
instructions: deps ## Instructions (callgrind) and system calls (strace) per 1 KB hit, dime-edge beside nginx, in about two minutes; writes docs/benchmarks.md's section
	bash benches/instructions.sh

# Times, like `make bench`: run it on a quiet machine.
tail: deps ## Where the 1 KB hit's p99 comes from: dime-edge and nginx at the same offered load, each request's latency and both cores' scheduling traced, in about two minutes; writes docs/benchmarks.md's section
	bash benches/tail.sh

# Its tests also run in `make test` (nextest); this runs them alone and writes their figures.
chaos: deps ## The chaos suite (broken origins, lock stampedes, floods, HTTP/2 abuse, Vary) alone; writes its figures to docs/reliability.md
	bash proxy/tests/chaos/run.sh

# Not part of `make test`, which replays the corpora (proxy/fuzz/tests/corpus.rs) without AFL++.
fuzz: deps ## Fuzz the parsers under AFL++ (cargo-afl, installed when missing): FUZZ_SECONDS each (default 60), FUZZ_TARGETS picks some, FUZZ_MERGE=1 keeps finds; writes docs/reliability.md's table
	bash proxy/fuzz/run.sh

# `make viewers K6_ARGS='-e LIVE_VUS=100 -e DURATION=15s'` passes options to every k6 run.
viewers: ## k6 crowd of live and VoD viewers against a running `make run`, then against nginx caching the same streamers; writes docs/benchmarks.md's k6 section (ONLY=edge: the edge alone, nothing written; installs k6, nginx)
	@case "$(ONLY)" in \
	'') bash benches/k6/compare.sh $(K6_ARGS) ;; \
	edge) bash benches/k6/run.sh $(K6_ARGS) ;; \
	*) echo "ONLY=$(ONLY): the one part that runs alone is ONLY=edge" >&2; exit 2 ;; \
	esac

viewers-ll: ## k6 crowd of 1,000 low-latency HLS viewers (blocking reloads, hinted parts) against a running `make run`, then 1,000 classic live viewers; writes docs/benchmarks.md's k6-ll section (VUS=N for another crowd)
	bash benches/k6/ll.sh $(K6_ARGS)

loaded: deps ## The whole suite LOADED_RUNS times (default 5) in a row in a fresh clone, every core kept busy by stress-ng; adds each run to docs/reliability.md
	bash .ci/loaded

# Not part of `make test`: half an hour by default (`make soak DURATION=5m` for a short one).
soak: deps ## The edge under 500 live + 25 VoD k6 viewers for DURATION (default 30m), its config reloaded every minute and a streamer restarted every 5; RSS, descriptors and p99 per 5-minute window into docs/reliability.md
	bash benches/soak/run.sh

clean: ## Remove build output and the local stack's files (.dev/)
	$(CARGO) clean
	rm -rf .dev
