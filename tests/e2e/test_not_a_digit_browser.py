"""Not a digit, in a real Chromium: on a store of shipped reference runs (each with its detector),
a letter H drawn with the mouse is "Not a digit" to the models whose detector flags it (computed
here from the drawing the server decoded), a 7 drawn after it is a digit to every model, and a
hash drawn next is flagged too."""
from __future__ import annotations

import shutil

import pytest

from core.analysis.predict import Predictor
from core.data.images import normalize, to_mnist
from core.notadigit import detector as ood
from core.store.reference import reference_ids
from core.store.runs import load_run
from scripts import harness
from tests.helpers import REPO

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

SHIPPED = REPO / "checkpoints"
ARCHS = ("lenet", "resnet", "speedrun")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("not-a-digit-runs")
    for run_id in reference_ids(SHIPPED):
        if load_run(run_id, SHIPPED).arch in ARCHS and not load_run(run_id, SHIPPED).config.get("sweep"):
            shutil.copytree(SHIPPED / run_id, root / run_id)
    return root


@pytest.fixture(scope="module")
def server(store, dashboard_on):
    with dashboard_on(store) as running:
        yield running


@pytest.fixture(scope="module")
def base_url(server) -> str:
    return server.url


def cards(page) -> dict[str, str]:
    """arch -> the card's text ("Not a digit ..." or "Predicted: N ...")."""
    found = {}
    for card in page.locator(".sk-card").all():
        text = card.inner_text()
        arch = next((a for a in ARCHS if f"· {a} ·" in text), None)
        if arch:
            found[arch] = text
    return found


def expected(store, drawing) -> dict[str, bool]:
    """arch -> flagged, by each run's kept detector on the drawing as the server decoded it."""
    digit = to_mnist(drawing)
    flags = {}
    for run_id in reference_ids(store):
        run = load_run(run_id, store)
        detector, _ = ood.read_kept(run_id, store)
        _, (flag,) = detector.judge(Predictor.from_run(run_id, store).model, normalize(digit))
        flags[run.arch] = bool(flag)
    return flags


def test_a_drawn_letter_is_not_a_digit_and_a_drawn_seven_is(page, base_url, store):
    from dashboard.views.sketch import decode_drawing
    harness.open_page(page, base_url, "sketch")
    harness.assert_no_exception(page)
    page.wait_for_timeout(500)  # the pad binds its pointer handlers after the first paint
    for turn, (drawing, is_digit) in enumerate([("H", False), ("7", True), ("hash", False)]):
        if turn:  # a fresh pad for each drawing
            page.get_by_role("button", name="Clear", exact=True).click()
            page.wait_for_function("() => !document.querySelector('[data-testid=\"stMain\"] .sk-card')")
            harness.wait_for_app(page)
            page.wait_for_timeout(300)
        harness.draw_digit(page, drawing)
        page.wait_for_timeout(300)
        harness.wait_for_app(page)
        harness.assert_no_exception(page)
        shown = cards(page)
        assert set(shown) == set(ARCHS), f"cards for {sorted(shown)}"
        url = page.locator("canvas.sketch-pad").evaluate("c => c.toDataURL('image/png')")
        flags = expected(store, decode_drawing(url))
        for arch, text in shown.items():
            assert text.startswith("Not a digit") == flags[arch], (drawing, arch, text[:120])
        if is_digit:
            assert not any(flags.values()) and all(t.startswith("Predicted: 7") for t in shown.values()), shown
        else:
            assert any(flags.values()), f"no model flags the drawn {drawing}: {shown}"
