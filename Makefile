# Sovereign developer commands. `make up` and `make test` install what they need first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# GPU servers the demo fleet simulates (replayed H100 readings); 0 for none.
SIMULATED_NODES ?= 50

.PHONY: install up test test-kube kube-apiserver lint format clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (found " + sys.version.split()[0] + "); set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	@$(BIN)/sovctl preflight
	@$(BIN)/sovctl db upgrade
	@$(BIN)/sovctl demo seed
	$(BIN)/sovctl up --simulate $(SIMULATED_NODES)

test: $(STAMP)
	@$(BIN)/sovctl preflight
	$(BIN)/pytest $(PYTEST_ARGS)

# A real kube-apiserver (Debian's v1.20.2 source, etcd-server), built once into
# ~/.cache/sovereign/kube for the e2e tier in tests/kube; `make test` builds it too when
# missing, and skips that tier with one line where it cannot (no root, no apt-get).
kube-apiserver:
	@bash tests/kube/build-kube-apiserver.sh

test-kube: $(STAMP) kube-apiserver
	$(BIN)/pytest tests/kube $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
