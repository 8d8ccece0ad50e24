"""Fixtures for the browser tests: seeded runs, the real dashboard, Debian's Chromium.

One server and one browser serve the whole session; each test gets a fresh page. The
server's runs folder is a temporary one, seeded with two tiny real runs before it starts.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

import pytest

from scripts import harness

# Two tiny real runs (about 40 s on 2 CPU cores, trained side by side): enough for every page
# to have something to show and for the Sketch page to have two models to ask.
SEED_RUNS = [
    ["--arch", "mlp", "--epochs", "1", "--train-limit", "3000", "--name", "seed-mlp"],
    ["--arch", "lenet", "--epochs", "1", "--train-limit", "3000", "--name", "seed-lenet"],
]


@pytest.fixture(scope="session")
def chromium_path() -> str:
    # Fail, not skip: CI installs Chromium, so its absence is a broken setup, not an option.
    if not os.access(harness.CHROMIUM, os.X_OK):
        pytest.fail(f"{harness.CHROMIUM} is missing: the e2e tests need Debian's Chromium "
                    "(`apt-get install -y chromium chromium-driver`, or `make browser`).", pytrace=False)
    return harness.CHROMIUM


@pytest.fixture(scope="session")
def seeded_checkpoints(tmp_path_factory):
    """A runs folder holding two finished tiny runs (mlp and lenet), trained before the server starts."""
    folder = tmp_path_factory.mktemp("checkpoints")
    if not (harness.REPO / "data" / "MNIST" / "raw").is_dir():
        pytest.fail(f"MNIST is missing from {harness.REPO / 'data'}: run `python -m core fetch` first.",
                    pytrace=False)
    started = time.monotonic()
    try:
        harness.seed_runs(folder, SEED_RUNS)
    except harness.HarnessError as exc:
        pytest.fail(f"seeding the runs failed:\n{exc}", pytrace=False)
    print(f"\nseeded {len(SEED_RUNS)} runs in {time.monotonic() - started:.0f} s")
    return folder


@pytest.fixture(scope="session")
def dashboard_on(tmp_path_factory):
    """`with dashboard_on(root) as server:` the real dashboard, `streamlit run dashboard/app.py`, on
    the runs folder `root` and a free port of 127.0.0.1, stopped when the block ends."""
    @contextlib.contextmanager
    def start(root, **options):
        log = tmp_path_factory.mktemp("streamlit") / "server.log"
        try:
            running = harness.start_server(root, log=log, timeout=60, **options)
        except harness.HarnessError as exc:
            pytest.fail(str(exc), pytrace=False)
        try:
            yield running
        finally:
            running.stop()
    return start


@pytest.fixture(scope="session")
def server(seeded_checkpoints, dashboard_on):
    """The dashboard on the seeded runs, for the whole session."""
    with dashboard_on(seeded_checkpoints, stop_jobs=True) as running:
        yield running


@pytest.fixture(scope="session")
def base_url(server) -> str:
    return server.url


@pytest.fixture(scope="session")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    try:
        chromium = harness.launch_browser(playwright)
    except Exception:
        playwright.stop()
        raise
    yield chromium
    chromium.close()
    playwright.stop()


@pytest.fixture
def page(browser, server):
    """A fresh tab, 1400x1000."""
    tab = harness.new_page(browser)
    yield tab
    tab.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failed test, add the server's last output and a screenshot of its tab to the report."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    server_ = item.funcargs.get("server")
    if server_ is not None:
        report.sections.append(("streamlit server output", server_.output()))
    tab = item.funcargs.get("page")
    if tab is not None and not tab.is_closed():
        shot = Path(tempfile.gettempdir()) / f"mnist-lab-e2e-failure-{item.name}.png"
        try:
            tab.screenshot(path=str(shot), full_page=True)
            report.sections.append(("browser", f"screenshot of the tab at {tab.url}: {shot}"))
        except Exception:  # a screenshot is a courtesy; never hide the real failure
            pass


# Helpers as fixtures, so tests read `wait_for_app(page)` without importing the harness.
@pytest.fixture
def wait_for_app():
    return harness.wait_for_app


@pytest.fixture
def assert_no_exception():
    return harness.assert_no_exception
