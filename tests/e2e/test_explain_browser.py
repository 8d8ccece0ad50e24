"""Seeing why, in a real Chromium: a box dragged on the embedding map shows the images inside it,
and the Sketch page's saliency heatmaps are those of the chosen model for the drawing."""
from __future__ import annotations

import io
import re
import time

import numpy as np
import pytest

from scripts import harness
from tests.e2e.test_browser import seen_image

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]


def fetch_image(page, base_url, locator) -> np.ndarray:
    from PIL import Image
    src = locator.get_attribute("src")
    body = page.request.get(src if src.startswith("http") else base_url + src).body()
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))


def test_a_box_dragged_on_the_embedding_map_shows_the_images_inside_it(page, base_url, server):
    from core.analysis import embedding as maps
    from core.store.runs import list_runs
    run = next(r for r in list_runs(server.checkpoints) if r.name == "seed-lenet")
    harness.open_page(page, base_url, f"embedding?run={run.run_id}")
    harness.assert_no_exception(page)
    page.locator('[data-testid="stButtonGroup"]').get_by_text("PCA", exact=True).click()  # seconds to compute, where UMAP takes ~30 s
    harness.wait_for_app(page)
    page.get_by_role("button", name="Compute the map").click()
    chart = page.locator('[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg').first
    chart.wait_for(state="visible", timeout=120_000)
    harness.wait_for_app(page, timeout=120)
    harness.assert_no_exception(page)
    emb = maps.cached(run.run_id, "pca", server.checkpoints)
    assert emb is not None, "the map was not kept in the run folder"

    assert harness.drag_box_on_chart(page), "no chart to drag on"
    summary = page.locator('[data-testid="stMarkdownContainer"]', has_text="images selected").last
    summary.wait_for(timeout=30_000)
    harness.wait_for_app(page)
    harness.assert_no_exception(page)
    text = summary.inner_text()
    found = re.search(r"([\d,]+) images selected.*x (-?[\d.]+) to (-?[\d.]+), y (-?[\d.]+) to (-?[\d.]+)", text)
    assert found, text
    count = int(found.group(1).replace(",", ""))
    bx0, bx1, by0, by1 = (float(found.group(i)) for i in range(2, 6))
    # oracle: the kept map's points inside the box the page reports, counted here
    inside = np.flatnonzero((emb.xy[:, 0] >= bx0 - 1e-3) & (emb.xy[:, 0] <= bx1 + 1e-3)
                            & (emb.xy[:, 1] >= by0 - 1e-3) & (emb.xy[:, 1] <= by1 + 1e-3))
    assert count > 0 and abs(count - len(inside)) <= max(2, len(inside) // 100)  # the readout rounds to 3 places
    captions = page.locator('[data-testid="stImageCaption"]').all_inner_texts()
    shown = [int(m.group(1)) for c in captions if (m := re.match(r"#(\d+) · ", c.strip()))]
    assert shown and set(shown) <= set(inside.tolist()) and len(shown) == min(60, count)
    wrong = int(emb.mistakes[inside].sum())
    assert re.search(rf"{wrong:,} of them mistakes", text), text
    assert emb.mistakes[shown].tolist() == sorted(emb.mistakes[shown].tolist(), reverse=True)  # mistakes first
    for index in shown[:10]:  # each caption gives the image's true digit and the run's prediction
        caption = next(c for c in captions if c.strip().startswith(f"#{index} · "))
        assert caption.strip() == f"#{index} · {emb.labels[index]} → {emb.predicted[index]}"


def test_sketch_saliency_shows_the_models_heatmaps_for_the_drawing(page, base_url, server):
    from core.analysis import saliency
    from core.analysis.predict import Predictor
    from core.store.runs import list_runs
    runs = {r.name: r for r in list_runs(server.checkpoints)}
    harness.open_page(page, base_url, "sketch")
    page.wait_for_timeout(500)  # ms: the canvas binds its pointer handlers after the first paint
    harness.draw_digit(page, "7")
    page.wait_for_function("() => document.querySelectorAll('[data-testid=\"stMain\"] .sk-card').length >= 2",
                           timeout=30_000)
    harness.wait_for_app(page)
    page.get_by_text("Why? Show the saliency of the drawing").click()
    heat = page.locator('[data-testid="stImage"]', has=page.locator('[data-testid="stImageCaption"]',
                                                                    has_text=re.compile(r"^towards")))
    deadline = time.monotonic() + 30
    while heat.count() < 2 and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    harness.wait_for_app(page)
    harness.assert_no_exception(page)
    assert heat.count() == 2, "expected a heatmap for the predicted digit and one for another"
    chosen = page.locator('[data-testid="stSelectbox"]', has=page.get_by_text("Model", exact=True))
    chosen = chosen.inner_text() + " " + " ".join(i.input_value() for i in chosen.locator("input").all())
    name = next((n for n in runs if n in chosen), None)
    assert name, f"the Model picker shows {chosen!r}, none of {list(runs)}"
    image = seen_image(page, base_url)
    model = Predictor.from_run(runs[name].run_id, server.checkpoints)
    probs = model.probabilities(image)[0]
    digits = []
    for k in range(2):
        caption = heat.nth(k).locator('[data-testid="stImageCaption"]').inner_text()
        digits.append(int(re.match(r"towards (\d)", caption).group(1)))
    assert digits[0] == int(probs.argmax())
    # oracle: the same maps computed here from the model and the image the page shows (8-bit,
    # so a pixel may differ by a few levels; the picture must be the same)
    expected = saliency.explain(model.model, image, digits)
    for k in range(2):
        from dashboard.explain import FRAME, SCALE
        framed = fetch_image(page, base_url, heat.nth(k).locator("img"))
        assert framed.shape == (28 * SCALE + 2 * FRAME,) * 2 + (3,)
        shown = framed[FRAME:-FRAME:SCALE, FRAME:-FRAME:SCALE].astype(float)
        oracle = saliency.heatmap(expected[k], image).astype(float)
        assert shown.shape == oracle.shape
        assert np.abs(shown - oracle).mean() < 6 and np.corrcoef(shown.ravel(), oracle.ravel())[0, 1] > 0.97
