# One-command run and test on a fresh machine (only Python 3.11 and make needed).
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test unit bench install clean openapi

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## Start the embedded stack: Prefect server + UI, the background-tasks worker.
run: $(STAMP)
	$(BIN)/bgtasks up

## The whole suite: unit, integration (real Prefect server), e2e (bgtasks up).
test: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider -ra $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider tests/unit

## Benchmarks that print numbers (README "Performance"); about 15 minutes.
bench: $(STAMP)
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/worker.py
	$(BIN)/python bench/worker.py --postgres postgresql://postgres@127.0.0.1:5432

## Regenerate the committed OpenAPI document of the REST API.
openapi: $(STAMP)
	$(BIN)/python -c "import json; from bgtasks.api import create_app; from bgtasks.settings import load_settings; print(json.dumps(create_app(load_settings()).openapi(), indent=2, sort_keys=True))" > docs/openapi.json

clean:
	rm -rf $(VENV) build *.egg-info
