"""Charts that read, in a real Chromium at a desktop's 1400x900 and a phone's 390x844 (issue 37):
on Compare and Robustness every run picked is an entry of the chart's own legend (read from the
rendered Vega SVG: its aria description lists the legend's values, whole), no legend runs out of
its chart nor a chart out of the page; a click on a cell of Compare's p-value grid opens that pair.

The dashboard runs on its own store: copies of the shipped recipes' reference runs, the lenet one
made the user's own and renamed (no training, so this module starts in seconds)."""
from __future__ import annotations

import contextlib
import re
import shutil

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from core.store.reference import reference_ids
from core.store.runs import list_runs, load_run, rename_run
from dashboard.widgets import run_label, unique_names
from scripts import harness
from tests.helpers import REPO, best_by_validation

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

SHIPPED = REPO / "checkpoints"
RECIPES = [i for i in reference_ids(SHIPPED) if not load_run(i, SHIPPED).config.get("sweep")]
MINE = next(i for i in RECIPES if load_run(i, SHIPPED).arch == "lenet")
VIEWPORTS = [(1400, 900), (390, 844)]

READ_CHARTS = """() => [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')].map(c => {
    const svg = c.querySelector('svg');
    const box = r => [r.left, r.right, r.top, r.bottom];
    return {box: box(c.getBoundingClientRect()), svg: svg ? box(svg.getBoundingClientRect()) : null,
            legends: svg ? [...svg.querySelectorAll('g.role-legend')].map(l => ({
                aria: l.getAttribute('aria-label') || '', box: box(l.getBoundingClientRect()),
                labels: [...l.querySelectorAll('g.role-legend-label text')].map(t => t.textContent),
                symbols: [...l.querySelectorAll('g.role-legend-symbol path')].map(p => ({
                    stroke: p.getAttribute('stroke'), dash: p.getAttribute('stroke-dasharray')}))})) : []};
})"""


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chart-runs")
    for run_id in RECIPES:
        shutil.copytree(SHIPPED / run_id, folder / run_id)
    (folder / MINE / "reference.json").unlink()  # the user's own run now
    rename_run(MINE, "my lenet", folder)
    return folder


@pytest.fixture(scope="module")
def server(root, dashboard_on):
    with dashboard_on(root) as running:
        yield running


@pytest.fixture(scope="module")
def base_url(server) -> str:
    return server.url


def open_at(browser, base_url: str, path: str, size: tuple[int, int]):
    tab = browser.new_page(viewport={"width": size[0], "height": size[1]})
    tab.set_default_timeout(60_000)
    harness.open_page(tab, base_url, path, timeout=120)
    harness.assert_no_exception(tab)
    return tab


def legend_values(aria: str) -> list[str]:
    """The values a Vega legend's aria description lists ("... with 3 values: a, b, c")."""
    found = re.search(r"with \d+ values?: (.*)$", aria)
    assert found, aria
    return found.group(1).split(", ")


def run_charts(tab, title: str) -> list[dict]:
    """The charts on the page with a run legend titled `title`, once they have drawn."""
    tab.wait_for_function(f"""() => [...document.querySelectorAll('[data-testid="stVegaLiteChart"] g.role-legend')]
        .some(l => (l.getAttribute('aria-label') || '').includes("titled '{title}'"))""", timeout=60_000)
    charts = tab.evaluate(READ_CHARTS)
    return [c for c in charts if any(f"titled '{title}'" in l["aria"] for l in c["legends"])]


def assert_nothing_clipped(tab, charts: list[dict], width: int) -> None:
    page_width = tab.evaluate("() => document.documentElement.scrollWidth")
    assert page_width <= width, f"the page scrolls sideways: {page_width} px wide in a {width} px window"
    for chart in charts:
        left, right, top, bottom = chart["box"]
        assert right <= width + 0.5, f"a chart runs out of the window: {chart['box']}"
        for legend in chart["legends"]:
            l_left, l_right, l_top, l_bottom = legend["box"]
            assert left - 0.5 <= l_left and l_right <= right + 0.5 and top - 0.5 <= l_top and l_bottom <= bottom + 0.5, \
                f"legend {legend['labels']} at {legend['box']} runs out of its chart at {chart['box']}"
            for label in legend["labels"]:
                assert label.strip(), f"an empty legend label in {legend['labels']}"


def picked_names(tab, root) -> list[str]:
    """The runs in the page's first multiselect, as the charts name them."""
    runs = {run_label(r): r for r in list_runs(root)}
    chips = tab.locator('[data-testid="stMultiSelect"]').first.locator('[data-tag]')
    # The chips are drawn after the run that picks them: wait for the first (none in 60 s fails below).
    with contextlib.suppress(PlaywrightTimeout):
        chips.first.wait_for()
    picked = [runs[c] for c in chips.evaluate_all("cs => cs.map(c => c.getAttribute('aria-label'))")]
    assert picked, "no run picked"
    names = unique_names(picked)
    return [names[r.run_id] for r in picked]


@pytest.mark.parametrize("size", VIEWPORTS, ids=lambda s: f"{s[0]}x{s[1]}")
def test_compare_legends_list_every_picked_run_and_stay_inside_their_charts(browser, base_url, root, size):
    best = best_by_validation([i for i in RECIPES if i != MINE], root)[:4]
    expected = [load_run(i, root).name for i in best] + ["my lenet"]  # the default: best 4 and the user's run
    tab = open_at(browser, base_url, "compare", size)
    try:
        assert picked_names(tab, root) == expected
        charts = run_charts(tab, "run (click to highlight)")
        assert len(charts) == 2, "the loss and the accuracy chart"
        for chart in charts:
            (legend,) = [l for l in chart["legends"] if "titled 'run" in l["aria"]]
            assert legend_values(legend["aria"]) == expected
            assert len(legend["labels"]) == len(expected)  # every entry drawn, none dropped
        assert_nothing_clipped(tab, charts, size[0])
        grid = run_charts(tab, "at the 5% level")
        assert len(grid) == 1
        assert_nothing_clipped(tab, grid, size[0])
    finally:
        tab.close()


@pytest.mark.parametrize("size", VIEWPORTS, ids=lambda s: f"{s[0]}x{s[1]}")
def test_robustness_legends_list_every_picked_run_and_tell_the_attacks_apart(browser, base_url, root, size):
    tab = open_at(browser, base_url, "robustness", size)
    try:
        expected = picked_names(tab, root)
        assert len(expected) >= 2
        charts = run_charts(tab, "run")
        assert len(charts) == 2, "the attack curves and the corruption bars"
        for chart in charts:
            (legend,) = [l for l in chart["legends"] if "titled 'run'" in l["aria"]]
            assert legend_values(legend["aria"]) == expected
            assert len(legend["labels"]) == len(expected)
        attacks = [l for c in charts for l in c["legends"] if "titled 'attack'" in l["aria"]]
        assert len(attacks) == 1 and legend_values(attacks[0]["aria"]) == ["FGSM", "PGD"]
        symbols = attacks[0]["symbols"]  # drawn, and drawn apart: solid and dashed
        assert len(symbols) == 2 and all(sym["stroke"] not in (None, "transparent", "none") for sym in symbols)
        assert symbols[0]["dash"] != symbols[1]["dash"], symbols
        assert_nothing_clipped(tab, charts, size[0])
    finally:
        tab.close()


def test_a_click_on_a_cell_of_the_p_value_grid_opens_that_pair(browser, base_url, root):
    tab = open_at(browser, base_url, "compare", VIEWPORTS[0])
    try:
        run_charts(tab, "at the 5% level")
        seen = {frozenset(shown_pair(tab))}  # the pair open on arrival
        for _ in range(2):  # a click opens its pair; a second click, on another cell, opens that one
            cells = tab.locator('[data-testid="stVegaLiteChart"] g.mark-rect path[aria-label*="against"]')
            labels = cells.evaluate_all("cs => cs.map(c => c.getAttribute('aria-label'))")
            index, (run, against) = next((k, cell_pair(label)) for k, label in enumerate(labels)
                                         if ("different" in label or "no evidence" in label)
                                         and frozenset(cell_pair(label)) not in seen)
            cells.nth(index).click(position={"x": 4, "y": 4})  # a corner: the p-value's text sits in the middle
            tab.wait_for_function("""([a, b]) => [...document.querySelectorAll('[data-testid="stSelectbox"] input')]
                .some(i => i.value === a + ' vs ' + b || i.value === b + ' vs ' + a)""",
                                  arg=[run, against], timeout=60_000)
            harness.wait_for_app(tab)
            harness.assert_no_exception(tab)
            assert frozenset(shown_pair(tab)) == {run, against}
            text = tab.locator('[data-testid="stMain"]').inner_text()
            assert "Holm-corrected for the 10 pairs of the grid" in text
            assert "McNemar's exact test, uncorrected" in text
            verdicts = tab.locator('[data-testid="stAlert"]').all_inner_texts()
            assert any(f"{run} is right on" in v and against in v or f"{against} is right on" in v and run in v
                       for v in verdicts), verdicts  # that pair's verdict
            seen.add(frozenset((run, against)))
    finally:
        tab.close()


def cell_pair(aria: str) -> tuple[str, str]:
    """(run, against) out of a grid cell's aria label ("run: a; against: b; ...")."""
    found = re.search(r"run: (.*?); against: (.*?);", aria)
    assert found, aria
    return found.group(1), found.group(2)


def shown_pair(tab) -> tuple[str, str]:
    """The two runs the Pair box shows (once it has drawn: it comes after the grid)."""
    tab.wait_for_function("""() => [...document.querySelectorAll('[data-testid="stSelectbox"] input')]
        .some(i => i.value.includes(' vs '))""", timeout=60_000)
    box = tab.locator('[data-testid="stSelectbox"]', has=tab.get_by_text("Pair", exact=True))
    text = " ".join(i.input_value() for i in box.locator("input").all()) or box.inner_text()
    found = re.search(r"(.+?) vs (.+)", text.strip().split("\n")[-1])
    assert found, text
    return found.group(1), found.group(2)
