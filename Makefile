# One-command run and test on a fresh machine (only Python 3.11 and make needed).
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test unit bench install clean

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

bench: $(STAMP)
	$(BIN)/python bench/startup.py

clean:
	rm -rf $(VENV) build *.egg-info
