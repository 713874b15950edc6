# ABAXUS — one Makefile for the dev loop. `make run` and `make test` are the quick start.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run run-regions test system-deps lint format migrate unit integration contract e2e fuzz bench-ingest bench-usage bench-calculate bench-invoice-run bench-console bench-soak bench-contracts bench-corrections bench-regions manifests clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

## run: the whole system on http://localhost:$${PORT:-8080} (embedded PostgreSQL unless DATABASE_URL is set)
run: $(STAMP)
	$(BIN)/abaxus dev

## run-regions: a central on $${PORT:-8080} and regions eu-west-1, us-east-1 on the next ports,
## each on its own embedded PostgreSQL, replicating (docs/regions.md)
run-regions: $(STAMP)
	$(BIN)/abaxus dev --regions $${REGIONS:-eu-west-1,us-east-1}

## system-deps: what the suite needs from the system: Chromium (the console's browser tests)
## and Pango (invoice PDFs); installed with apt-get when missing (root, Debian)
system-deps:
	@command -v chromium >/dev/null 2>&1 && ldconfig -p | grep -q libpangoft2 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      chromium libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core >/dev/null; \
	  else echo "install chromium and libpango-1.0-0 (Debian: apt-get install chromium libpango-1.0-0 libpangoft2-1.0-0)"; exit 1; fi; }

## test: lint, then the whole suite against a real (embedded) PostgreSQL
test: lint system-deps
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

migrate: $(STAMP)
	$(BIN)/abaxus migrate

unit: $(STAMP)
	$(BIN)/pytest tests/unit
integration: $(STAMP)
	$(BIN)/pytest tests/integration
contract: $(STAMP)
	$(BIN)/pytest tests/contract
e2e: $(STAMP)
	$(BIN)/pytest tests/e2e

## fuzz: schemathesis against the dev server with more examples than the suite's run
## (ABAXUS_FUZZ_EXAMPLES, default 40; ABAXUS_FUZZ_SEED to explore another seed)
fuzz: $(STAMP)
	ABAXUS_FUZZ_EXAMPLES=$${ABAXUS_FUZZ_EXAMPLES:-40} $(BIN)/pytest -m fuzz -s tests/contract/test_schemathesis.py

## bench-ingest: events/s through the batch endpoint, single-event latency, COPY baseline
bench-ingest: $(STAMP)
	$(BIN)/python bench/ingest.py

## bench-usage: 10M events; real-time summary latency at 1M and 10M; exact vs bare SQL
bench-usage: $(STAMP)
	$(BIN)/python bench/usage.py

## bench-calculate: 5 charges over 1M events per metric, against the exact scans it needs
bench-calculate: $(STAMP)
	$(BIN)/python bench/calculate.py

## bench-invoice-run: one bulk run for 500 customers (5M events) through the CloudEvents pipeline
bench-invoice-run: $(STAMP)
	$(BIN)/python bench/invoice_run.py

## bench-console: GET /v1/stats and the overview page with 10M events and 1,000 subscriptions
bench-console: $(STAMP)
	$(BIN)/python bench/console.py

## bench-soak: a steady ingest load with short retention: table sizes and memory over time
bench-soak: $(STAMP)
	$(BIN)/python bench/soak.py

## bench-contracts: batch ingestion with a 6-rule data contract against the same without one
bench-contracts: $(STAMP)
	$(BIN)/python bench/contracts.py

## bench-corrections: a replace of 1M events by 1M (preview, apply) and the exact scan after it
bench-corrections: $(STAMP)
	$(BIN)/python bench/corrections.py

## bench-regions: two regions ingesting 20,000 events/s in total; replication lag and fold at the central
bench-regions: $(STAMP)
	$(BIN)/python bench/regions.py

## manifests: render knative/ with kustomize and validate it strictly against the Knative CRDs
manifests: $(STAMP)
	kubectl kustomize knative/ > rendered.yaml
	$(BIN)/python ../shared/tools/crd_validate.py ../shared/knative-crds rendered.yaml

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache rendered.yaml
