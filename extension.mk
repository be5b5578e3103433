# The browser extension: package, JavaScript unit tests, browser end-to-end tests.
# Included by the top-level Makefile (`include extension.mk`).

PYTHON ?= .venv/bin/python
NODE ?= node
CHROMIUM ?= /usr/bin/chromium

EXT_FILES := $(shell find extension -type f -not -path '*/tools/*')

.PHONY: extension test-js test-browser chromium

## extension: dist/vibescope-extension.zip (Load unpacked) and dist/vibescope-extension-store.zip
extension: dist/vibescope-extension.zip

dist/vibescope-extension.zip: $(EXT_FILES) extension/tools/build_zip.py
	$(PYTHON) extension/tools/build_zip.py --out dist

## test-js: unit tests of extension/lib with node's built-in runner (protocol vectors shared with Python)
test-js:
	$(NODE) --test tests/js/*.test.mjs

## chromium: Debian's Chromium for the browser tests (needs root; never `playwright install`)
chromium:
	@test -x $(CHROMIUM) || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

## test-browser: the extension and the demo page in a real Chromium against a real server + Redis
test-browser: chromium
	$(PYTHON) -m pytest -q -m browser tests/test_extension_e2e.py
