# regionstore developer tasks; `make help` lists them.
# The local stack (Kafka, Redis, three regional stores, the four services) runs under
# process-compose, without Docker. Every setting below can be overridden: make up KAFKA_PORT=19092

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules --no-print-directory

ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
RUN_DIR ?= .run
CACHE_DIR ?= .cache
override RUN_DIR := $(abspath $(RUN_DIR))
override CACHE_DIR := $(abspath $(CACHE_DIR))

# The default ports (PC_PORT, KAFKA_PORT, REGION_1_PORT, GATEWAY_PORT, ...), written once in
# PORTS_ENV (NAME=port) for the settings, tests and bench too; the environment wins, as for `?=`.
PORTS_ENV := $(ROOT)/shared/src/regionstore_shared/ports.env
$(foreach default,$(shell sed -n 's/^\([A-Z0-9_]*\)=\([0-9]*\)$$/\1?=\2/p' $(PORTS_ENV)),$(eval $(default)))
# One KRaft node, or a quorum of three (make up KAFKA_BROKERS=3): replication factor 3,
# min.insync.replicas 2; nodes 2 and 3 listen on KAFKA_2_PORT and KAFKA_3_PORT.
KAFKA_BROKERS ?= 1
KAFKA_QUORUM_PEERS := $(if $(filter 3,$(KAFKA_BROKERS)),127.0.0.1:$(KAFKA_2_PORT) 127.0.0.1:$(KAFKA_3_PORT))
# The services' own state (placement and key tables) follows one Kafka cluster's topics: the
# three-broker cluster's (RUN_DIR/kafka-quorum) gets a state directory of its own, so a table never
# meets another cluster's topic of the same name.
STATE_DIR := $(RUN_DIR)/$(if $(filter 3,$(KAFKA_BROKERS)),kafka-quorum/)state
KAFKA_BOOTSTRAP := $(subst $() ,$(shell printf ,),$(strip 127.0.0.1:$(KAFKA_PORT) $(KAFKA_QUORUM_PEERS)))
# One of each service, or two gateways (behind HAProxy on BALANCER_PORT), two writers and two
# replicators (make up SCALE=2).
SCALE ?= 1
# Faults beyond kills (docs/faults.md), as a list for `make chaos FAULTS=partition,pause,clock,disk,wipe,kill`.
# With links among them (partition, all, or `make up FAULTS=1`), Toxiproxy runs in the stack and
# the services reach Kafka, both Redis, every store and (SCALE=2) the gateways through it
# (deploy/local/links.yaml). Without FAULTS the stack is as ever.
FAULTS ?=
comma := ,
LINKS := $(if $(filter 1 all partition,$(subst $(comma), ,$(FAULTS))),1)
# Services to start with the infra; `make up SERVICES=` runs the infra alone.
SERVICES ?= gateway writer replicator recovery
# The services send their spans to the stack's OTLP receiver, which writes them to
# RUN_DIR/traces/spans.jsonl (docs/tracing.md); TRACING=0 leaves OTEL_EXPORTER_OTLP_ENDPOINT
# empty: tracing off.
TRACING ?= 1
OTEL_ENDPOINT := $(if $(filter 1,$(TRACING)),http://127.0.0.1:$(OTLP_PORT))
UP_TIMEOUT ?= 300
STORE_IMPL ?= $(if $(shell command -v mongod 2>/dev/null),mongod,ferretdb)
P ?=

PROCESS_COMPOSE_VERSION := v1.85.0
# The newest FerretDB 2 that works with Debian's DocumentDB 1.0.
FERRETDB_VERSION := v2.7.0
PROCESS_COMPOSE := $(CACHE_DIR)/bin/process-compose-$(PROCESS_COMPOSE_VERSION)
FERRETDB := $(CACHE_DIR)/bin/ferretdb-$(FERRETDB_VERSION)
# PostgreSQL 18 with DocumentDB, in a Debian unstable root (deploy/local/bin/docdb-root.sh).
DOCDB_ROOT := $(CACHE_DIR)/docdb-root
STORE_TOOLS := $(if $(filter ferretdb,$(STORE_IMPL)),$(FERRETDB) $(DOCDB_ROOT)/.complete)
TOXIPROXY_VERSION := v2.12.0
TOXIPROXY := $(CACHE_DIR)/bin/toxiproxy-server-$(TOXIPROXY_VERSION)
LINK_TOOLS := $(if $(LINKS),$(TOXIPROXY))
KAFKA_LIBS := $(CACHE_DIR)/kafka/libs
# Named by the pom's content, not its time: a fresh checkout's pom is newer than the cache's jars
# without being different, and must not fetch them again.
KAFKA_LIBS_DONE := $(KAFKA_LIBS)/.complete-$(shell sha256sum $(ROOT)/deploy/local/pom.xml | cut -c1-16)
PYTHON ?= $(ROOT)/.venv/bin/python
PC_CONFIG := $(ROOT)/deploy/local/process-compose.yaml
LOCAL := $(ROOT)/deploy/local/bin
# pyenv's python3 shim costs a second a call on a busy machine; the venv's is a real binary.
STACKCTL := $(firstword $(wildcard $(PYTHON)) python3) -I -S $(LOCAL)/stackctl.py

export ROOT RUN_DIR CACHE_DIR PYTHON PC_CONFIG PROCESS_COMPOSE FERRETDB DOCDB_ROOT STORE_IMPL SERVICES
export UP_TIMEOUT PC_PORT KAFKA_PORT KAFKA_CONTROLLER_PORT REDIS_PORT IDEMPOTENCY_REDIS_PORT
export STATE_DIR KAFKA_BROKERS KAFKA_2_PORT KAFKA_2_CONTROLLER_PORT KAFKA_3_PORT KAFKA_3_CONTROLLER_PORT KAFKA_BOOTSTRAP
export REGION_1_PORT REGION_2_PORT REGION_3_PORT REGION_1_PG_PORT REGION_2_PG_PORT REGION_3_PG_PORT
export GATEWAY_PORT WRITER_PORT REPLICATOR_PORT RECOVERY_PORT OTLP_PORT OTEL_ENDPOINT
export SCALE GATEWAY_2_PORT WRITER_2_PORT REPLICATOR_2_PORT BALANCER_PORT
export LINKS TOXIPROXY TOXIPROXY_PORT KAFKA_LINK_PORT KAFKA_LINK_BROKER_PORT REDIS_LINK_PORT
export IDEMPOTENCY_REDIS_LINK_PORT REGION_1_LINK_PORT REGION_2_LINK_PORT REGION_3_LINK_PORT
export GATEWAY_LINK_PORT GATEWAY_2_LINK_PORT
# process-compose's CLI (`process-compose process list`) finds the server through this.
export PC_PORT_NUM := $(PC_PORT)
# uv must use the machine's Python, never download one.
export UV_PYTHON_DOWNLOADS := never

# Tests reach the stack through the same variables the services read; preset ones win
# (to point the integration tests at another deployment).
TEST_ENV := REGIONSTORE_KAFKA__BOOTSTRAP_SERVERS REGIONSTORE_REDIS__URL REGIONSTORE_IDEMPOTENCY_REDIS__URL \
	REGIONSTORE_STORES__REGION_1 REGIONSTORE_STORES__REGION_2 REGIONSTORE_STORES__REGION_3 \
	REGIONSTORE_GATEWAY_URL REGIONSTORE_WRITER_URL REGIONSTORE_REPLICATOR_URL REGIONSTORE_RECOVERY_URL
REGIONSTORE_KAFKA__BOOTSTRAP_SERVERS ?= $(KAFKA_BOOTSTRAP)
# The stack's passwords, RUN_DIR/secrets/<name>: made by the `secrets` prerequisite and read
# only when a recipe runs (these are recursively expanded), so a first run finds them too.
secret = $(strip $(file < $(RUN_DIR)/secrets/$(1)))
STORE_LOGIN = $(if $(filter ferretdb,$(STORE_IMPL)),regionstore:$(call secret,store_password)@)
REGIONSTORE_REDIS__URL ?= redis://regionstore:$(call secret,redis_password)@127.0.0.1:$(REDIS_PORT)/0
REGIONSTORE_IDEMPOTENCY_REDIS__URL ?= redis://regionstore:$(call secret,redis_password)@127.0.0.1:$(IDEMPOTENCY_REDIS_PORT)/0
REGIONSTORE_STORES__REGION_1 ?= mongodb://$(STORE_LOGIN)127.0.0.1:$(REGION_1_PORT)/?directConnection=true
REGIONSTORE_STORES__REGION_2 ?= mongodb://$(STORE_LOGIN)127.0.0.1:$(REGION_2_PORT)/?directConnection=true
REGIONSTORE_STORES__REGION_3 ?= mongodb://$(STORE_LOGIN)127.0.0.1:$(REGION_3_PORT)/?directConnection=true
REGIONSTORE_GATEWAY_URL ?= http://127.0.0.1:$(if $(filter 2,$(SCALE)),$(BALANCER_PORT),$(GATEWAY_PORT))
REGIONSTORE_WRITER_URL ?= http://127.0.0.1:$(WRITER_PORT)
REGIONSTORE_REPLICATOR_URL ?= http://127.0.0.1:$(REPLICATOR_PORT)
REGIONSTORE_RECOVERY_URL ?= http://127.0.0.1:$(RECOVERY_PORT)

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^##@/ {printf "%s\n", substr($$0, 5)} \
		/^[a-zA-Z_-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

##@ Local stack

.PHONY: up
up: tools sync secrets ## start the local stack (installs what is missing) and wait until it is ready
	@$(STACKCTL) up

.PHONY: secrets
secrets: ## make the stack's random passwords where missing: RUN_DIR/secrets/<name>, mode 0600
	@$(STACKCTL) secrets

.PHONY: down
down: ## stop the local stack and every process it started; data is kept
	@$(STACKCTL) down

.PHONY: status
status: ## show the stack's processes, pids, ports, readiness and memory
	@$(STACKCTL) status

.PHONY: logs
logs: ## follow the logs of all processes, or of one: make logs P=kafka
	@tail -n 40 -F $(if $(P),$(RUN_DIR)/logs/$(P).log,$(RUN_DIR)/logs/*.log)

ROLE ?=
NAME ?=
ID ?=

.PHONY: key
key: ## create an API key (printed once): make key ROLE=reader|writer|operator [NAME=...]
	@test -n "$(ROLE)" || { echo "usage: make key ROLE=reader|writer|operator [NAME=what it is for]" >&2; exit 2; }
	@$(STACKCTL) keys create --role "$(ROLE)" --name "$(NAME)"

.PHONY: keys
keys: ## list the API keys (ids, roles, names; never the keys)
	@$(STACKCTL) keys list

.PHONY: revoke-key
revoke-key: ## revoke an API key: make revoke-key ID=<key id>
	@test -n "$(ID)" || { echo "usage: make revoke-key ID=<key id> (make keys lists them)" >&2; exit 2; }
	@$(STACKCTL) keys revoke "$(ID)"

.PHONY: clean-data
clean-data: down ## stop the stack and delete its data (RUN_DIR)
	rm -rf -- "$(RUN_DIR)"

.PHONY: prereqs
prereqs: uv ## check (and where possible install) the tools the stack needs
	@$(LOCAL)/prereqs.sh --install

.PHONY: tools
tools: $(PROCESS_COMPOSE) $(STORE_TOOLS) $(LINK_TOOLS) $(KAFKA_LIBS_DONE) ## fetch and build the stack's binaries, jars and store root into CACHE_DIR

$(PROCESS_COMPOSE): | prereqs
	@echo "building process-compose $(PROCESS_COMPOSE_VERSION) into $(@D)"
	@$(LOCAL)/install-go-tool.sh github.com/f1bonacc1/process-compose $(PROCESS_COMPOSE_VERSION) . $@

$(FERRETDB): | prereqs
	@echo "building FerretDB $(FERRETDB_VERSION) into $(@D)"
	@$(LOCAL)/install-go-tool.sh github.com/FerretDB/FerretDB/v2 $(FERRETDB_VERSION) ./cmd/ferretdb $@

$(TOXIPROXY): | prereqs
	@echo "building Toxiproxy $(TOXIPROXY_VERSION) into $(@D)"
	@$(LOCAL)/install-go-tool.sh github.com/Shopify/toxiproxy/v2 $(TOXIPROXY_VERSION) ./cmd/server $@

$(DOCDB_ROOT)/.complete: | prereqs
	@$(LOCAL)/docdb-root.sh $(DOCDB_ROOT)
	@touch $@

# Fetched aside and swapped in, so a broker running from the old jars keeps working.
$(KAFKA_LIBS_DONE): | prereqs
	@echo "fetching Kafka jars into $(KAFKA_LIBS)"
	@rm -rf "$(KAFKA_LIBS).new" && mkdir -p "$(KAFKA_LIBS).new"
	@mvn -q -B -f $(ROOT)/deploy/local/pom.xml dependency:copy-dependencies -DoutputDirectory="$(KAFKA_LIBS).new" \
		>"$(CACHE_DIR)/kafka/mvn.log" 2>&1 || { tail -n 30 "$(CACHE_DIR)/kafka/mvn.log"; exit 1; }
	@touch "$(KAFKA_LIBS).new/$(notdir $(KAFKA_LIBS_DONE))"
	@rm -rf "$(KAFKA_LIBS)" && mv "$(KAFKA_LIBS).new" "$(KAFKA_LIBS)"

##@ Python

UV_VERSION := 0.13.9

.PHONY: uv
uv: ## install uv from PyPI when missing (prereqs needs it, so a fresh machine's make up works)
	@command -v uv >/dev/null || { echo "installing uv $(UV_VERSION) with pip"; \
		python3 -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION) >&2 \
		|| { echo "uv not found and pip could not install it: pip install uv==$(UV_VERSION)" >&2; exit 1; }; }

.PHONY: sync
sync: uv ## install the workspace into .venv from uv.lock (and uv itself, from PyPI, when missing)
	@uv sync --frozen --quiet

.PHONY: lint
lint: sync ## ruff, mypy and vulture (dead code; settings in pyproject.toml)
	uv run ruff check .
	uv run ruff format --check .
	uv run mypy shared/src testing/src gateway/src writer-service/src replicator-service/src recovery-service/src tools/src bench/regionstore_bench tests/chaos tests/helm tests/docker tests/docs
	uv run vulture

.PHONY: test-tools
test-tools: helm-tools ## what the browser, compose and chart tests need: Debian's chromium, docker compose, Dockerfile checks, helm
	@$(LOCAL)/prereqs.sh --test
	@mkdir -p "$(CACHE_DIR)" && bash tests/compose/install-tools.sh >"$(CACHE_DIR)/compose-tools.log" 2>&1 \
		|| { tail -n 20 "$(CACHE_DIR)/compose-tools.log" >&2; echo "building the compose tools failed" >&2; exit 1; }

# The chart's validators (helm, kubeconform, kube-score) built from their Go modules, and the
# operators' CRD schemas, into CACHE_DIR/helm (tests/helm/install-tools.sh; seconds once there).
.PHONY: helm-tools
helm-tools: sync ## build the Helm chart's validators and schemas into CACHE_DIR/helm
	@mkdir -p "$(CACHE_DIR)" && bash tests/helm/install-tools.sh >"$(CACHE_DIR)/helm-tools.log" 2>&1 \
		|| { tail -n 20 "$(CACHE_DIR)/helm-tools.log" >&2; echo "building the helm tools failed (log: $(CACHE_DIR)/helm-tools.log)" >&2; exit 1; }
	@grep '^helm tools:' "$(CACHE_DIR)/helm-tools.log" || true

PYTEST_ARGS ?=
# The broker-quorum tests (marker `quorum`) need the three-broker stack, the scale-out tests
# (marker `scale`) two of each service: a whole run on the default stack leaves them to
# `make test-quorum` and `make test-scale` after the rest, and the mixed chaos round and a
# store's full disk (marker `links`) to `make test-links`, on a stack with its Toxiproxy links;
# `make test` replays one schedule there (CHAOS_SEED, clean when chosen), `make test-links` by
# hand draws a new one. That round kills every process kind too, so the round of kills alone
# (marker `kills`) is left to `make chaos` and `make test PYTEST_ARGS='-m kills'`. The Docker path
# is its own run, after this one: .ci/run runs `make test-docker-ci` (images built here,
# deploy/compose.yaml up, a subset of its tests and a short kill round, down: about 4-5 minutes,
# the early images built meanwhile); `make test-docker` runs all of them (docs/deploying.md#in-ci).
# A mixed round's schedule replayed by `make test` (make chaos FAULTS=all NEMESIS_FAULTS=4 SEED=...
# gives the same one): a fixed seed keeps a CI failure reproducible; new seeds are make chaos's.
CI_CHAOS_SEED := 2284982464
LATER := $(if $(or $(strip $(PYTEST_ARGS)),$(filter 3,$(KAFKA_BROKERS)),$(filter 2,$(SCALE)),$(LINKS)),,yes)

.PHONY: test
test: sync tools test-tools secrets ## all tests (or some: make test PYTEST_ARGS='tests/integration -k smoke'); starts the stack if needed
	@echo "uv run pytest $(PYTEST_ARGS)"
	@env $(foreach var,$(TEST_ENV),$(var)='$($(var))') uv run pytest $(PYTEST_ARGS) $(if $(LATER),-m 'not quorum and not scale and not links and not kills')
	@$(if $(LATER),$(MAKE) test-quorum)
	@$(if $(LATER),$(MAKE) test-scale)
	@$(if $(LATER),$(MAKE) test-links CHAOS_SEED=$(CI_CHAOS_SEED))

.PHONY: test-quorum
test-quorum: ## the broker-quorum tests on a three-broker stack (stops a running stack first, and after)
	@$(STACKCTL) down
	@$(MAKE) test KAFKA_BROKERS=3 PYTEST_ARGS='-m quorum'
	@$(MAKE) down KAFKA_BROKERS=3

.PHONY: test-scale
test-scale: ## the scale-out tests on two of each service behind HAProxy (stops a running stack first, and after)
	@$(STACKCTL) down
	@$(MAKE) test SCALE=2 PYTEST_ARGS='-m scale'
	@$(MAKE) down SCALE=2

.PHONY: test-links
test-links: ## the mixed chaos round (partitions, pauses, clock steps, a full disk, a wipe, kills) and a store's full disk, on a stack with its Toxiproxy links [CHAOS_SEED=n] (stops a running stack first, and after)
	@$(STACKCTL) down
	@$(if $(CHAOS_SEED),REGIONSTORE_CHAOS_SEED=$(CHAOS_SEED)) $(MAKE) test FAULTS=1 PYTEST_ARGS='-m links'
	@$(MAKE) down FAULTS=1

.PHONY: test-unit
test-unit: sync ## tests that need no running stack (tests/compose and tests/helm need make test-tools first)
	uv run pytest -m "not integration"

FUZZ_EXAMPLES ?= 300

.PHONY: fuzz
fuzz: sync secrets ## a long Schemathesis run over the whole API (FUZZ_EXAMPLES cases per operation); prints its figures
	@env $(foreach var,$(TEST_ENV),$(var)='$($(var))') FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) \
		uv run pytest tests/integration/test_api_fuzz.py -s -p no:cacheprovider --timeout 3600

##@ Data and benchmarks

N ?= 100000
FILE ?=

.PHONY: seed
seed: sync secrets ## load N generated Olist-style customers through the batch API: make seed N=100000
	@env $(foreach var,$(TEST_ENV),$(var)='$($(var))') \
		uv run regionstore seed $(N) --url $(REGIONSTORE_GATEWAY_URL)

.PHONY: import
import: sync secrets ## load an Olist customers CSV through the batch API: make import FILE=olist_customers_dataset.csv
	@test -n "$(FILE)" || { echo "usage: make import FILE=path/to/olist_customers_dataset.csv" >&2; exit 2; }
	@env $(foreach var,$(TEST_ENV),$(var)='$($(var))') \
		uv run regionstore import "$(FILE)" --url $(REGIONSTORE_GATEWAY_URL)

.PHONY: audit
audit: sync secrets ## check the regional stores against each other: make audit (see regionstore audit --help)
	@env $(foreach var,$(TEST_ENV),$(var)='$($(var))') uv run regionstore audit

.PHONY: repair
repair: sync secrets ## compare the regions and repair what differs: make repair ARGS='--region region_2 --dry-run'
	@env $(foreach var,$(TEST_ENV),$(var)='$($(var))') uv run regionstore repair $(ARGS)

ROUNDS ?= 1
WRITES ?= 20000
# Extra gateways beside the stack's, one per clock offset (faketime): make chaos SKEW=-30ms,-10s
SKEW ?=
# The nemesis's seed (printed by every round; empty: a random one), and its faults other than
# kills per round.
SEED ?=
NEMESIS_FAULTS ?= 10

.PHONY: chaos
chaos: up ## faults under load, then prove nothing was lost: make chaos ROUNDS=3 [FAULTS=partition,pause,clock,disk,wipe,kill|all] [SEED=n] [SKEW=-30ms,-10s]
	@env $(foreach var,$(TEST_ENV),$(var)='$($(var))') \
		uv run python -m tests.chaos --rounds $(ROUNDS) --writes $(WRITES) --skew='$(SKEW)' \
		--faults='$(or $(FAULTS),kill)' --random-faults $(NEMESIS_FAULTS) $(if $(SEED),--seed $(SEED))

.PHONY: bench
bench: sync secrets ## the full benchmark on the local stack (under 15 min): bench/results/latest.* (OUTPUT=stem; REGIONSTORE_BENCH_REFERENCE_URL=url adds the original app's row, docs/performance.md)
	@env $(foreach var,$(TEST_ENV),$(var)='$($(var))') uv run python -m regionstore_bench $(if $(OUTPUT),--output $(OUTPUT))

.PHONY: bench-singles
bench-singles: sync secrets ## the bench's single-write round alone, to compare two stacks: make bench-singles LABEL=tracing-on [QUICK=1]
	@test -n "$(LABEL)" || { echo "usage: make bench-singles LABEL=name [QUICK=1]" >&2; exit 2; }
	@env $(foreach var,$(TEST_ENV),$(var)='$($(var))') \
		uv run python -m regionstore_bench.singles --label $(LABEL) $(if $(QUICK),--quick)

.PHONY: bench-quick
bench-quick: sync secrets ## a small benchmark (under 3 min on a busy 2-core machine): bench/results/quick.*
	@env $(foreach var,$(TEST_ENV),$(var)='$($(var))') uv run python -m regionstore_bench --quick

.PHONY: bench-cost
bench-cost: sync secrets ## what a write costs with everything running: CPU per write at 20, 100 and 1,000 writes/s and at saturation: bench/results/cost-latest.json
	@env $(foreach var,$(TEST_ENV),$(var)='$($(var))') uv run python -m regionstore_bench.cost $(if $(OUTPUT),--output $(OUTPUT))

.PHONY: bench-data-scale
bench-data-scale: sync secrets ## add N Olist-shaped customers through :batch, then time every list shape at that size (N=0: time only): bench/results/data-scale-*
	@env $(foreach var,$(TEST_ENV),$(var)='$($(var))') RUN_DIR='$(RUN_DIR)' \
		uv run python -m regionstore_bench.data_scale --load $(N)

.PHONY: bench-handover
bench-handover: sync secrets ## each consumer's memory; killed (HOW=stop on SCALE=2: its partitions change hands) under a trickle of writes: seconds until they apply again: bench/results/handover-$(LABEL).*
	@env $(foreach var,$(TEST_ENV),$(var)='$($(var))') RUN_DIR='$(RUN_DIR)' \
		uv run python -m regionstore_bench.handover --label '$(or $(LABEL),latest)' --how '$(or $(HOW),kill)'

.PHONY: bench-paced
bench-paced: sync secrets ## a parked backlog drained under live writes, paced and not (make bench's round 7 alone): bench/results/paced.json
	@env $(foreach var,$(TEST_ENV),$(var)='$($(var))') \
		uv run python -m regionstore_bench.paced_drain --output bench/results/paced.json $(ARGS)

.PHONY: bench-scale
bench-scale: sync secrets ## one against two writers and replicators draining a backlog (needs make up SCALE=2): bench/results/scale.*
	@env $(foreach var,$(TEST_ENV),$(var)='$($(var))') uv run python -m regionstore_bench.scaleout

##@ Docker deployment (needs a Docker engine and Compose v2+)

# COMPOSE_IMAGES=public runs deploy/compose.yaml as users do (images from registries, the service
# image built by compose); COMPOSE_IMAGES=local adds deploy/compose.local-images.yaml and builds
# every image here first, with no registry (deploy/docker/build-images.sh), as CI does.
# COMPOSE_PORTS names a file of HOST_PORT_* settings that moves the published ports
# (deploy/compose.ci-ports.env: all in 30000-31000, beside a local stack).
COMPOSE_IMAGES ?= public
COMPOSE_DOWN_FLAGS ?=
COMPOSE_PORTS ?=
override COMPOSE_PORTS := $(if $(COMPOSE_PORTS),$(abspath $(COMPOSE_PORTS)))
COMPOSE := docker compose $(if $(COMPOSE_PORTS),--env-file $(COMPOSE_PORTS)) -f $(ROOT)/deploy/compose.yaml \
	$(if $(filter local,$(COMPOSE_IMAGES)),-f $(ROOT)/deploy/compose.local-images.yaml)
DOCKER_STATE := $(CACHE_DIR)/docker
# deploy/compose.yaml's Docker secrets; the Mongo keyfile only takes base64 characters (hex is).
# Compose mounts each file as it is, so the files are readable by the containers' own users
# and the directory by nobody else.
# metrics_key is an API key (rsk_<key id>_<secret>), which compose's metrics-key service registers
# with the reader role for Prometheus; it is made first, so the loop leaves it alone.
COMPOSE_SECRETS := mongo_root_password mongo_keyfile store_password redis_password idempotency_redis_password kafka_password auth_secret grafana_admin_password metrics_key

.PHONY: compose-secrets
compose-secrets: ## make deploy/compose.yaml's secrets where missing: random, in deploy/secrets/ (git-ignored)
	@chmod 700 $(ROOT)/deploy/secrets
	@cd $(ROOT)/deploy/secrets && { test -s metrics_key || python3 -c \
		'import secrets; print(f"rsk_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}", end="")' >metrics_key; }
	@cd $(ROOT)/deploy/secrets && for name in $(COMPOSE_SECRETS); do \
		test -s "$$name" || python3 -c 'import secrets, sys; print(secrets.token_hex(int(sys.argv[1])), end="")' \
			"$$( [ "$$name" = mongo_keyfile ] && echo 378 || echo 32 )" >"$$name"; \
	done
	@echo "secrets in deploy/secrets/: $(COMPOSE_SECRETS)"

.PHONY: compose-engine
compose-engine: ## make sure a Docker engine answers: Debian's docker.io, installed and started as root when none does
	@$(ROOT)/deploy/docker/engine.sh $(DOCKER_STATE)/engine

.PHONY: compose-images
compose-images: compose-engine tools ## build every image of COMPOSE_IMAGES=local with no registry, those whose inputs changed (times and sizes printed)
	@FERRETDB=$(FERRETDB) DOCDB_ROOT=$(DOCDB_ROOT) $(ROOT)/deploy/docker/build-images.sh $(ROOT) $(CACHE_DIR)

# What needs nothing `make tools` makes (the base, uv, the service image, Redis, Kafka's JRE):
# it can be built while the tools are built and the local stack's tests run.
.PHONY: compose-images-early
compose-images-early: compose-engine uv ## build the images that need no make tools (the base, uv, the service image, Redis, Kafka's JRE)
	@$(ROOT)/deploy/docker/build-images.sh $(ROOT) $(CACHE_DIR) --early

.PHONY: compose-up
compose-up: compose-secrets $(if $(filter local,$(COMPOSE_IMAGES)),compose-images) ## the production shape in Docker (COMPOSE_IMAGES=local: built here)
	@command -v docker >/dev/null || { echo "compose-up: no docker CLI here: install Docker (apt-get install docker.io), or run make compose-up COMPOSE_IMAGES=local as root" >&2; exit 1; }
	@docker info >/dev/null 2>&1 || { echo "compose-up: no Docker engine answers: start it (systemctl start docker), or run make compose-engine as root" >&2; exit 1; }
	@docker compose version >/dev/null 2>&1 || { echo "compose-up: no docker compose plugin: make compose-tools builds it" >&2; exit 1; }
	@$(COMPOSE) up -d $(if $(filter local,$(COMPOSE_IMAGES)),--no-build,--build) --wait --wait-timeout $(UP_TIMEOUT) \
		|| { $(COMPOSE) ps -a >&2; echo "compose-up: the stack did not become healthy within $(UP_TIMEOUT) s: $(COMPOSE) logs SERVICE says why" >&2; exit 1; }
	@echo "regionstore is up: gateway on http://127.0.0.1:$${HOST_PORT_GATEWAY:-$$(sed -n 's/^HOST_PORT_GATEWAY=//p' $(or $(COMPOSE_PORTS),/dev/null) | grep . || echo 8000)}"
	@echo "first operator key (printed once): make compose-key ROLE=operator NAME=admin$(if $(COMPOSE_PORTS), COMPOSE_PORTS=$(COMPOSE_PORTS))$(if $(filter local,$(COMPOSE_IMAGES)), COMPOSE_IMAGES=local)"

.PHONY: compose-key
compose-key: ## create an API key in the Docker deployment (printed once): make compose-key ROLE=operator [NAME=...]
	@test -n "$(ROLE)" || { echo "usage: make compose-key ROLE=reader|writer|operator [NAME=what it is for]" >&2; exit 2; }
	@$(COMPOSE) exec -T gateway python -m regionstore_gateway.keys create --role "$(ROLE)" --name "$(NAME)"

.PHONY: compose-down
compose-down: ## stop it; data volumes stay (COMPOSE_DOWN_FLAGS=--volumes drops them)
	$(COMPOSE) down --remove-orphans $(COMPOSE_DOWN_FLAGS)

.PHONY: compose-tools
compose-tools: ## build docker compose and BuildKit's Dockerfile checks with Go (no engine needed)
	bash tests/compose/install-tools.sh

.PHONY: compose-config
compose-config: compose-tools sync ## validate deploy/compose.yaml and deploy/Dockerfile
	uv run pytest tests/compose

# The integration tests that hold for any deployment, against the compose stack (after
# compose-up, with the same COMPOSE_* settings), then the container-kill test. A fresh operator
# key is made for them in deploy/secrets/tests_operator_key.
COMPOSE_TESTS ?= tests/integration/test_smoke_stack.py tests/integration/test_write_path.py \
	tests/integration/test_auth_matrix.py tests/integration/test_idempotency.py tests/docker
# LEAN=1 (CI's make test-docker-ci): the smoke tests, a write applied in its home and replica
# region and nowhere else, a read of one's own write, every identity refused or allowed as its
# role says, then the short kill round (each kind of container once: tests/docker).
LEAN ?=
COMPOSE_LEAN_TESTS ?= tests/integration/test_smoke_stack.py \
	tests/integration/test_write_path.py::test_a_write_reaches_home_and_replica_and_nothing_else \
	tests/integration/test_write_path.py::test_wait_applied_gives_read_your_writes \
	tests/integration/test_auth_matrix.py tests/docker
.PHONY: test-compose
test-compose: sync ## integration tests and the container-kill test against the compose deployment (after compose-up) [LEAN=1: CI's subset and short kill round]
	@$(COMPOSE) exec -T gateway python -m regionstore_gateway.keys create --role operator --name tests \
		2>/dev/null >deploy/secrets/tests_operator_key
	set -a; $(if $(COMPOSE_PORTS),. $(COMPOSE_PORTS);) . deploy/compose.test.env; set +a; \
		REGIONSTORE_DOCKER_ROUND=$(if $(LEAN),short,full) uv run pytest -m 'integration and not local_stack' -p no:cacheprovider \
		$(or $(PYTEST_ARGS),$(if $(LEAN),$(COMPOSE_LEAN_TESTS),$(COMPOSE_TESTS)))

# The Docker path: the engine, every image built here (none whose inputs are unchanged), the
# stack on the ports of deploy/compose.ci-ports.env, the tests, then the stack down (volumes
# too). Each step is timed. .ci/run runs the lean one after make test (docs/deploying.md).
.PHONY: test-docker
test-docker: ## the whole Docker path with images built here: engine, images, compose-up, test-compose, compose-down
	@bash $(ROOT)/deploy/docker/test-docker.sh

.PHONY: test-docker-ci
test-docker-ci: ## CI's Docker path: as test-docker, with test-compose LEAN=1 (a subset and the short kill round)
	@bash $(ROOT)/deploy/docker/test-docker.sh --lean

##@ Kubernetes (deploy/helm/regionstore; no cluster needed to check it)

.PHONY: chart-check
chart-check: helm-tools ## validate the chart: helm lint, kubeconform with the operators' schemas, kube-score, render tests
	uv run pytest tests/helm -q -p no:cacheprovider
