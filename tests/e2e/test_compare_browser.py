"""Compare's "Is the difference real?" in a real Chromium: the sentence a person reads names the
runs and the counts that the saved predictions give (counted here), the same after a visit to
another page and back."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from scipy.stats import binom

from core.store.runs import list_runs, load_predictions
from scripts import harness

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

SENTENCE = re.compile(r"(.+?) is right on ([\d,]+) images? (.+?) gets wrong, \3 on ([\d,]+) that \1 gets wrong: "
                      r"(p = [\d.]+|p < 0\.001)")


def section_text(page) -> str:
    main = page.locator('[data-testid="stMain"]')
    main.get_by_text("Is the difference real?").first.wait_for(timeout=30_000)
    return main.inner_text()


def test_compare_says_whether_two_runs_differ_and_says_it_again(page, base_url, seeded_checkpoints):
    runs = {r.name: r for r in list_runs(seeded_checkpoints) if r.status == "finished" and r.has_predictions}
    shown = []
    for visit in range(2):
        harness.open_page(page, base_url, "compare")
        harness.assert_no_exception(page)
        found = SENTENCE.search(section_text(page))
        assert found, "no comparison sentence on the page:\n" + section_text(page)[:3000]
        name_a, a_only, name_b, b_only, p_shown = found.groups()
        a_only, b_only = a_only.replace(",", ""), b_only.replace(",", "")
        a, b = (load_predictions(runs[n].run_id, seeded_checkpoints) for n in (name_a, name_b))
        a_right, b_right = a["predicted"] == a["labels"], b["predicted"] == b["labels"]
        assert int(a_only) == int((a_right & ~b_right).sum()) and int(b_only) == int((~a_right & b_right).sum())
        k, m = min(int(a_only), int(b_only)), int(a_only) + int(b_only)
        p = min(1.0, 2 * binom.cdf(k, m, 0.5))
        assert p_shown == ("p < 0.001" if p < 0.001 else f"p = {p:.2f}" if p >= 0.01 else f"p = {p:.3f}")
        table = page.locator('[data-testid="stDataFrame"]').filter(has_text=f"{name_b} right")
        try:  # the table may render after the sentence: wait for it, then count
            table.first.wait_for(timeout=30_000)
        except PlaywrightTimeout:
            pass
        assert table.count() == 1, "the 2x2 table of the two runs is not shown"
        shown.append(found.group(0))
        harness.open_page(page, base_url, "evaluate")  # another page, then back
        harness.assert_no_exception(page)
        assert page.get_by_text("Calibration").count() >= 1
    assert shown[0] == shown[1]
