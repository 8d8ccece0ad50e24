"""Inside the network in a real Chromium: a drawn 7 through a model, every layer drawn; a clicked
channel's top test images; a second drawing after Clear; a test image opened by its link; and the
page on a phone, its grids wrapped inside the screen."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from scripts import harness

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

GRIDS = ".inside-layers"


def seeded_lenet(server):
    from core.store.runs import list_runs
    return next(r for r in list_runs(server.checkpoints) if r.name == "seed-lenet")


def drawn_stamp(page) -> str | None:
    return page.locator(GRIDS).first.get_attribute("data-drawn")


def layer_titles(page) -> list[str]:
    return [t.strip() for t in page.locator(".inside-layer h4").all_inner_texts()]


def expected_titles(run, root, digit: np.ndarray) -> list[str]:
    """The layers the page must show for `digit`: the run's model asked here (the oracle)."""
    from core.analysis import inside
    from core.data.images import normalize
    from core.store.runs import load_model
    from dashboard.layers import encode
    encoded = encode(inside.layers(load_model(run.run_id, root).eval(), normalize(digit)))
    return [f"{e['title']} {' × '.join(str(s) for s in e['shape'])}" + (f" · {e['note']}" if e["note"] else "")
            for e in encoded]


def test_a_drawing_goes_through_layer_by_layer_and_a_channel_shows_what_excites_it(page, base_url, server):
    from core.analysis import inside
    from core.data.images import normalize, to_mnist
    from core.store.runs import load_model
    run = seeded_lenet(server)
    harness.open_page(page, base_url, f"inside?run={run.run_id}")
    harness.assert_no_exception(page)
    page.wait_for_timeout(300)  # ms: the pad binds its pointer handlers after its first paint
    harness.draw_digit(page, "7")
    page.locator(f"{GRIDS}[data-drawn]").first.wait_for(timeout=60_000)
    harness.wait_for_app(page)
    harness.assert_no_exception(page)
    titles = layer_titles(page)
    assert titles[0].startswith("Input") and titles[-1].startswith("Probabilities")
    assert any(t.startswith("conv2 · conv 10→20 5x5 20 × 8 × 8") for t in titles), titles
    first = drawn_stamp(page)
    # The digit the page predicts is the model's own on what the pad sent (read back from the page's pad).
    digit = to_mnist(np.asarray(_pad_pixels(page)))
    assert titles == expected_titles(run, server.checkpoints, digit)
    with torch.inference_mode():
        predicted = int(load_model(run.run_id, server.checkpoints).eval()(normalize(digit)).argmax())
    assert page.get_by_text(f"Predicted: {predicted}", exact=True).is_visible()

    conv2 = page.locator(".inside-layer").filter(has_text="conv2 · conv 10→20")
    conv2.locator("canvas[data-unit]").nth(6).click()
    page.get_by_text("conv2 · channel 6", exact=True).wait_for(timeout=120_000)  # finds the top images, once
    harness.wait_for_app(page, timeout=120)
    harness.assert_no_exception(page)
    units, _ = inside.cached_units(run.run_id, server.checkpoints)
    assert units is not None, "the units were not kept in the run folder"
    captions = page.locator('[data-testid="stImageCaption"]').all_inner_texts()
    shown = [int(m.group(1)) for c in captions if (m := re.match(r"#(\d+) · a \d", c.strip()))]
    node = next(layer.node for layer in inside.layers(load_model(run.run_id, server.checkpoints).eval(),
                                                      normalize(digit)) if layer.name == "conv2")
    assert shown == units.index[0][node][6].tolist()
    assert conv2.locator("canvas.picked").count() == 1

    page.get_by_role("button", name="Clear", exact=True).click()  # a second drawing, the channel still picked
    harness.wait_for_app(page)
    page.wait_for_timeout(300)
    harness.draw_digit(page, "1")
    page.wait_for_function(f"""() => {{
        for (const el of document.querySelectorAll('*')) {{
          const g = el.shadowRoot && el.shadowRoot.querySelector('{GRIDS}');
          if (g && g.dataset.drawn && g.dataset.drawn !== '{first}') return true;
        }}
        return false; }}""", timeout=60_000)
    harness.wait_for_app(page)
    harness.assert_no_exception(page)
    assert drawn_stamp(page) != first
    assert page.get_by_text("conv2 · channel 6", exact=True).is_visible()
    assert page.locator(".inside-layer").filter(has_text="conv2 · conv 10→20").locator("canvas.picked").count() == 1


def _pad_pixels(page) -> np.ndarray:
    """The pad's canvas as grey levels (what it sends the server, before preprocessing)."""
    import base64
    import io

    from PIL import Image
    url = page.locator(harness.PAD).first.evaluate("c => c.toDataURL('image/png')")
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as image:
        return np.asarray(image.convert("L"))


def test_a_test_image_opens_by_its_link_and_the_page_fits_a_phone(browser, base_url, server):
    run = seeded_lenet(server)
    phone = harness.new_page(browser, phone=True)
    try:
        harness.open_page(phone, base_url, f"inside?run={run.run_id}&test=8")
        phone.locator(f"{GRIDS}[data-drawn]").first.wait_for(timeout=60_000)
        harness.wait_for_app(phone)
        harness.assert_no_exception(phone)
        assert phone.get_by_test_id("stNumberInputField").input_value() == "8"
        assert phone.get_by_text("test image #8, labelled 5").is_visible()
        width = phone.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollWidth")
        assert width <= 390, f"the page is {width} px wide on a 390 px screen"
        right = phone.evaluate(f"""() => {{
            for (const el of document.querySelectorAll('*')) {{
              const g = el.shadowRoot && el.shadowRoot.querySelector('{GRIDS}');
              if (g) return Math.max(...[...g.querySelectorAll('canvas')].map(c => c.getBoundingClientRect().right));
            }}
            return null; }}""")
        assert right is not None and right <= 390, f"a map reaches {right} px on a 390 px screen"
    finally:
        harness.close_page(phone)
