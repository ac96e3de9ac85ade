# The two commands a newcomer runs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup browser test demo run lint clean

setup: $(STAMP) browser

# torch is installed first and pinned: on this machine torch==2.13.0 resolves to a local CPU
# build; an unpinned torch would pull several GB of CUDA packages.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[ml,service,test,trackers]" --config-settings editable_mode=compat
	touch $(STAMP)

# The dashboard's browser tests drive Debian's chromium with Playwright (Playwright's own browser
# download is not needed): install it when missing, with sudo unless root (CI runs as root).
browser:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

# pytest exits 5 when it collected no tests: that is a broken suite, not a pass.
test: setup
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

# One real Diff-Tuning job through the REST API of the embedded service.
demo: $(STAMP)
	$(VENV)/bin/difftune demo --out .cache/demo

# The service on this machine with no servers: SQLite, a SQLite broker, a local store.
run: $(STAMP)
	$(VENV)/bin/difftune serve

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf .cache .pytest_cache
