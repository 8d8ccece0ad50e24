"""Seeing why on the pages (AppTest): saliency wherever test images are shown and on Sketch, the
embedding map, and their messages for a run whose weights no longer load."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from core.analysis import embedding as maps
from core.analysis.predict import Predictor
from core.store.reference import reference_ids
from core.store.folder import WEIGHTS
from core.store.runs import load_predictions
from tests.helpers import REPO
from tests.test_app import open_page, texts

LENET = next(r for r in reference_ids(REPO / "checkpoints") if "lenet" in r)


def captions(at) -> list[str]:
    """The captions of every single image on the page (a gallery's are left out)."""
    found = []
    for element in at.get("image"):
        imgs = list(element.proto.imgs)
        if len(imgs) == 1:
            found.append(imgs[0].caption)
    return found


def expected_captions(run_id, root, image_uint8: np.ndarray, true: int) -> list[str]:
    """What saliency_panel must say, from the run's model asked here (the oracle)."""
    probs = Predictor.from_run(run_id, root).probabilities(image_uint8 / 255.0)[0]
    predicted = int(probs.argmax())
    other = true if true != predicted else int(np.argsort(probs)[-2])

    def sure(p):
        return f"{p:.0%}" if p >= 0.005 else "<1%"
    return [f"the image (true {true})", f"towards {predicted} (predicted, {sure(probs[predicted])})",
            f"towards {other} ({sure(probs[other])})"]


@pytest.fixture
def reference_lenet(lab_env, tmp_path):
    """The shipped lenet reference run (its UMAP map included) in a fresh store."""
    root = lab_env(tmp_path / "runs")
    shutil.copytree(REPO / "checkpoints" / LENET, root / LENET)
    return root


def test_mistakes_explain_the_chosen_image_for_the_predicted_and_the_true_digit(reference_lenet, mnist_root):
    from core.data.mnist import load_mnist
    at = open_page("mistakes")
    images = load_mnist(mnist_root).test_images.numpy()
    preds = load_predictions(LENET, reference_lenet)
    picker = at.selectbox(key="mis_why_image")
    wrong = set(np.flatnonzero(preds["labels"] != preds["predicted"]).tolist())
    assert set(picker.options) <= {f"#{i} (true {preds['labels'][i]})" for i in wrong}
    index = int(re.match(r"#(\d+)", picker.options[3]).group(1))
    picker.set_value(index).run()
    assert not at.exception, [e.value for e in at.exception]
    shown = captions(at)
    assert expected_captions(LENET, reference_lenet, images[index], int(preds["labels"][index])) == \
        shown[shown.index(f"the image (true {preds['labels'][index]})"):][:3]
    # a chosen digit instead of the true one
    at.selectbox(key=f"mis_why_{index}_{LENET}_digit").set_value(3).run()
    assert any(c.startswith("towards 3 (") for c in captions(at))


def test_confusion_cell_and_label_issue_images_have_saliency(reference_lenet, mnist_root):
    from core.data.mnist import load_mnist
    images = load_mnist(mnist_root).test_images.numpy()
    preds = load_predictions(LENET, reference_lenet)
    at = open_page("evaluate")
    at.selectbox(key="eval_true").set_value(4)
    at.selectbox(key="eval_predicted").set_value(9).run()
    cell = [i for i in np.flatnonzero((preds["labels"] == 4) & (preds["predicted"] == 9))]
    index = at.selectbox(key="ev_why_image").value
    assert index in cell
    assert expected_captions(LENET, reference_lenet, images[index], 4)[1:] == captions(at)[-2:]

    at = open_page("label_issues")
    index = at.selectbox(key="li_why_image").value
    label = int(preds["labels"][index])
    assert expected_captions(LENET, reference_lenet, images[index], label)[1:] == captions(at)[-2:]


def test_saliency_of_a_run_whose_weights_no_longer_load_says_so(reference_lenet):
    (reference_lenet / LENET / WEIGHTS).write_bytes(b"\x00 not safetensors")
    at = open_page("mistakes")
    assert not at.exception, [e.value for e in at.exception]
    errors = "\n".join(e.value for e in [*at.error, *at.warning])
    assert "cannot load its model" in errors and "not a valid safetensors file" in errors
    assert not any(c.startswith("towards") for c in captions(at))


def test_embedding_map_opens_with_the_shipped_map_and_rings_what_it_should(reference_lenet):
    at = open_page("embedding")
    assert not at.exception, [e.value for e in at.exception]
    preds = load_predictions(LENET, reference_lenet)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Mistakes (black rings)"] == f"{int((preds['labels'] != preds['predicted']).sum()):,}"
    assert metrics["Confirmed label errors (black diamonds)"] == "15"
    assert metrics["Test images"] == "10,000"
    assert len(at.get("vega_lite_chart")) == 1
    assert "Drag a box" in texts(at)
    import json
    spec = json.loads(at.get("vega_lite_chart")[0].proto.spec)
    params = spec.get("params", []) + [p for layer in spec["layer"] for p in layer.get("params", [])]
    assert {p["name"] for p in params if p.get("bind") == "scales"}, "no zoom and pan"
    assert any(p["name"] == "brush" and p["select"]["type"] == "interval" for p in params)
    tips = [t["field"] for layer in spec["layer"] for t in layer["encoding"]["tooltip"]]
    assert "index" in tips and "digit" in tips
    (rings,) = [layer for layer in spec["layer"] if layer["mark"].get("filled") is False]
    shapes = rings["encoding"]["shape"]["scale"]  # mistakes and confirmed label errors, told apart by shape
    assert len(set(shapes["range"])) == len(shapes["domain"]) == 2
    assert sorted(p.name for p in (reference_lenet / LENET).glob("embedding-*")) == ["embedding-umap.safetensors"]


def test_embedding_map_is_computed_on_request_and_kept(reference_lenet):
    at = open_page("embedding")
    at.segmented_control(key="emb_method").set_value("pca").run()
    assert "not computed yet" in texts(at) and len(at.get("vega_lite_chart")) == 0
    next(b for b in at.button if b.key == "emb_compute").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.get("vega_lite_chart")) == 1
    kept = maps.cached(LENET, "pca", reference_lenet)
    assert kept is not None and kept.xy.shape == (10_000, 2)


def test_embedding_map_of_weights_that_no_longer_load_says_why(reference_lenet):
    from safetensors.torch import load_file, save_file
    path = reference_lenet / LENET / WEIGHTS
    state = load_file(str(path))
    state["fc1.weight"] = state["fc1.weight"][:, :100].contiguous()
    save_file(state, str(path))
    at = open_page("embedding")  # the shipped map was of the old weights: not shown
    assert "not computed yet" in texts(at)
    next(b for b in at.button if b.key == "emb_compute").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "cannot draw the map" in "\n".join(e.value for e in [*at.error, *at.warning])
    assert not any(p.name.startswith("embedding-") and p.name != "embedding-umap.safetensors"
                   for p in path.parent.iterdir())  # nothing half-written


def test_sketch_saliency_explains_the_drawing_for_the_chosen_model(lab_env, trained_runs, drawn, mnist_root):
    from core.data.mnist import load_mnist
    from core.data.images import to_mnist
    from dashboard.views.sketch import decode_drawing
    from tests.test_app import pad_drawing
    lab_env(trained_runs.root)
    at = open_page("sketch")
    drawn.value = pad_drawing(load_mnist(mnist_root).test_images[0].numpy())
    at.run()
    assert not any(c.startswith("towards") for c in captions(at))  # off until asked
    at.toggle(key="sketch_why").set_value(True).run()
    at.selectbox(key="sketch_why_run").set_value(trained_runs.ids["lenet"]).run()
    assert not at.exception, [e.value for e in at.exception]
    digit = to_mnist(decode_drawing(drawn.value))
    probs = Predictor.from_run(trained_runs.ids["lenet"], trained_runs.root).probabilities(digit)[0]
    top, second = np.argsort(probs)[::-1][:2]
    shown = [c for c in captions(at) if c.startswith("towards")]
    assert shown[0].startswith(f"towards {top} (predicted, ") and shown[1].startswith(f"towards {second} (")
