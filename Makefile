# One entry point for the local workflow. `make help` lists the targets.

VENV         := .local/venv
PYTHON       := $(VENV)/bin/python
STACK        := tests/stack
NODE         := $(STACK)/node_modules/.bin/node
CDK_BIN      := $(CURDIR)/cdk/node_modules/.bin
LAMBDA_TARGET := aarch64-unknown-linux-gnu
# `cdk synth` needs no account: any URL satisfies the stack's required setting.
SYNTH_CONTEXT := -c controlPlaneUrl=https://apicp.example.com
# The fan-out deployment of tests/e2e/test_targets.py, whose calls tests/iam checks against its grants.
TARGETS_CONTEXT := -c targetAccounts=123456789012,111111111111,222222222222 -c targetRegions=us-east-1,eu-west-1 \
	-c targetRoleExternalId=hub-42 -c targetConcurrency=3
# The CDK CLI must not phone home from CI (notices, telemetry, version check).
export CDK_DISABLE_CLI_TELEMETRY := true
export CDK_DISABLE_VERSION_CHECK := true
# The venv first on PATH: `cargo lambda` and moto come from there.
export PATH  := $(CURDIR)/$(VENV)/bin:$(PATH)
INPUT        ?= {}
# Executions of `make run`: the first registers the runtimes and syncs the APIs, the second (as the schedule's
# next run) sends the metrics, which wait for a stage's first sync.
RUNS         ?= 2
# pytest workers of `make test`, each with a local stack of its own: the tests mostly wait (paces, retries).
TEST_WORKERS ?= 3

.PHONY: help setup run run-org tick test test-large test-properties soak bench lambdas cdk-check deploy clean

help:
	@echo "make setup   install the local stack (Python venv, Node 22, interpreter, validator)"
	@echo "make run     run the state machine locally, RUNS executions one after another (default 2: the first syncs the APIs,"
	@echo "             the second sends their metrics); INPUT='{\"mode\":\"full\"}' for full syncs; PUSH=1: push mode, then a"
	@echo "             change made in API Gateway reaches the control plane through EventBridge and the queue in seconds"
	@echo "make run-org the same over many accounts and regions: the fan-out over 3 accounts x 2 regions, one account's"
	@echo "             role missing (its targets fail, the others sync)"
	@echo "make tick    the schedule's way: RUNS ticks; a tick serves quiet targets itself and starts an execution"
	@echo "             only for work (the first tick hands the first sync over, the second reads the metrics)"
	@echo "make test    validate the ASL, check format and lints, run the Rust tests, the CDK checks, the end-to-end tests"
	@echo "             (TEST_WORKERS at once, default 3, with a 10-API benchmark smoke), each function's AWS calls in them"
	@echo "             against its IAM grants, and a local execution in a copy of the repository with nothing beside it"
	@echo "make test-large  on demand: the largest account (all three API types): full sync, a 2,520-API metrics window, a 150-runtime catch-up (about 20 minutes)"
	@echo "make test-properties  on demand: the property tests with PROPTEST_CASES cases each (default 20000)"
	@echo "make soak    on demand: the fault soak with SOAK_ROUNDS rounds (default 20) and SOAK_SEED"
	@echo "make bench   on demand: AWS calls, time, memory, payloads, history and cost at 100, 600 and 2,520 APIs"
	@echo "             (release builds, about 20 minutes); the report goes to docs/benchmarks.md"
	@echo "make deploy  build the arm64 functions and cdk deploy (pass CONTEXT='-c controlPlaneUrl=https://...')"

setup: $(VENV)/.installed $(STACK)/node_modules/.installed cdk/node_modules/.installed

$(VENV)/.installed: tests/requirements.txt
	@echo "setup 1/3: Python venv in $(VENV): moto, cargo-lambda, zig, pytest (first time: about 2 minutes)"
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $@

$(STACK)/node_modules/.installed: $(STACK)/package.json $(STACK)/package-lock.json
	@echo "setup 2/3: Node 22, the Step Functions interpreter and the ASL validator in $(STACK)/node_modules (about 1 minute)"
	cd $(STACK) && npm ci --no-audit --no-fund --loglevel=error
	$(NODE) --version
	touch $@

cdk/node_modules/.installed: cdk/package.json cdk/package-lock.json
	@echo "setup 3/3: the CDK app's packages in cdk/node_modules (about 1 minute)"
	cd cdk && npm ci --no-audit --no-fund --loglevel=error
	touch $@

run: setup
	$(PYTHON) $(STACK)/stack.py run --input '$(INPUT)' --runs $(RUNS) --build-progress $(if $(PUSH),--push)

# As the schedule runs it: RUNS ticks, each starting an execution only for a target with work.
tick: setup
	$(PYTHON) $(STACK)/stack.py run --runs $(RUNS) --build-progress --tick

# Many accounts and regions on the embedded stack: the fan-out over 3 accounts x 2 regions, one account without its role.
run-org: setup
	$(PYTHON) $(STACK)/stack.py run --input '$(INPUT)' --runs $(RUNS) --build-progress --targets

test: setup
	$(NODE) $(STACK)/node_modules/.bin/asl-validator --json-path statemachine/agent.asl.json --json-path statemachine/targets.asl.json
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --quiet -- -D warnings
	cargo test --workspace
	$(MAKE) --no-print-directory cdk-check
	rm -rf target/iam-uses target/iam-uses-targets
	cd tests && ../$(PYTHON) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=15
	cd tests && ../$(PYTHON) -m pytest -q iam
	tests/stack/standalone-check.sh

# On demand, outside `make test`: the largest account one region can hold and a 150-runtime
# metrics catch-up, with their figures.
test-large: setup
	cd tests && ../$(PYTHON) -m pytest -q -s --large e2e/test_largest_account.py

# On demand: the property tests far past proptest's default 256 cases.
PROPTEST_CASES ?= 20000
test-properties:
	PROPTEST_CASES=$(PROPTEST_CASES) cargo test -p agent-core --lib properties

# On demand: the fault soak of `make test` (3 rounds) for longer; SOAK_SEED=n replays a run.
SOAK_ROUNDS ?= 20
soak: setup
	cd tests && SOAK_ROUNDS=$(SOAK_ROUNDS) ../$(PYTHON) -m pytest -q -s e2e/test_reliability.py -k faults

# On demand: the benchmarks on release builds of the functions for this host (the arm64 deployables are only
# zipped: they cannot run here); `make test` runs a 10-API smoke of them on the debug build.
BENCH_SIZES ?= 100,600,2520
# Accounts x regions of the fan-out's benchmark.
BENCH_TARGETS ?= 100x3
bench: setup lambdas
	$(PYTHON) tests/stack/benchmarks.py --release --sizes $(BENCH_SIZES) --targets $(BENCH_TARGETS) --push --write docs/benchmarks.md

# The deployable functions: target/lambda/<name>/bootstrap, built once, reused by synth and deploy;
# and the settings checker the CDK app runs at synth (target/debug/check-settings, for this host).
lambdas: $(VENV)/.installed
	@rustup target list --installed | grep -qx $(LAMBDA_TARGET) || rustup target add $(LAMBDA_TARGET)
	cargo lambda build --release --arm64 --quiet --workspace --exclude agent-settings
	cargo build --quiet -p agent-settings --bin check-settings

# Types, template assertions and cdk-nag (node --test), then an offline synth linted by cfn-lint. The default
# synth has push mode on, so that tests/iam checks its grants (trail detection) too.
cdk-check: setup lambdas
	cd cdk && PATH=$(CDK_BIN):$$PATH tsc --noEmit
	cd cdk && PATH=$(CDK_BIN):$$PATH node --test test/*.test.ts
	cd cdk && PATH=$(CDK_BIN):$$PATH cdk synth --quiet --no-notices $(SYNTH_CONTEXT) -c pushMode=true > /dev/null
	cd cdk && PATH=$(CDK_BIN):$$PATH cdk synth --quiet --no-notices $(SYNTH_CONTEXT) $(TARGETS_CONTEXT) -o cdk.out.targets > /dev/null
	$(VENV)/bin/cfn-lint cdk/cdk.out/ApiGatewayApicpAgent.template.json cdk/cdk.out.targets/ApiGatewayApicpAgent.template.json -i W3005

deploy: setup lambdas
	cd cdk && PATH=$(CDK_BIN):$$PATH cdk deploy --no-notices $(CONTEXT)

clean:
	rm -rf .local $(STACK)/node_modules cdk/node_modules cdk/cdk.out cdk/cdk.out.targets
