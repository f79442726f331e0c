# Guardian build entry points. `make test` is what CI runs (see .ci/run).
GO      ?= go
BIN     ?= bin/guardian
PKGS    ?= ./...

.PHONY: build test lint bench bench-proxy demo fixtures clean

build:
	$(GO) build -o $(BIN) ./cmd/guardian

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needs to run on:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

test: lint
	$(GO) test -race -count=1 -timeout 40m $(PKGS)

bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

bench-proxy: build
	bash bench/proxy/run.sh

demo:
	$(GO) run ./cmd/guardian demo

# Regenerates the statistics reference fixtures with Debian's scipy/statsmodels.
fixtures:
	/usr/bin/python3 analysis/testdata/gen_reference.py

clean:
	rm -rf bin
