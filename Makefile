# fluxi2i: `make test` is the command CI runs (.ci/run).
GO      ?= go
SPEC    := openapi/openapi.yaml
CONFIG  := openapi/oapi-codegen.yaml
GENFILES := fluxi2i.gen.go validate.gen.go
CODEGEN := $(GO) run github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen

.PHONY: generate check-generated lint test bench fuzz soak interop e2e

FUZZTIME ?= 30s

## generate: regenerate gen/ from the spec.
generate:
	$(GO) generate ./...

## check-generated: regenerate into a temporary directory; fail on any difference from gen/.
check-generated:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	sed "s#^output: .*#output: $$tmp/fluxi2i.gen.go#" $(CONFIG) > "$$tmp/config.yaml" && \
	$(CODEGEN) -config "$$tmp/config.yaml" $(SPEC) && \
	$(GO) run ./internal/cmd/genvalidate -spec $(SPEC) -types "$$tmp/fluxi2i.gen.go" -out "$$tmp/validate.gen.go" || \
		{ echo "check-generated: the generators failed" >&2; exit 1; }; \
	for f in $(GENFILES); do \
		if ! diff -u gen/$$f "$$tmp/$$f"; then \
			echo "gen/$$f is out of date or was edited by hand: run 'make generate' and commit" >&2; exit 1; \
		fi; \
	done; \
	extra=$$(ls gen | grep -vx -e fluxi2i.gen.go -e validate.gen.go); \
	if [ -n "$$extra" ]; then echo "unexpected files in gen/: $$extra" >&2; exit 1; fi; \
	echo "gen/ matches $(SPEC)"

## lint: gofmt prints nothing and go vet is clean.
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:" >&2; echo "$$out" >&2; exit 1; fi
	$(GO) vet ./...
	cd otel && $(GO) vet ./...

## test: check-generated, lint, then the whole suite under the race detector, the otel module's too.
test: check-generated lint
	$(GO) test -race -count=1 ./...
	cd otel && $(GO) test -race -count=1 ./...

## bench: the benchmarks, with allocations.
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...
	cd otel && $(GO) test -run '^$$' -bench . -benchmem ./...

## fuzz: run every fuzz target for FUZZTIME each (default 30s).
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzReader$$' -fuzztime $(FUZZTIME) ./internal/sse
	$(GO) test -run '^$$' -fuzz '^FuzzLinesMatchTheReference$$' -fuzztime $(FUZZTIME) ./internal/sse
	for t in FuzzDecodeStatus FuzzDecodeOutput FuzzAPIError FuzzDataURI FuzzWebhookVerify; do \
		$(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) ./wrapper || exit 1; \
	done
	$(GO) test -run '^$$' -fuzz '^FuzzProxyTarget$$' -fuzztime $(FUZZTIME) ./wrapper/proxy

## soak: the long fault soak (3,000 jobs), 10,000 jobs in flight, a 10,000-job batch, the proxy under 20 concurrent 31 MiB submits.
soak:
	$(GO) test -count=1 -run '^TestFaultSoak$$' -v ./wrapper -soak.jobs 3000
	$(GO) test -count=1 -run '^TestJobsInFlight$$' -v ./wrapper -inflight.jobs 10000
	$(GO) test -count=1 -run '^TestBatchScale$$' -v ./wrapper/batch -batch.jobs 10000
	$(GO) test -count=1 -run '^TestProxyBodyFlood$$' -v ./wrapper/proxy -proxy.flood 20

## interop: fal's own JS client (@fal-ai/client 1.10.1), unchanged, against `fluxi2i simulate` and through `fluxi2i proxy` (needs Node.js and npm; ROUNDS=25 for the proxy's CPU figure).
interop:
	tests/interop/run.sh

## e2e: fal's own JS client (@fal-ai/client 1.10.1, bundled with esbuild) in headless Chromium (Debian's chromium, installed when missing; puppeteer-core), through wrapper/proxy beside the page and through `fluxi2i proxy --cors` from another origin (needs Node.js and npm; screenshots in tests/e2e/out/).
e2e:
	tests/e2e/run.sh
