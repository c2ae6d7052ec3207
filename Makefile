# Waypoint developer and operator tasks. `make help` lists them.
#
# Tests run against real services that deploy/local/services.sh starts
# (PostgreSQL 17 + pgvector, Redis, a nats-server binary), as root on Debian.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.ONESHELL:
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

GO ?= go
BIN := bin/waypoint
TOOLS := bin/tools
SERVICES := deploy/local/services.sh
# Evaluated inside recipes: exports the services' addresses for the tests.
SERVICES_ENV = eval "$$($(SERVICES) env)"

# Packages tested with the race detector; the rest run without it (it costs
# several times the CPU on a 2-core CI machine).
RACE_PKGS ?= ./message/... ./config/... ./hub/...
# What `make test` covers; narrow it with e.g. PKGS=./sink/...
PKGS ?= ./...
TEST_FLAGS ?= -count=1 -timeout 25m
STATICCHECK_VERSION ?= v0.8.2

IMAGE ?= waypoint
TAG ?=
ARGS ?=

PROTOC_OPTS := -I . --go_out=. --go_opt=paths=source_relative \
	--go-grpc_out=. --go-grpc_opt=paths=source_relative
# protoc writes its own version into each file; a different protoc release
# is not a different contract, so proto-check ignores those two lines.
PROTOC_VERSION_LINE := ^//[-[:space:]]*protoc  *v[0-9.]*$$

# go test -v output without the per-test progress lines: failures, skips,
# logs and the per-package result remain.
TEST_FILTER := { grep -vE '^[[:space:]]*(=== (RUN|PAUSE|CONT|NAME)|--- PASS)|^PASS$$' || true; }

.PHONY: help build run test test-faults bench lint demo proto proto-check \
	proto-tools protoc services services-down services-status jaeger \
	backfill-queue backfill-queue-fids backfill-queue-max backfill-worker \
	backfill-worker-highperf backfill-update-user-data \
	backfill-update-user-data-max docker-build docker-run docker-push docker-tag

help: ## list the targets
	@awk -F':.*## ' '/^[a-zA-Z0-9_-]+:.*## / { printf "  %-32s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

build: ## build bin/waypoint
	$(GO) build -o $(BIN) ./cmd/waypoint

run: build ## build and run `waypoint start` (extra flags: ARGS=...)
	$(BIN) start $(ARGS)

services: ## start the local test services (idempotent)
	$(SERVICES) up --with-jaeger

services-down: ## stop the local test services
	$(SERVICES) down

services-status: ## show the local test services
	$(SERVICES) status

jaeger: ## build (once, ~6 min) and start a local Jaeger
	$(SERVICES) jaeger

test: proto-check services ## run every test against the local services (-race on RACE_PKGS)
	@$(SERVICES_ENV)
	mkdir -p bin
	all=$$($(GO) list -e $(PKGS) | sort)
	# A pattern whose directory does not exist yet is an error to go list.
	pats=()
	for p in $(RACE_PKGS); do
		if [[ -e $${p%/...} ]]; then pats+=("$$p"); else echo "RACE_PKGS: $$p matches nothing (yet)"; fi
	done
	race=$$( (( $${#pats[@]} )) && $(GO) list -e "$${pats[@]}" | sort || true)
	rest=$$(comm -23 <(echo "$$all") <(echo "$$race"))
	race=$$(comm -12 <(echo "$$all") <(echo "$$race"))
	log=bin/test.log
	: >"$$log"
	rc=0
	if [[ -n $$race ]]; then
		echo "go test -race $(TEST_FLAGS) ($$(wc -l <<<"$$race") packages)"
		$(GO) test -race $(TEST_FLAGS) -v $$race 2>&1 | tee -a "$$log" | $(TEST_FILTER) || rc=1
	fi
	if [[ -n $$rest ]]; then
		echo "go test $(TEST_FLAGS) ($$(wc -l <<<"$$rest") packages)"
		$(GO) test $(TEST_FLAGS) -v $$rest 2>&1 | tee -a "$$log" | $(TEST_FILTER) || rc=1
	fi
	# A test that needs a service fails when it is missing; a skip would
	# let a broken setup pass unnoticed.
	if grep -E '^[[:space:]]*--- SKIP' "$$log"; then
		echo "make test: the tests above were skipped; tests must fail, not skip (full output: $$log)" >&2
		rc=1
	fi
	exit $$rc

test-faults: services ## run the fault-injection suite (test/faults, build tag "faults") and print its table
	@$(SERVICES_ENV)
	$(GO) test -tags faults $(TEST_FLAGS) -v -run Fault ./test/faults/ 2>&1 | $(TEST_FILTER)

bench: services ## run every benchmark and print one table (also bin/bench.md)
	deploy/bench/run.sh

lint: ## gofmt, go vet and staticcheck
	@files=$$(find . \( -path ./bin -o -path './.*' \) -prune -o -name '*.go' -print)
	unformatted=$$(gofmt -l $$files)
	if [[ -n $$unformatted ]]; then
		echo "gofmt -w needed on:" >&2
		echo "$$unformatted" >&2
		exit 1
	fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

demo: services build ## run simulator -> ingest -> JetStream -> sink -> Postgres and show what landed
	deploy/local/demo.sh

# The protoc plugins are pinned as tools in go.mod.
proto-tools:
	$(GO) build -o $(TOOLS)/ google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc

protoc:
	@if ! command -v protoc >/dev/null 2>&1; then
		echo "installing protobuf-compiler with apt-get"
		export DEBIAN_FRONTEND=noninteractive
		apt-get -q update && apt-get -q -y install --no-install-recommends protobuf-compiler ||
			{ echo "apt-get install protobuf-compiler failed; install protoc by hand" >&2; exit 1; }
	fi

proto: proto-tools protoc ## regenerate proto/*.pb.go from proto/*.proto
	cd proto && PATH="$(CURDIR)/$(TOOLS):$$PATH" protoc $(PROTOC_OPTS) *.proto

proto-check: proto-tools protoc ## check that proto/*.pb.go match proto/*.proto
	@tmp=$$(mktemp -d)
	trap 'rm -rf "$$tmp"' EXIT
	cp -a proto/. "$$tmp"/
	rm -f "$$tmp"/*.pb.go
	(cd "$$tmp" && PATH="$(CURDIR)/$(TOOLS):$$PATH" protoc $(PROTOC_OPTS) *.proto)
	if ! diff -r -u -I '$(PROTOC_VERSION_LINE)' proto "$$tmp"; then
		echo "proto/ does not match its .proto files: run make proto" >&2
		exit 1
	fi
	echo "proto/ is up to date"

# Operator tasks, mapped onto the CLI. They use the configuration the binary
# finds (waypoint.toml / WAYPOINT_* variables), not the test services.
backfill-queue: build ## queue a backfill of every FID
	$(BIN) backfill enqueue --all

backfill-queue-fids: build ## queue a backfill of some FIDs: FIDS=1,2,3
	@[[ -n "$(FIDS)" ]] || { echo "usage: make $@ FIDS=1,2,3" >&2; exit 2; }
	$(BIN) backfill enqueue --fids $(FIDS)

backfill-queue-max: build ## queue a backfill of FIDs up to MAX_FID=1000
	@[[ -n "$(MAX_FID)" ]] || { echo "usage: make $@ MAX_FID=1000" >&2; exit 2; }
	$(BIN) backfill enqueue --max-fid $(MAX_FID)

backfill-worker: build ## run a backfill worker
	$(BIN) backfill worker

backfill-worker-highperf: build ## run a backfill worker with 100 concurrent jobs
	$(BIN) backfill worker --concurrency 100

backfill-update-user-data: build ## queue a user-data-only refresh of every FID
	$(BIN) backfill enqueue --all --user-data-only

backfill-update-user-data-max: build ## queue a user-data-only refresh up to MAX_FID=1000
	@[[ -n "$(MAX_FID)" ]] || { echo "usage: make $@ MAX_FID=1000" >&2; exit 2; }
	$(BIN) backfill enqueue --max-fid $(MAX_FID) --user-data-only

docker-build: ## build the image IMAGE:latest (IMAGE=waypoint) from deploy/Dockerfile
	docker build -f deploy/Dockerfile -t $(IMAGE):latest .

docker-run: ## run IMAGE:latest (command and flags: ARGS=...)
	docker run --rm $$([[ -t 0 ]] && echo -it) $(IMAGE):latest $(ARGS)

docker-tag: ## tag IMAGE:latest as IMAGE:TAG, e.g. TAG=v1.2.3
	@[[ -n "$(TAG)" ]] || { echo "usage: make $@ TAG=v1.2.3" >&2; exit 2; }
	docker tag $(IMAGE):latest $(IMAGE):$(TAG)

docker-push: ## push IMAGE:TAG, or IMAGE:latest without TAG
	docker push $(IMAGE):$(or $(TAG),latest)
