# tern — see README.md. `make` alone lists the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
# Packages whose code runs goroutines: their tests also run under the race detector.
RACE_PKGS := ./pkg/tensor/... ./pkg/model/... ./pkg/data/... ./pkg/optim/... ./pkg/train/... ./cmd/ternctl/...
FUZZTIME ?= 30s

.DEFAULT_GOAL := help
.PHONY: help build test demo bench fuzz fmt vet lint

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

build: ## build ternctl, coordinator and worker into bin/ (static, no cgo)
	CGO_ENABLED=0 $(GO) build -o $(BIN)/ ./cmd/...

test: vet ## go vet + the whole test suite (race detector on concurrent packages)
	$(GO) test -count=1 -timeout 20m ./...
	$(GO) test -count=1 -timeout 20m -race -short $(RACE_PKGS)

demo: build ## train the small model on the Go source tree (about 3 minutes on 2 cores)
	$(BIN)/ternctl train -f examples/demo.yaml

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

lint: ## staticcheck, fetched from the Go module proxy
	$(GO) run $(STATICCHECK) ./...
