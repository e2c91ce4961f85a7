# mcpcage: `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/mcpcage/mcpcage/daemon.Version=$(VERSION) -X github.com/mcpcage/mcpcage/cli.Version=$(VERSION)
# Where `make run` installs the test server: visible inside every sandbox.
TESTSERVER := /usr/local/libexec/mcpcage/testserver
RUN_CONFIG := $(BIN)/run.toml
GOTEST_FLAGS ?= -count=1 -timeout 30m

.PHONY: package help deps build test unit integration fuzz bench run generate check-generate vmlinux lint clean

help: ## list targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

deps: ## install what is missing: containerd, runc, ctr, Node.js reference MCP servers (as root)
	@./scripts/deps.sh

build: ## build mcpcaged, mcpcage, mcpcage-init (static) and the test server into bin/
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/mcpcaged ./cmd/mcpcage ./cmd/mcpcage-init
	$(GO) build -o $(BIN)/testserver ./testdata/testserver
	$(GO) build -o $(BIN)/remoteserver ./testdata/remoteserver

# Linters, pinned, installed from the Go module proxy into _build/tools.
TOOLS := $(abspath _build/tools)
STATICCHECK_VERSION := v0.8.2
ERRCHECK_VERSION := v1.30.0

$(TOOLS)/staticcheck-$(STATICCHECK_VERSION):
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	@mv $(TOOLS)/staticcheck $@

$(TOOLS)/errcheck-$(ERRCHECK_VERSION):
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) $(GO) install github.com/kisielk/errcheck@$(ERRCHECK_VERSION)
	@mv $(TOOLS)/errcheck $@

lint: $(TOOLS)/staticcheck-$(STATICCHECK_VERSION) $(TOOLS)/errcheck-$(ERRCHECK_VERSION) ## gofmt, go vet, staticcheck (its default checks) and errcheck (no unchecked error; tests too)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(TOOLS)/staticcheck-$(STATICCHECK_VERSION) ./...
	$(TOOLS)/errcheck-$(ERRCHECK_VERSION) -exclude .errcheck-exclude ./...

# The eBPF package's tests time the kernel's windows (the event budget's
# 100 ms, the tick): they run first, on a machine the integration tests'
# daemons do not keep busy; then everything else, at once.
test: deps lint check-generate ## everything CI runs: lint, generated objects, unit, fuzz seed corpora, integration (root, containerd, eBPF)
	@rc=0; \
	$(GO) test $(GOTEST_FLAGS) ./bpf/... || rc=1; \
	$(GO) test $(GOTEST_FLAGS) $$($(GO) list ./... | grep -v '/bpf') || rc=1; \
	exit $$rc

unit: ## unit tests only (no root needed)
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /integration)

integration: deps ## integration tests only
	$(GO) test $(GOTEST_FLAGS) -v ./integration

fuzz: ## run each fuzz target for FUZZTIME (default 30s)
	$(GO) test ./daemon/wire -run '^$$' -fuzz FuzzPeek -fuzztime $${FUZZTIME:-30s}
	$(GO) test ./daemon/wire -run '^$$' -fuzz FuzzReader -fuzztime $${FUZZTIME:-30s}
	$(GO) test ./daemon/request -run '^$$' -fuzz FuzzDifferential -fuzztime $${FUZZTIME:-30s}

bench: deps build ## side by side: tools/call latency, throughput, cold start, memory via mcpcage vs direct vs srt; then the Go benchmarks (root; writes bench/results.md)
	./bench/run.sh

# The committed eBPF objects are built by Debian 12's clang; another clang
# builds other bytes, and check-generate would then drift with the host.
CLANG_VERSION := 14.0.6

generate: ## rebuild the eBPF objects with the pinned clang (bpf2go); they are committed
	@v=$$(clang --version 2>/dev/null | sed -n 's/.*clang version \([0-9.]*\).*/\1/p' | head -1); \
	  if [ "$$v" != "$(CLANG_VERSION)" ]; then echo "make generate needs clang $(CLANG_VERSION) (Debian 12's package clang), found '$$v': install it (scripts/deps.sh) or build on Debian 12"; exit 1; fi
	$(GO) generate ./bpf

check-generate: generate ## fail when the committed eBPF objects differ from a rebuild
	@git diff --exit-code --stat -- bpf/ || { echo "bpf/: committed objects are stale: run make generate and commit"; exit 1; }

vmlinux: ## regenerate bpf/headers/vmlinux.h from this kernel's BTF (bpftool)
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > bpf/headers/vmlinux.h

run: deps build ## run mcpcaged in the foreground with an example config (test server + server-everything)
	install -D -m 0755 $(BIN)/testserver $(TESTSERVER)
	sed 's|@TESTSERVER@|$(TESTSERVER)|' testdata/config/run.toml > $(RUN_CONFIG)
	./scripts/containerd-up.sh
	$(BIN)/mcpcaged --config $(RUN_CONFIG)

ARCHES ?= amd64 arm64
PKG_VERSION ?= $(shell git describe --tags --always 2>/dev/null | sed 's/^v//; s/^\([0-9a-f]\{7,\}\)$$/0.0.0~git\1/' || echo 0.0.0)

package: ## build .deb and .rpm for $(ARCHES) into dist/ (nfpm, no download)
	@mkdir -p dist _build/pkg
	@CGO_ENABLED=0 $(GO) build -o _build/pkg/mcpcage-host ./cmd/mcpcage
	@rm -rf _build/pkg/man && $(GO) run -ldflags "$(LDFLAGS)" ./internal/mangen _build/pkg/man && gzip -9n _build/pkg/man/*
	@for arch in $(ARCHES); do \
	  out=_build/pkg/$$arch; mkdir -p $$out/completions; rm -rf $$out/man; cp -r _build/pkg/man $$out/man; \
	  CGO_ENABLED=0 GOARCH=$$arch $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o $$out/ ./cmd/mcpcaged ./cmd/mcpcage ./cmd/mcpcage-init || exit 1; \
	  for sh in bash zsh fish; do _build/pkg/mcpcage-host completion $$sh > $$out/completions/mcpcage.$$sh; done; \
	  for p in deb rpm; do \
	    sed "s|\$${BUILD}|$$out|g" packaging/nfpm/nfpm.yaml > $$out/nfpm.yaml; \
	    ARCH=$$arch VERSION=$(PKG_VERSION) $(GO) tool nfpm package --config $$out/nfpm.yaml --packager $$p --target dist/ || exit 1; \
	  done; \
	done
	@ls -l dist/

clean: ## remove build output
	rm -rf $(BIN) _build dist
