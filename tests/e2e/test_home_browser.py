"""The first page in a real Chromium, on a copy of the shipped runs: its three actions land where
they say (the URL path, and the runs or preset the landed page shows), the developer toolbar is
hidden from visitors, and after Start on Train the live card is in view.

The oracle of "the best two" is the shipped folders' own files, read by hand (tests/test_home.py)."""
from __future__ import annotations

import json
import shutil
from urllib.parse import urlparse

import pytest

from core.store.runs import load_run
from dashboard.widgets import run_label
from scripts import harness
from tests.test_home import SHIPPED, by_hand

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

DESKTOP, PHONE = {"width": 1400, "height": 900}, {"width": 390, "height": 844}
CARD = ".st-key-train_live_card"  # the Train page's live card (its container's key)


@pytest.fixture(scope="module")
def shipped_server(tmp_path_factory, dashboard_on):
    """The dashboard on a throwaway copy of the shipped runs (the Train test adds runs to it)."""
    root = tmp_path_factory.mktemp("home") / "checkpoints"
    shutil.copytree(SHIPPED, root, ignore=shutil.ignore_patterns(".locks"))
    with dashboard_on(root, stop_jobs=True) as running:
        yield running


@pytest.fixture
def tab(browser):
    """A fresh tab at 1400x900."""
    page = browser.new_page(viewport=DESKTOP)
    page.set_default_timeout(30_000)
    yield page
    page.close()


def heading(page) -> str:
    return page.locator('[data-testid="stMain"] h1').first.inner_text().strip()


def landed(page, path: str, title: str) -> None:
    """The click's rerun is over, on `path`, showing the page `title`, without an error."""
    page.wait_for_url(lambda url: urlparse(url).path == path)
    harness.wait_for_app(page)
    harness.assert_no_exception(page)
    assert heading(page) == title


def test_the_three_things_to_try_land_where_they_say(tab, shipped_server):
    url = shipped_server.url
    best_two = by_hand(SHIPPED)[:2]
    for visit in range(2):  # and once more, after the pages they opened
        harness.open_page(tab, url, "")
        harness.assert_no_exception(tab)
        assert urlparse(tab.url).path == "/" and heading(tab) == "MNIST Lab"
        main = tab.locator('[data-testid="stMain"]')

        main.get_by_role("link", name="Draw a digit").click()
        landed(tab, "/sketch", "Sketch")
        assert tab.locator("canvas.sketch-pad").count() == 1

        harness.open_page(tab, url, "")
        main.get_by_role("button", name="Compare the best two").click()
        landed(tab, "/compare", "Compare")
        picker = tab.locator('[data-testid="stMultiSelect"]').filter(has_text="Runs to compare")
        chips = picker.locator("[data-tag]").evaluate_all("tags => tags.map(t => t.getAttribute('aria-label'))")
        assert chips == [run_label(load_run(i, SHIPPED)) for i in best_two], chips
        assert "labnet reference is right on" in tab.locator('[data-testid="stMain"]').inner_text()

        harness.open_page(tab, url, "")
        main.get_by_role("link", name="Train a small model").click()
        landed(tab, "/train", "Train")
        assert tab.get_by_role("combobox", name="Architecture").input_value() == "lenet"
        assert tab.get_by_label("Epochs", exact=True).input_value() == "2"
        assert tab.get_by_label("Training-set limit (0 = all)", exact=True).input_value() == "0"
        assert tab.get_by_label("Run name", exact=True).input_value() == "my first lenet"


def toolbar_shown(page) -> dict[str, int]:
    return {"deploy": page.locator('[data-testid="stAppDeployButton"]').count(),
            "menu": page.locator('[data-testid="stMainMenu"]').count()}


def test_the_developer_toolbar_is_hidden(tab, shipped_server, dashboard_on, monkeypatch, tmp_path):
    for path in ("", "train", "compare"):
        harness.open_page(tab, shipped_server.url, path)
        assert toolbar_shown(tab) == {"deploy": 0, "menu": 0}, path
        assert tab.get_by_role("button", name="Deploy").count() == 0
    # The same app with the toolbar's developer mode (an environment setting beats the config
    # file) shows both: what is looked for above is there to be found.
    monkeypatch.setenv("STREAMLIT_CLIENT_TOOLBAR_MODE", "developer")
    (tmp_path / "runs").mkdir()
    with dashboard_on(tmp_path / "runs") as developer:
        harness.open_page(tab, developer.url, "")
        tab.locator('[data-testid="stAppDeployButton"]').wait_for()
        assert toolbar_shown(tab) == {"deploy": 1, "menu": 1}


def card_box(page) -> dict:
    return page.evaluate(f"""() => {{ const r = document.querySelector('{CARD}').getBoundingClientRect();
                                     return {{top: r.top, bottom: r.bottom, height: window.innerHeight}}; }}""")


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1400x900", "390x844"])
def test_after_start_the_live_card_is_in_view(browser, shipped_server, viewport):
    page = browser.new_page(viewport=viewport)
    page.set_default_timeout(30_000)
    name = f"home-e2e-{viewport['width']}"
    try:
        harness.open_page(page, shipped_server.url, "train")
        for label, value in [("Epochs", "1"), ("Training-set limit (0 = all)", "1000"), ("Run name", name)]:
            field = page.get_by_label(label, exact=True)
            field.fill(value)
            field.press("Enter")
            harness.wait_for_app(page)
        page.get_by_text("Advanced", exact=True).click()  # the long form: Start is far below the card
        start = page.get_by_role("button", name="Start training")
        start.scroll_into_view_if_needed()
        if viewport is DESKTOP:  # beside the form, above the window now (on a phone it comes right after Start)
            before = card_box(page)
            assert before["bottom"] <= 0, f"the card is in view already: {before}"
        start.click()
        # the new run's card, and in view: its top between the top and the bottom of the window
        page.wait_for_function(f"""() => {{ const c = document.querySelector('{CARD}');
            if (!c || !c.innerText.includes('{name}')) return false;
            const r = c.getBoundingClientRect(); return r.top >= 0 && r.top < window.innerHeight; }}""",
                               timeout=120_000)
        harness.assert_no_exception(page)
        # the run ends before the next test starts one (a second job would queue behind it)
        page.wait_for_function(f"""() => {{ const c = document.querySelector('{CARD}');
            return c && c.innerText.includes('{name}') && c.innerText.includes('Run finished'); }}""",
                               timeout=240_000)
    finally:
        page.close()


def test_a_new_run_of_yours_is_beside_the_best_never_the_default_subject(tab, shipped_server):
    """A finished run of the user's, newer than every shipped one: the single-run pages still open on
    the best reference run (the oracle: the shipped folders read by hand), and Compare picks it
    beside the best ones."""
    root = shipped_server.checkpoints
    best = load_run(by_hand(SHIPPED)[0], SHIPPED)
    mine = "20991231-000000-lenet-mine"  # the newest id in the store
    shutil.copytree(SHIPPED / by_hand(SHIPPED)[-1], root / mine)
    (root / mine / "reference.json").unlink()
    config = root / mine / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "name": "mine"}))
    label = run_label(load_run(mine, root))
    for path, key in (("evaluate", "eval_run"), ("mistakes", "mis_run"), ("embedding", "emb_run")):
        harness.open_page(tab, shipped_server.url, path)  # each after another page: no drift to the new run
        harness.wait_for_app(tab)
        chosen = tab.locator(f".st-key-{key} input[role='combobox']").first.input_value()
        assert run_label(best) in chosen and label not in chosen, (path, chosen)
    harness.open_page(tab, shipped_server.url, "compare")
    harness.wait_for_app(tab)
    picker = tab.locator('[data-testid="stMultiSelect"]').filter(has_text="Runs to compare")
    chips = picker.locator("[data-tag]").evaluate_all("tags => tags.map(t => t.getAttribute('aria-label'))")
    assert chips[0] == run_label(best) and label in chips, chips
