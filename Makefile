# The README's two commands: `make demo` (set up, run the main job on the embedded sample) and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# apt needs root; use sudo when we are not root and it exists.
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo)
DEMO_OUT ?= out/demo

BROWSER_ASSETS := tests/browser/node_modules/.package-lock.json

.PHONY: demo app worker test check install system-deps lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/terraseg run --task cloud --aoi core/sample/aoi.geojson --start 2015-07-01 --end 2015-09-30 \
		--source sample --out $(DEMO_OUT)
	@echo "Outputs of the demo are in $(abspath $(DEMO_OUT))/ (classes.tif, confidence.tif, scene.tif, preview.png, stats.json, stats.csv, date-YYYY-MM-DD.tif per date, run.json)"

# The web app (needs Redis and at least one `make worker`): http://localhost:8501. It listens on this machine
# only; behind a reverse proxy on another host, `make app APP_ADDRESS=0.0.0.0` (see the README).
APP_ADDRESS ?= 127.0.0.1
app: install
	$(BIN)/streamlit run app.py --server.address $(APP_ADDRESS)

worker: install
	$(BIN)/terraseg worker

# Tests start their own redis-server and drive Debian's Chromium; install them (and npm) when missing.
system-deps:
	@if ! command -v redis-server >/dev/null || [ ! -x /usr/bin/chromium ] || ! command -v npm >/dev/null; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq redis-server chromium \
			$$(command -v npm >/dev/null || echo nodejs npm) >/dev/null; \
	fi

# Leaflet and Leaflet.draw for the offline browser test (served in place of the CDN files folium links to).
$(BROWSER_ASSETS): tests/browser/package-lock.json | system-deps
	cd tests/browser && npm ci --no-audit --no-fund --silent

# Two pytest processes (the machines have 2 cores; the job tests mostly wait on workers and servers); whole files
# go to one process, so a module's shared fixtures (one demo run, one DHuS or STAC server) are built once.
test: install system-deps $(BROWSER_ASSETS)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir $(VENV)/site
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q -n 2 --dist loadfile --durations=15

# The inner loop (under 2 minutes): lint, types, and the unit tests of core/ and models/ without the slow ones
# (real jobs, model runs and recorded servers: `pytestmark = pytest.mark.slow`) or a browser.
check: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q -n 2 -m "not slow and not browser" -p no:cacheprovider tests/core tests/models

bench: install
	$(BIN)/python bench/pipeline.py

clean:
	rm -rf $(VENV) out
