"""The Search page in a real Chromium, on a store holding one small finished study (made by
`python -m core search`: the tiny mlp on real MNIST, three knobs, the median pruner so that five
trials finish and the importance shows): its charts draw as SVG inside the page, it comes back
as it was after another page, its best trial opens in Compare with exactly that run picked, and
a picture of it at 1400x900 (scripts' convention: screenshot-search.png, 1400 px wide, the whole page)."""
from __future__ import annotations

from urllib.parse import urlparse

import pytest

from core.store.runs import load_run
from dashboard.widgets import run_label
from scripts import harness
from tests.helpers import DATA, run_cli

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

STUDY = "shot"
SIZE = (1400, 900)

# Each chart on the page: its box, its SVG's box and text, and its legends' boxes.
READ_CHARTS = """() => [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')].map(c => {
    const svg = c.querySelector('svg');
    const box = r => [r.left, r.right, r.top, r.bottom];
    return {box: box(c.getBoundingClientRect()), svg: svg ? box(svg.getBoundingClientRect()) : null,
            text: svg ? svg.textContent : '',
            legends: svg ? [...svg.querySelectorAll('g.role-legend')].map(l => box(l.getBoundingClientRect())) : []};
})"""


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("search-browser") / "checkpoints"
    code, out, err = run_cli("--checkpoints", str(folder), "--data", str(DATA), "search", "--arch", "mlp",
                             "--param", "lr=0.01:1:log", "--param", "batch_size=32,128,512",
                             "--param", "momentum=0:0.95", "--trials", "6", "--epochs", "3",
                             "--train-limit", "1000", "--val-size", "500", "--pruner", "median", "--device", "cpu",
                             "--study", STUDY, "--quiet", "--json")
    assert code == 0, out + err
    return folder


@pytest.fixture(scope="module")
def server(root, dashboard_on):
    with dashboard_on(root) as running:
        yield running


def best_run(root):
    from core.training import search
    best = search.summary(STUDY, root)["best"]
    assert best is not None
    return load_run(best["run_id"], root)


def open_tab(browser, url: str):
    tab = browser.new_page(viewport={"width": SIZE[0], "height": SIZE[1]})
    tab.set_default_timeout(60_000)
    harness.open_page(tab, url, f"search?study={STUDY}", timeout=120)
    harness.assert_no_exception(tab)
    return tab


def drawn_charts(tab) -> list[dict]:
    """The page's charts once all four have drawn their SVG."""
    tab.wait_for_function("""() => [...document.querySelectorAll('[data-testid="stVegaLiteChart"] svg')]
        .filter(s => s.querySelector('g.mark-line, g.mark-rect, g.mark-symbol')).length >= 4""", timeout=60_000)
    return tab.evaluate(READ_CHARTS)


def assert_inside(tab, charts: list[dict]) -> None:
    page_width = tab.evaluate("() => document.documentElement.scrollWidth")
    assert page_width <= SIZE[0], f"the page scrolls sideways: {page_width} px"
    for chart in charts:
        left, right, top, bottom = chart["box"]
        assert chart["svg"] is not None, "a chart is not drawn as SVG"
        s_left, s_right, s_top, s_bottom = chart["svg"]
        assert right <= SIZE[0] + 0.5 and s_right <= right + 0.5 and s_left >= left - 0.5, \
            f"a chart runs out of its box: {chart['svg']} in {chart['box']}"
        for legend in chart["legends"]:
            l_left, l_right, l_top, l_bottom = legend
            assert left - 0.5 <= l_left and l_right <= right + 0.5 and top - 0.5 <= l_top \
                and l_bottom <= bottom + 0.5, f"a legend at {legend} runs out of its chart at {chart['box']}"


def test_the_study_draws_its_charts_comes_back_and_opens_its_best_in_compare(browser, server, root, tmp_path):
    tab = open_tab(browser, server.url)
    try:
        main = tab.locator('[data-testid="stMain"]')
        charts = drawn_charts(tab)
        assert len(charts) == 4, charts
        assert_inside(tab, charts)
        text = main.inner_text()
        assert "Best so far: trial #" in text and "Which knob mattered most" in text
        for knob in ("lr", "batch_size", "momentum"):  # the parallel coordinates' axes, the importance's bars
            assert sum(knob in c["text"] for c in charts) >= 2, knob

        shot = tmp_path / "screenshot-search.png"
        harness.full_screenshot(tab, shot)
        assert shot.stat().st_size > 50_000
        print(f"\nscreenshot: {shot}")

        tab.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Compare").click()
        tab.wait_for_url(lambda url: urlparse(url).path == "/compare")
        harness.wait_for_app(tab)
        tab.go_back()  # and back to the study, as it was
        tab.wait_for_url(lambda url: urlparse(url).path == "/search")
        harness.wait_for_app(tab)
        harness.assert_no_exception(tab)
        assert len(drawn_charts(tab)) == 4
        assert tab.get_by_role("combobox", name="Study").input_value() == STUDY

        main.get_by_role("button", name="Open the best in Compare").click()
        tab.wait_for_url(lambda url: urlparse(url).path == "/compare")
        harness.wait_for_app(tab)
        harness.assert_no_exception(tab)
        picker = tab.locator('[data-testid="stMultiSelect"]').filter(has_text="Runs to compare")
        picker.locator("[data-tag]").first.wait_for()
        chips = picker.locator("[data-tag]").evaluate_all("tags => tags.map(t => t.getAttribute('aria-label'))")
        assert chips == [run_label(best_run(root))]
    finally:
        tab.close()
