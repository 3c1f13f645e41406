# One-command run and test on a fresh machine (only Python 3.11 and make needed).
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

TSCLIENT := clients/typescript
CHROMIUM := /usr/bin/chromium
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test test-postgres unit bench install clean openapi browser snapshots docs panel

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## System packages the tests use: Debian's Chromium (Playwright drives it; no browser
## download), Xvfb (the idle sensor's X11 user-idle test) and systemd's systemd-analyze
## (the generated service units are verified; systemd need not run), HAProxy and Redis (the
## local cluster of `bgtasks cluster up` and tests/e2e/test_cluster.py).
SYSPKGS := chromium xvfb systemd haproxy redis-server
SYSDEPS := $(CHROMIUM) /usr/bin/Xvfb /usr/bin/systemd-analyze /usr/sbin/haproxy /usr/bin/redis-server
$(SYSDEPS):
	$(SUDO) apt-get install -y --no-install-recommends $(SYSPKGS) || \
	  ($(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends $(SYSPKGS))

browser: $(SYSDEPS)

## The TypeScript client's build and test tools (npm registry).
$(TSCLIENT)/node_modules/.package-lock.json: $(TSCLIENT)/package-lock.json
	cd $(TSCLIENT) && npm ci --no-audit --no-fund

## Start the embedded stack: Prefect server + UI, the background-tasks worker.
run: $(STAMP)
	$(BIN)/bgtasks up $(ARGS)

## The whole suite: unit, integration (real Prefect server), e2e (bgtasks up).
## Then the tests marked `postgresql` (where the database matters) again with the Prefect
## server and bgtasks' tables on PostgreSQL (127.0.0.1:5432; the run creates and drops its
## own database). --durations prints the slowest tests of each pass.
test: $(STAMP) $(SYSDEPS) $(TSCLIENT)/node_modules/.package-lock.json docs
	$(BIN)/python -m pytest -p no:cacheprovider -ra --durations=20 $(PYTEST_ARGS)
	BGTASKS_TEST_DATABASE=postgresql $(BIN)/python -m pytest -p no:cacheprovider -ra --durations=20 tests/integration tests/security $(PYTEST_ARGS)

test-postgres: $(STAMP) $(SYSDEPS) $(TSCLIENT)/node_modules/.package-lock.json
	BGTASKS_TEST_DATABASE=postgresql $(BIN)/python -m pytest -p no:cacheprovider -ra --durations=20 tests/integration tests/security $(PYTEST_ARGS)

## The documentation site (MkDocs, Material theme) into build/site; --strict: a broken
## link or a page missing from the navigation fails the build (and `make test`).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir build/site

unit: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider tests/unit

## Benchmarks that print numbers (docs/performance.md, docs/scaling.md); about 3 hours with the
## 30-minute soak, the 10-minute cluster soak and the hour of bench/at_rest.py.
bench: $(STAMP) $(SYSDEPS)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/worker.py
	$(BIN)/python bench/worker.py --postgres postgresql://postgres@127.0.0.1:5432
	$(BIN)/python bench/worker.py --profile --top 25
	$(BIN)/python bench/worker.py --profile --top 25 --postgres postgresql://postgres@127.0.0.1:5432
	$(BIN)/python bench/at_rest.py --minutes 60
	$(BIN)/python bench/triggers.py
	$(BIN)/python bench/triggers.py --postgres postgresql://postgres@127.0.0.1:5432 --dirs 0 --idle-s 1
	$(BIN)/python bench/sensors.py
	$(BIN)/python bench/push.py
	$(BIN)/python bench/fleet.py
	$(BIN)/python bench/crash_detection.py
	$(BIN)/python bench/workers.py --postgres postgresql://postgres@127.0.0.1:5432
	$(BIN)/python bench/restart.py
	$(BIN)/python bench/cluster.py --runs 20 --burst 60
	$(BIN)/python bench/soak.py --cluster --minutes 10 --out build/bench/soak-cluster.png
	$(BIN)/python bench/soak.py --minutes 30

## Regenerate the service-file snapshots after a deliberate change (review the diff).
snapshots: $(STAMP)
	$(BIN)/python -m tests.update_snapshots

## Rebuild the task panel's script (bgtasks/api/panel/static/panel.js, committed so the
## wheel needs no Node.js) from clients/typescript/panel/; a test checks it is current.
panel: $(TSCLIENT)/node_modules/.package-lock.json
	cd $(TSCLIENT) && npm run panel

## Regenerate the committed OpenAPI document of the REST API.
openapi: $(STAMP)
	$(BIN)/python -c "import json; from bgtasks.api import create_app; from bgtasks.settings import load_settings; print(json.dumps(create_app(load_settings()).openapi(), indent=2, sort_keys=True))" > docs/openapi.json

clean:
	rm -rf $(VENV) build *.egg-info $(TSCLIENT)/node_modules $(TSCLIENT)/dist
