"""Evaluate's "Export as ONNX" in a real Chromium: the zip the browser downloads holds a graph that ONNX
Runtime runs to exactly the chosen run's saved digits, and its card; the same again after a visit
to another page and back."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from core.data.mnist import load_mnist
from core.store.runs import load_predictions
from scripts import harness

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]


def test_evaluate_hands_over_a_checked_onnx_file_and_does_it_again(page, base_url, seeded_checkpoints, tmp_path):
    import onnxruntime
    pixels = load_mnist(harness.REPO / "data").test_images.float().div(255).unsqueeze(1).numpy()
    for visit in range(2):
        harness.open_page(page, base_url, "evaluate")
        harness.assert_no_exception(page)
        main = page.locator('[data-testid="stMain"]')
        download = main.get_by_role("button", name="Download as ONNX (with its model card)")
        if not download.count():
            main.get_by_role("button", name="Export as ONNX").click()
        download.wait_for(timeout=120_000)
        harness.assert_no_exception(page)
        with page.expect_download(timeout=60_000) as found:
            download.click()
        saved_zip = tmp_path / f"visit-{visit}.zip"
        found.value.save_as(saved_zip)
        with zipfile.ZipFile(saved_zip) as archive:
            names = archive.namelist()
            card_name = next(n for n in names if n.endswith(".onnx.card.json"))
            card = json.loads(archive.read(card_name))
            model = archive.read(card_name.removesuffix(".card.json"))
        assert sorted(names) == sorted([card_name.removesuffix(".card.json"), card_name,
                                        card_name.replace(".json", ".md")])
        run_id = card["model"]["run_id"]
        session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
        digits = session.run(None, {"pixels": pixels})[0].argmax(1)
        assert np.array_equal(digits, load_predictions(run_id, seeded_checkpoints)["predicted"])
        assert main.get_by_text("10,000 of 10,000 test digits").count() == 1
        harness.open_page(page, base_url, "compare")   # another page, then back
        harness.assert_no_exception(page)
