# The browser extension: package, JavaScript unit tests, browser end-to-end tests.
# Included by the top-level Makefile (`include extension.mk`).

PYTHON ?= .venv/bin/python
NODE ?= node
NPM ?= npm
CHROMIUM ?= /usr/bin/chromium

EXT_FILES := $(shell find extension -type f -not -path '*/tools/*')

.PHONY: extension test-js lint-js test-browser chromium

## extension: dist/vibescope-extension.zip (Load unpacked) and dist/vibescope-extension-store.zip
extension: dist/vibescope-extension.zip

dist/vibescope-extension.zip: $(EXT_FILES) extension/tools/build_zip.py
	$(PYTHON) extension/tools/build_zip.py --out dist

## test-js: node's built-in runner: unit tests of extension/lib, protocol vectors, Transport against a real server
test-js:
	$(NODE) --experimental-websocket --test tests/js/*.test.mjs

# eslint and its plugins, pinned in package-lock.json (dev tools only: nothing from npm goes into extension/)
node_modules/.package-lock.json: package.json package-lock.json
	$(NPM) ci --no-audit --no-fund
	touch $@

## lint-js: eslint (eslint.config.js) over extension/, server/static/ and tests/js/ (npm ci when needed)
lint-js: node_modules/.package-lock.json
	npx eslint extension server/static tests/js

## chromium: Debian's Chromium for the browser tests (needs root; never `playwright install`)
chromium:
	@test -x $(CHROMIUM) || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

## test-browser: the extension and the demo page in a real Chromium against a real server + Redis
test-browser: chromium
	$(PYTHON) -m pytest -q -m browser tests/test_extension_e2e.py
