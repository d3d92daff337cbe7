# Two commands do all the set-up on an empty machine:
#   make run   - create .venv, install packetron (runtime dependencies only), start the example server
#   make test  - create .venv, install with the test extra, prepare peers, run the suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 3000
# One stamp per kind of install: a runtime install must not count as a test install
# (it lacks pytest), and either is redone when the package metadata changes.
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test bench clean prepare

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(RUN_STAMP): setup.cfg pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

$(TEST_STAMP): setup.cfg pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

run: $(RUN_STAMP)
	$(PY) examples/app.py --host $(HOST) --port $(PORT)

# tests/prepare.sh installs the peers some tests talk to (Node packages, redis-server,
# chromium) with the project's own files, so a fresh clone needs nothing by hand.
prepare: $(TEST_STAMP)
	bash tests/prepare.sh

test: prepare
	$(PY) -m pytest -q

bench: $(TEST_STAMP)
	$(PY) bench/http.py

# The API reference: HTML from the docstrings of the public modules, into docs/api/
# (git-ignored). tests/test_docs.py builds the same list and fails on any pdoc warning.
DOCS_STAMP := $(VENV)/.installed-docs
API_MODULES := packetron packetron.errors packetron.flags packetron.options packetron.status \
	packetron.http packetron.http.sse packetron.http.channels packetron.plugins \
	packetron.testing packetron.net packetron.globaldata packetron.server packetron.cli

$(DOCS_STAMP): setup.cfg pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[docs]'
	touch $@

.PHONY: docs
docs: $(DOCS_STAMP)
	rm -rf docs/api
	$(PY) -m pdoc --docformat google --output-directory docs/api $(API_MODULES)
	@echo "API reference: docs/api/index.html"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
