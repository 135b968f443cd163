# Flotilla — build, test and benchmark entry points.
#
#   make dev     build, start `flotilla dev` (control plane + agent) and apply examples/hello.yaml
#   make test    install what the build and tests need, then run the whole test suite
#   make bench-kv   write throughput/latency vs etcd, and leader failover time (prints a table)
#   make bench-sched  placement at 150,000 pods / 5,000 nodes, node loss with real agents, and
#                     a 50-replica Deployment on one node vs Docker Swarm
#   make bench-pods   pod start latency on one node vs bare runc, and the agent's memory
#   make chaos   the chaos matrix: every scenario × CHAOS_SEEDS seeds (hours; as root)

CARGO ?= cargo
# CI points this outside the checkout so builds are incremental between runs.
export CARGO_TARGET_DIR ?= $(CURDIR)/target
BIN := $(CARGO_TARGET_DIR)/debug/flotilla
DEV_DIR ?= $(HOME)/.local/state/flotilla/dev

# Debian packages the build and the tests need (RocksDB bindings, protoc, libseccomp for
# libcontainer, busybox for test images, CNI plugins and iproute2 for pod networks).
DEB_PACKAGES := libclang-dev protobuf-compiler libseccomp-dev pkg-config busybox-static \
	containernetworking-plugins iproute2 iptables faketime
# Only the benchmarks need these (baselines). Each benchmark starts its own private daemons on
# loopback (etcd members, a dockerd with its pools inside 198.18.0.0/15); Debian's packages would
# also start and enable system-wide ones (etcd on port 2379, containerd, a dockerd with a
# 172.17.0.0/16 bridge and iptables rules that drop forwarded traffic). `bench-deps` installs
# them with those services neither started nor enabled; the services of packages that were
# already installed are left as they are (see install_missing).
BENCH_PACKAGES := etcd-server runc docker.io
# Package → the system units it would start.
BENCH_UNITS := etcd-server:etcd.service docker.io:docker.service,docker.socket \
	containerd:containerd.service

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Whether package $1 is installed (not merely known to dpkg, say removed with its config kept).
INSTALLED = dpkg-query -W -f='$${Status}' $(1) 2>/dev/null | grep -q ' installed$$'

# Installs the packages of $(1) that are missing. $(2), optional: `package:unit,unit …` — the
# system units those packages would start; a package installed here has its units neither
# started (a policy-rc.d forbids it, unless one is already in place) nor enabled. Packages that
# were already installed keep their services as they are.
define install_missing
	@missing=""; for p in $(1); do $(call INSTALLED,$$p) || missing="$$missing $$p"; done; \
	[ -z "$$missing" ] && exit 0; \
	units=""; for pu in $(2); do \
		$(call INSTALLED,$${pu%%:*}) || units="$$units $$(echo $${pu#*:} | tr , ' ')"; \
	done; \
	echo "installing:$$missing$${units:+ (without starting or enabling:$$units)}"; \
	policy=""; if [ -n "$$units" ] && [ ! -e /usr/sbin/policy-rc.d ]; then \
		printf '#!/bin/sh\nexit 101\n' | $(SUDO) tee /usr/sbin/policy-rc.d >/dev/null && \
		$(SUDO) chmod +x /usr/sbin/policy-rc.d && policy=ours; \
	fi; \
	$(SUDO) apt-get update -q && \
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	status=$$?; \
	[ "$$policy" = ours ] && $(SUDO) rm -f /usr/sbin/policy-rc.d; \
	if [ $$status = 0 ] && [ -n "$$units" ] && command -v systemctl >/dev/null; then \
		$(SUDO) systemctl disable $$units >/dev/null 2>&1 || \
			echo "warning: could not disable$$units; disable them by hand"; \
	fi; \
	exit $$status
endef

.PHONY: deps bench-deps build test dev bench-kv bench-sched bench-pods chaos fmt lint

deps:
	$(call install_missing,$(DEB_PACKAGES))

bench-deps: deps
	$(call install_missing,$(BENCH_PACKAGES),$(BENCH_UNITS))

build: deps
	$(CARGO) build --bin flotilla

test: deps
	$(CARGO) build --bin flotilla
	$(CARGO) test --workspace

dev: build
	./scripts/dev.sh $(BIN) $(DEV_DIR)

bench-kv: bench-deps
	$(CARGO) build --release --bin flotilla -p flotilla-cli
	$(CARGO) run --release -p flotilla-e2e --bin bench-kv -- --flotilla $(CARGO_TARGET_DIR)/release/flotilla

# (a) pure placement of 150,000 pods onto 5,000 nodes; (b) the same through a 3-peer cluster
# with hollow nodes; (c) node loss with three real agents (as root); (d) a 50-replica Deployment
# on one real node vs Docker Swarm on a private dockerd (as root).
bench-sched: bench-deps
	$(CARGO) build --release --bin flotilla -p flotilla-cli --bin bench-sched -p flotilla-e2e
	$(CARGO) run --release -p flotilla-scheduler --example bench_placement
	$(CARGO_TARGET_DIR)/release/bench-sched --flotilla $(CARGO_TARGET_DIR)/release/flotilla
	./scripts/busybox-image.sh $(CARGO_TARGET_DIR)/release/flotilla $(CARGO_TARGET_DIR)/busybox.tar
	$(CARGO_TARGET_DIR)/release/bench-sched --flotilla $(CARGO_TARGET_DIR)/release/flotilla \
		--deployments 0 --node-loss-kills 10 --image $(CARGO_TARGET_DIR)/busybox.tar
	$(CARGO_TARGET_DIR)/release/bench-sched --flotilla $(CARGO_TARGET_DIR)/release/flotilla \
		--deployments 0 --versus-swarm

# One node (one server peer, one agent, as root): pod start latency vs bare runc, agent memory.
bench-pods: bench-deps
	$(CARGO) build --release --bin flotilla -p flotilla-cli --bin bench-pods -p flotilla-e2e
	$(CARGO_TARGET_DIR)/release/bench-pods --flotilla $(CARGO_TARGET_DIR)/release/flotilla

# The whole chaos matrix (chaos/README.md): each scenario with CHAOS_SEEDS seeds, then the
# agent scenarios with 3 agents running real containers. Reports go to CHAOS_OUT.
CHAOS_SEEDS ?= 20
CHAOS_DURATION ?= 20s
CHAOS_OUT ?= /var/tmp/flotilla-chaos
chaos: deps
	$(CARGO) build --bin flotilla -p flotilla-cli --bin flotilla-chaos -p flotilla-chaos
	$(CARGO_TARGET_DIR)/debug/flotilla-chaos matrix --seeds $(CHAOS_SEEDS) --duration $(CHAOS_DURATION) \
		--scenarios kill,pause,partition-isolate,partition-majority,partition-ring,partition-bridge,one-way-loss,packet-loss,bandwidth,delay,disk-full,membership,rolling-restart,clock-skew,mixed \
		--out $(CHAOS_OUT)
	$(CARGO_TARGET_DIR)/debug/flotilla-chaos matrix --seeds $(CHAOS_SEEDS) --duration 30s \
		--scenarios agent-loss,churn --out $(CHAOS_OUT)

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
