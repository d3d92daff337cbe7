# Two commands do all the set-up on an empty machine:
#   make run   - create .venv, install, start the example server
#   make test  - create .venv, install with test extras, prepare peers, run the suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 3000

.PHONY: run test bench clean prepare

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

run: $(VENV)/.installed
	$(PY) examples/app.py --host $(HOST) --port $(PORT)

# tests/prepare.sh installs the peers some tests talk to (Node packages, redis-server,
# chromium) with the project's own files, so a fresh clone needs nothing by hand.
prepare: $(VENV)/.installed
	bash tests/prepare.sh

test: prepare
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) bench/http.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
