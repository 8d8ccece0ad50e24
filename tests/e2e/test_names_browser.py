"""A run named with Markdown, HTML, a Streamlit directive and LaTeX reads as typed in a real
Chromium, on every page that shows run names (issue 19): no link, no coloured span, no bold, no
tag, no formula; the name's characters are all there and no backslash shows.

The dashboard runs on its own store here: copies of two shipped reference runs, the lenet one
made the user's own and renamed (no training, so this module starts in seconds)."""
from __future__ import annotations

import re

import pytest

from scripts import harness
from tests.test_run_names import HOSTILE, LENET, hostile_copy

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

LINK_TEXT = "[click me](https://evil.example/x)"


@pytest.fixture(scope="module")
def server(tmp_path_factory, dashboard_on):
    """The dashboard on a store whose newest run (lenet) is named HOSTILE and has no embedding
    map kept (so the Embedding page names it in its notice)."""
    root = hostile_copy(tmp_path_factory.mktemp("hostile-runs"))
    (root / LENET / "embedding-umap.safetensors").unlink()
    with dashboard_on(root) as running:
        yield running


@pytest.fixture(scope="module")
def base_url(server) -> str:
    return server.url


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return tmp_path_factory.mktemp("names-screenshots")


def assert_no_markup(page, where: str) -> None:
    """Nothing on the page was made from the name's Markdown."""
    links = page.locator('a[href*="evil.example"]')
    assert links.count() == 0, f"{where}: a link to {links.first.get_attribute('href')}"
    coloured = page.locator(".stMarkdownColoredText, .stMarkdownColoredBackground, .stMarkdownBadge")
    assert coloured.filter(has_text=re.compile(r"^\s*!\s*$")).count() == 0, f"{where}: :red[!] made a coloured span"
    main = page.locator('[data-testid="stMain"], [data-testid="stToastContainer"]')
    for selector, text in (("strong", "bold"), ("b", "x"), (".katex", "x")):
        made = main.locator(selector).filter(has_text=re.compile(rf"^\s*{text}\s*$"))
        assert made.count() == 0, f"{where}: <{selector}>{text} was made from the name"


def assert_reads_as_typed(locator, where: str, count: int = 1) -> None:
    """`count` elements show the whole name, character for character, and no backslash."""
    found = locator.filter(has_text=LINK_TEXT)
    assert found.count() >= count, f"{where}: the name is not shown as typed"
    for element in found.all():
        assert element.is_visible(), where
        text = element.inner_text()
        assert HOSTILE in text and "\\" not in text, f"{where}: {text!r}"


def test_a_run_named_with_markdown_reads_as_typed(page, base_url, server, shots):
    markdown = page.locator('[data-testid="stMarkdownContainer"]')

    # Mistakes, "Against another run": the two tabs, the sentence above the matrices, their caption
    harness.open_page(page, base_url, f"mistakes?run={LENET}")
    harness.assert_no_exception(page)
    tabs = page.get_by_role("tab")
    assert tabs.count() == 2
    assert_reads_as_typed(tabs, "Mistakes' tabs", count=2)
    assert_reads_as_typed(markdown.filter(has_text="what changes from"), "Mistakes' matrices")
    assert_reads_as_typed(page.locator('[data-testid="stCaptionContainer"]').filter(has_text="Mistakes: "),
                          "Mistakes' caption")
    assert_no_markup(page, "Mistakes")
    harness.full_screenshot(page, shots / "mistakes.png")

    # Train: the newest run's card is headed by its name
    harness.open_page(page, base_url, "train")
    harness.assert_no_exception(page)
    assert_reads_as_typed(page.locator('[data-testid="stHeadingWithActionElements"]'), "Train's run card")
    assert_no_markup(page, "Train")
    harness.full_screenshot(page, shots / "train.png")

    # Compare: the delete confirmation (the rename notice, a toast shown just before a rerun,
    # does not always reach the browser: its source is checked in tests/test_run_names.py)
    harness.open_page(page, base_url, "compare")
    harness.assert_no_exception(page)
    page.get_by_role("button", name="Delete…").click()
    harness.wait_for_app(page)
    assert_reads_as_typed(page.locator('[data-testid="stAlert"]').filter(has_text="Delete "), "Compare's warning")
    assert_no_markup(page, "Compare")
    harness.full_screenshot(page, shots / "compare.png")

    # Embedding map: the notice of a map not computed yet
    harness.open_page(page, base_url, f"embedding?run={LENET}")
    harness.assert_no_exception(page)
    assert_reads_as_typed(page.locator('[data-testid="stAlert"]').filter(has_text="not computed yet"),
                          "Embedding's notice")
    assert_no_markup(page, "Embedding map")
    harness.full_screenshot(page, shots / "embedding.png")

    # the pages that show names in pickers and tables only: nothing is made of it there either
    for path in (f"evaluate?run={LENET}", "label-issues", "sketch"):
        harness.open_page(page, base_url, path)
        harness.assert_no_exception(page)
        assert_no_markup(page, path)
    print(f"\nscreenshots in {shots}")


# Patterns Streamlit's frontend turns into elements after parsing the Markdown, where a backslash
# no longer reaches: addresses into links, shortcodes into an icon, an emoji, the logo, "->" into
# an arrow. dashboard.text.md_text cuts them apart with an empty span.
AFTER_PARSING = "www.evil.example a@evil.example :material/home: :smile: :streamlit: a -> b"


def test_addresses_icons_emoji_and_arrows_in_a_name_read_as_typed(page, base_url, server):
    from core.store.runs import rename_run
    assert len(AFTER_PARSING) <= 80
    rename_run(LENET, AFTER_PARSING, server.checkpoints)
    try:
        harness.open_page(page, base_url, f"mistakes?run={LENET}")
        harness.assert_no_exception(page)
        tabs = page.get_by_role("tab")
        shown = [tabs.nth(i).inner_text() for i in range(tabs.count())]
        sentence = page.locator('[data-testid="stMarkdownContainer"]').filter(has_text="what changes from")
        shown.append(sentence.first.inner_text())
        assert len(shown) == 3 and all(AFTER_PARSING in text for text in shown), shown
        links = page.locator('a[href*="evil.example"]')
        assert links.count() == 0, [links.nth(i).get_attribute("href") for i in range(links.count())]
        main = page.locator('[data-testid="stMain"]')
        assert main.locator('span[role="img"]').count() == 0  # no :material/home: icon
        assert main.locator('img[alt="Streamlit logo"]').count() == 0
        assert "\N{SMILING FACE WITH OPEN MOUTH AND SMILING EYES}" not in main.inner_text()
        assert "\N{RIGHTWARDS ARROW}" not in "".join(shown)
    finally:
        rename_run(LENET, HOSTILE, server.checkpoints)
