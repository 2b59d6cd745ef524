# tern — see README.md. `make` alone lists the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
# Packages whose code runs goroutines: their tests also run under the race detector.
RACE_PKGS := ./pkg/tensor/... ./pkg/model/... ./pkg/data/... ./pkg/optim/... ./pkg/train/... ./pkg/comm/... ./pkg/snapshot/... ./pkg/launch/... ./pkg/coordinator/... ./pkg/worker/... ./cmd/ternctl/...
FUZZTIME ?= 30s

.DEFAULT_GOAL := help
.PHONY: help build test demo bench fuzz fmt vet lint proto proto-check
# Protobuf tools, pinned and built from the Go module proxy into bin/tools
# (buf compiles .proto files itself: no protoc needed). A stamp per version
# rebuilds a tool when its pin changes.
TOOLS := $(BIN)/tools
BUF_VERSION := v1.75.0
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
# buf finds the plugins on PATH; the pinned ones come first.
BUF = PATH="$(abspath $(TOOLS)):$$PATH" $(TOOLS)/buf
PROTO_TOOLS := $(TOOLS)/.buf-$(BUF_VERSION) $(TOOLS)/.protoc-gen-go-$(PROTOC_GEN_GO_VERSION) $(TOOLS)/.protoc-gen-go-grpc-$(PROTOC_GEN_GO_GRPC_VERSION)

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

build: ## build ternctl, coordinator and worker into bin/ (static, no cgo)
	CGO_ENABLED=0 $(GO) build -o $(BIN)/ ./cmd/...

test: vet proto-check ## go vet + generated-code check + the whole test suite (race detector on concurrent packages)
	$(GO) test -count=1 -timeout 20m ./...
	$(GO) test -count=1 -timeout 20m -race -short $(RACE_PKGS)

demo: build ## a local cluster of 4 workers trains on the Go source tree (DP 2 x PP 2, DeMo), survives a worker killed mid-run (about 4 minutes on 2 cores)
	$(GO) run ./scripts/demo --bin $(BIN) --kill-worker-at 0.4

bench: ## GEMM and training-step benchmarks (results go in BENCHMARKS.md)
	$(GO) test -run '^$$' -bench . -benchtime 3x ./pkg/tensor/ ./pkg/model/
	$(GO) run ./scripts/bench/gemm

fuzz: ## run every fuzz target for FUZZTIME each (seeds alone run in make test)
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

fmt: ## gofmt every Go file
	gofmt -w $$(git ls-files '*.go')

vet: ## go vet, and fail if any file needs gofmt
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...

proto: $(PROTO_TOOLS) ## lint proto/ and regenerate its Go code with pinned buf and plugins
	$(BUF) lint
	$(BUF) generate

proto-check: $(PROTO_TOOLS) ## fail if the generated code under proto/ differs from what make proto writes
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(BUF) lint && $(BUF) generate -o "$$tmp" && \
	if ! diff -r -x '*.proto' proto "$$tmp/proto"; then echo "generated code under proto/ is stale: run make proto and commit the result"; exit 1; fi

$(TOOLS)/.buf-$(BUF_VERSION):
	GOBIN=$(abspath $(TOOLS)) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
	@touch $@
$(TOOLS)/.protoc-gen-go-$(PROTOC_GEN_GO_VERSION):
	GOBIN=$(abspath $(TOOLS)) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	@touch $@
$(TOOLS)/.protoc-gen-go-grpc-$(PROTOC_GEN_GO_GRPC_VERSION):
	GOBIN=$(abspath $(TOOLS)) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	@touch $@

lint: ## staticcheck, fetched from the Go module proxy
	$(GO) run $(STATICCHECK) ./...

# The CUDA device (pkg/tensor/cuda) loads CUDA at run time, so its binaries
# build here; its tests and benchmarks need a GPU machine, where run.sh runs
# them without Go.
GPU_BUNDLE := out/gpu-bundle
.PHONY: gpu-bundle gpu-check
gpu-bundle: ## static ternctl, worker, GPU test and bench binaries plus run.sh in out/gpu-bundle
	rm -rf $(GPU_BUNDLE) && mkdir -p $(GPU_BUNDLE)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(GPU_BUNDLE)/ ./cmd/ternctl ./cmd/worker ./scripts/gpu/bench
	CGO_ENABLED=0 $(GO) test -c -tags gpu -trimpath -ldflags='-s -w' -o $(GPU_BUNDLE)/cuda.test ./pkg/tensor/cuda
	gzip -6 $(GPU_BUNDLE)/ternctl $(GPU_BUNDLE)/worker $(GPU_BUNDLE)/bench $(GPU_BUNDLE)/cuda.test
	cp scripts/gpu/run.sh scripts/gpu/torch_baseline.py scripts/gpu/job.yaml scripts/gpu/job-pp.yaml $(GPU_BUNDLE)/
	@du -sh $(GPU_BUNDLE)

gpu-check: gpu-bundle ## run the GPU bundle's tests here (needs an NVIDIA GPU and its driver)
	$(GPU_BUNDLE)/run.sh check
