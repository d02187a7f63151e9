# Lifeline: `make run` serves on http://127.0.0.1:8000, `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8000
export PORT

.PHONY: run test install install-test browser dovecot wrk lint migration bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

run: install
	$(BIN)/flask --app app db upgrade
	$(BIN)/flask --app app serve --port $(PORT)

# Debian's Chromium drives the browser tests (Playwright never downloads a browser).
browser:
	@bash scripts/ensure-chromium.sh

# Debian's Dovecot is the inbound mail tests' IMAP server (each test run starts its own).
dovecot:
	@bash scripts/ensure-dovecot.sh

# Debian's wrk drives the HTTP benchmarks (bench/intake.py).
wrk:
	@bash scripts/ensure-wrk.sh

lint: install-test
	$(BIN)/lint-imports
	$(BIN)/ruff check .

# The suite in parallel processes (pytest-xdist), each with its own databases; more workers
# than cores, since many tests wait on sockets and subprocesses; an idle worker takes over
# tests queued for a busy one (worksteal). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 4
test: install-test browser dovecot lint
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

migration: install
	$(BIN)/python -m contacts.system.makemigration "$(m)"

# bench/*_app.py are apps a benchmark serves, bench/*_data.py the data one generates: not
# benchmarks.
bench: install wrk
	@found=0; for script in bench/*.py; do [ -e "$$script" ] || continue; \
	  case $$script in *_app.py|*_data.py|*_proxy.py) continue;; esac; found=1; \
	  echo "== $$script"; $(BIN)/python $$script || exit 1; done; \
	[ $$found = 1 ] || echo "no benchmark yet (see docs/BENCHMARKS.md)"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache tests/artifacts
