# MNIST Lab. `make run` starts the dashboard (`make dev`: reloading as its source changes), `make test`
# runs every test, `make test-fast` the fast tier (no slow, browser or ray marks: run it after each
# edit), `make docs` serves the documentation on http://127.0.0.1:8000 (`make docs-build`: into
# site/); each installs what is missing first.
# VENV may point at a shared folder (CI reuses one per requirements hash).
PYTHON ?= python3
VENV ?= .venv
PORT ?= 8501
ADDRESS ?= 127.0.0.1
PY := $(VENV)/bin/python
# A stamp file in the venv marks each install done. Its name hashes what the install depends on:
# the requirements, pyproject.toml and this checkout's path (the editable install points at
# this folder; a venv shared by several clones, as CI's is, must be re-pointed at this one).
REQ_HASH := $(shell { cat requirements.txt pyproject.toml; echo '$(CURDIR)'; } | sha256sum | cut -c1-12)
DEV_HASH := $(shell { cat requirements.txt requirements-dev.txt pyproject.toml; echo '$(CURDIR)'; } | sha256sum | cut -c1-12)

.PHONY: run dev listen-check test test-fast install install-dev data browser bench screenshots docs docs-build clean-venv

# Listening beyond this machine (ADDRESS=0.0.0.0) needs an owner password first (`python -m core
# owner`): listen-check refuses, in one line, before anything else is done.
run: install listen-check data
	$(PY) -m streamlit run dashboard/app.py --server.address $(ADDRESS) --server.port $(PORT) \
		--browser.gatherUsageStats false

# As `run`, and the app reloads when its source changes (the watcher costs each rerun 10-20 ms:
# .streamlit/config.toml turns it off for `run`).
dev: install listen-check data
	$(PY) -m streamlit run dashboard/app.py --server.address $(ADDRESS) --server.port $(PORT) \
		--browser.gatherUsageStats false --server.fileWatcherType auto --server.runOnSave true

listen-check: install
	@$(PY) -m core owner --check-listen '$(ADDRESS)'

# JOBS pytest-xdist workers (one per core; JOBS=0 runs in this process, as a debugger wants).
# Tests that share one dashboard and Chromium, or a Ray cluster, stay on one worker (tests/conftest.py).
JOBS ?= 2
PYTEST := $(PY) -m pytest -q -p no:cacheprovider -n $(JOBS) --dist loadgroup

test: install-dev data browser
	$(PYTEST)

test-fast: install-dev data
	$(PYTEST) -m "not slow and not browser and not ray"

install: $(VENV)/.installed-$(REQ_HASH)
install-dev: $(VENV)/.installed-dev-$(DEV_HASH)

# The requirements, then this project, editable: its packages `core` and `dashboard` import from
# this folder wherever Python starts (no sys.path edits), and `mnist-lab` is on $(VENV)/bin.
# Older stamps go: they may describe an install that now points at another clone.
$(VENV)/.installed-$(REQ_HASH): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check -e .
	@rm -f $(VENV)/.installed-*
	@touch $@

$(VENV)/.installed-dev-$(DEV_HASH): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check -e .
	@rm -f $(VENV)/.installed-*
	@touch $@ $(VENV)/.installed-$(REQ_HASH)

# MNIST into ./data (or $MNIST_LAB_DATA), and the exposure images drawn from it once (some 15 s);
# quick when the verified files are already there.
data:
	@$(PY) -m core fetch --exposure

# Chromium from Debian's packages, for the end-to-end browser tests.
browser:
	@command -v chromium >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

bench: install data
	$(PY) -m core bench

screenshots: install-dev data browser
	$(PY) -m scripts.screenshots

# The docs site (mkdocs.yml; the pages are docs/*.md). `serve` rebuilds as the pages change.
# NO_MKDOCS_2_WARNING: mkdocs-material's notice about MkDocs 2.0, printed on every build.
docs: install-dev
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve -a 127.0.0.1:8000

docs-build: install-dev
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

clean-venv:
	rm -rf $(VENV)
