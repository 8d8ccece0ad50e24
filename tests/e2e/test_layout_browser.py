"""Every page at a desktop's and a phone's size, in a real Chromium: it opens without an error under
its own heading and URL path, no page scrolls sideways, and on a phone Sketch's pad fits above the fold with the predictions directly under it (before the
handwriting form).

The sizes: 1400x900, and 390x844 as a phone (is_mobile, has_touch; scripts/harness.PHONE). The
pages: every entry of dashboard/app.py's PAGES, on the seeded runs of tests/e2e/conftest.py.
"""
from __future__ import annotations

import pytest

from urllib.parse import urlparse

from dashboard.app import HOME, PAGES
from scripts import harness

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

SIZES = {"desktop": {"viewport": {"width": 1400, "height": 900}}, "phone": harness.PHONE}
PATHS = [HOME[2], *(url for _, _, url, _ in PAGES)]  # the first page at "/", then the others
HEADINGS = {HOME[2]: "MNIST Lab", **harness.PAGES}

# The widths of the page (the document) and of Streamlit's main block, which scrolls on its own.
WIDTHS = """() => {
  const main = document.querySelector('[data-testid="stMain"]');
  const doc = document.scrollingElement;
  return {doc: [doc.scrollWidth, doc.clientWidth], main: [main.scrollWidth, main.clientWidth]};
}"""
# Every Vega chart on the page has drawn (a canvas or an svg): only then are their widths final.
CHARTS_DRAWN = """() => [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')]
  .every(c => c.querySelector('canvas, svg'))"""


@pytest.fixture(params=list(SIZES))
def sized(request, browser, server):
    """(size name, a fresh tab at that size in its own context)."""
    context = browser.new_context(**SIZES[request.param])
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    yield request.param, tab
    context.close()


def assert_no_sideways_scroll(page, where: str) -> None:
    widths = page.evaluate(WIDTHS)
    for part, (scroll, client) in widths.items():
        assert scroll <= client, f"{where}: the {part} scrolls sideways ({scroll} px of content in {client} px)"


def nav_titles(page) -> list[str]:
    return page.locator('[data-testid="stSidebarNavLink"] span[label]').evaluate_all(
        "spans => spans.map(s => s.getAttribute('label'))")


@pytest.mark.parametrize("path", PATHS)
def test_every_page_opens_and_none_scrolls_sideways(sized, base_url, path):
    size, page = sized
    harness.open_page(page, base_url, path)
    harness.assert_no_exception(page)
    heading = page.locator('[data-testid="stMain"] h1')
    assert heading.first.inner_text().strip() == HEADINGS[path], \
        f"/{path} shows the heading {heading.all_inner_texts()}, expected {HEADINGS[path]!r}"
    assert urlparse(page.url).path == f"/{path}", f"/{path} ended up at {page.url}"
    if size == "desktop":  # the app's own navigation, not Streamlit's pages/ fallback (file names)
        assert nav_titles(page) == [HOME[1], *harness.PAGES.values()], f"/{path}: the sidebar lists {nav_titles(page)}"
    page.wait_for_function(CHARTS_DRAWN)
    assert_no_sideways_scroll(page, f"/{path} at {size}")


def test_sketch_on_a_phone_pad_above_the_fold_predictions_under_it(browser, base_url, server):
    """At 390x844 the pad ends within the first screen; after a finger's stroke the first
    prediction row comes directly under the pad (only the pad's Undo and Clear between), above the
    handwriting form, and nothing scrolls sideways; twice in a row (Clear between)."""
    context = browser.new_context(**harness.PHONE)
    page = context.new_page()
    page.set_default_timeout(30_000)
    height = harness.PHONE["viewport"]["height"]
    try:
        harness.open_page(page, base_url, "sketch")
        harness.assert_no_exception(page)
        pad = harness.canvas(page).bounding_box()
        assert pad["y"] >= 0 and pad["y"] + pad["height"] <= height, f"the pad is not above the fold: {pad}"
        page.wait_for_timeout(500)  # ms: the pad binds its pointer handlers after the first paint
        for digit in ("7", "1"):
            harness.draw_touch(page, harness.DIGIT_STROKES[digit])
            page.wait_for_function("() => document.querySelectorAll('[data-testid=\"stMain\"] .sk-card').length >= 2")
            harness.wait_for_app(page)
            harness.assert_no_exception(page)
            pad = harness.canvas(page).bounding_box()
            rows = [r.bounding_box() for r in page.locator('[data-testid="stMain"] .sk-card').all()]
            assert len(rows) == 2, "a row per seeded model"
            first = rows[0]
            clear = page.get_by_role("button", name="Clear", exact=True).bounding_box()
            label = page.get_by_text("Add it to your handwriting set").bounding_box()
            # directly under the pad: below it and its Clear button, with less than a row's height between
            assert pad["y"] + pad["height"] < clear["y"] < first["y"], (pad, clear, first)
            assert first["y"] - (clear["y"] + clear["height"]) < 80, f"a gap between Clear and the rows: {clear} {first}"
            assert all(r["y"] < label["y"] for r in rows), "the rows come before the handwriting form"
            assert first["x"] >= 0 and first["x"] + first["width"] <= harness.PHONE["viewport"]["width"]
            assert_no_sideways_scroll(page, f"Sketch on a phone after drawing a {digit}")
            page.get_by_role("button", name="Clear", exact=True).click()
            page.wait_for_function("() => !document.querySelector('[data-testid=\"stMain\"] .sk-card')")
            harness.wait_for_app(page)
            page.wait_for_timeout(300)  # ms: the fresh pad binds its handlers
    finally:
        context.close()


def test_sketch_on_a_desktop_shows_the_rows_beside_the_pad(page, base_url):
    """At 1400 px the rows sit beside the pad, starting level with it, within the first screen."""
    page.set_viewport_size({"width": 1400, "height": 900})
    harness.open_page(page, base_url, "sketch")
    page.wait_for_timeout(500)  # ms: the pad binds its pointer handlers after the first paint
    harness.draw_digit(page, "1")
    page.wait_for_function("() => document.querySelectorAll('[data-testid=\"stMain\"] .sk-card').length >= 2")
    harness.wait_for_app(page)
    pad = harness.canvas(page).bounding_box()
    first = page.locator('[data-testid="stMain"] .sk-card').first.bounding_box()
    assert first["x"] > pad["x"] + pad["width"], "the rows are right of the pad"
    assert abs(first["y"] - pad["y"]) < 40 and first["y"] + first["height"] < 900, (pad, first)
    assert_no_sideways_scroll(page, "Sketch at 1400 px after drawing")
