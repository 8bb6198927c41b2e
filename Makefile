# MicroClaw developer and user entry points. The README's two commands are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock | sha1sum | cut -c1-12)

.PHONY: run test install lint lock bench smoke flower clean

## Exact versions from requirements.lock (regenerate with `make lock`), then MicroClaw itself.
$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit("MicroClaw needs Python 3.11 or newer" if sys.version_info < (3, 11) else 0)'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

## Install, then run the host with all its workers on the embedded SQLite broker (Ctrl-C stops).
## On a terminal the processes log readable lines (honcho gives them pipes, so `make run` says so
## with MC_CONSOLE_TTY=1); logging.format = "json" in settings.toml still forces JSON.
run: install
	@mkdir -p data
	@bash scripts/ensure-sandbox-image.sh $(BIN)/python
	@echo "Starting MicroClaw. In another terminal: $(BIN)/microclaw chat"
	@if [ -t 2 ]; then export MC_CONSOLE_TTY=1; fi; \
		PATH="$(abspath $(BIN)):$$PATH" $(BIN)/honcho start

## Install everything the tests need (Python packages, Debian packages, the sandbox test image), run them all.
test: install
	bash scripts/install-test-deps.sh
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -n 2 --dist loadgroup -p no:cacheprovider

## Re-pin requirements.lock from pyproject.toml (the runtime and test dependencies).
lock: install
	$(BIN)/python -m pip install --quiet "pip-tools>=7.4"
	$(BIN)/pip-compile --quiet --extra test --strip-extras --no-emit-index-url --no-emit-find-links \
		-o requirements.lock pyproject.toml

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

## Celery's web monitor on http://127.0.0.1:5555 (loopback only), basic auth "admin" with a
## generated password kept in data/flower-auth (mode 0600; delete it to get a new one).
flower: install
	@mkdir -p data && umask 077 && test -s data/flower-auth || \
		echo "admin:$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(24))')" > data/flower-auth
	@echo "flower: http://127.0.0.1:$${FLOWER_PORT:-5555}  (user/password in data/flower-auth)"
	FLOWER_BASIC_AUTH="$$(cat data/flower-auth)" $(BIN)/celery -A workers.app flower \
		--address=127.0.0.1 --port=$${FLOWER_PORT:-5555}

smoke: install
	$(BIN)/microclaw-host smoke

bench: install
	bash scripts/install-test-deps.sh
	$(BIN)/python bench/pipeline.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
