"""The Inside the network page (streamlit.testing.v1.AppTest) on real runs: the layers it sends to
the browser are the model's, for a test image, a drawing and a second drawing; a unit's top images;
an ensemble's members; the nearest training digits; and a message, never an exception, for a run
still training, one that is gone, weights that no longer load, a damaged kept file and an empty pad."""
from __future__ import annotations

import fcntl
import shutil
import types

import numpy as np
import pytest
import streamlit as st
import torch

from core.analysis import inside
from core.data.images import normalize, to_mnist
from core.data.mnist import load_mnist
from core.fsio import atomic_write_json
from core.store.folder import LOCK_NAME, WEIGHTS, read_json, run_dir
from core.store.runs import load_model
from dashboard.pad import decode_drawing
from tests.helpers import REPO, reference_runs, require_mnist
from tests.test_app import open_page, pad_drawing, texts

LAYERS = "mnist_lab_inside_layers"


@pytest.fixture
def components(monkeypatch):
    """The page's two components (the pad and the layer grids) replaced by recorders:
    `components.pad` is what the pad has drawn on it (a data URL; None: empty), `components.data`
    what each component was last given."""
    import streamlit.components.v2 as v2
    state = types.SimpleNamespace(pad=None, data={})

    def component(name, **kwargs):
        def render(**options):
            state.data[name] = options.get("data")
            return types.SimpleNamespace(drawing=state.pad)
        return render

    monkeypatch.setattr(v2, "component", component)
    st.cache_resource.clear()  # the components, the models and the units are cached per process
    yield state
    st.cache_resource.clear()


@pytest.fixture
def store(tmp_path):
    """The shipped resnet and labnet reference runs (with their units) in a store of their own."""
    runs = reference_runs(REPO / "checkpoints")
    root = tmp_path / "runs"
    for arch in ("resnet", "labnet"):
        shutil.copytree(REPO / "checkpoints" / runs[arch], root / runs[arch],
                        ignore=shutil.ignore_patterns(inside.NEIGHBOURS))
    return root, runs


def shown_layers(components) -> list[tuple[str, list[int]]]:
    return [(layer["title"], layer["shape"]) for layer in components.data[LAYERS]["layers"]]


def expected_layers(member, digit: np.ndarray) -> list[tuple[str, list[int]]]:
    from dashboard.layers import encode
    return [(layer["title"], layer["shape"]) for layer in encode(inside.layers(member, normalize(digit)))]


def gallery(at, starts: str) -> list[str]:
    """The captions of the image gallery whose captions start with `starts` ("#": a unit's top test
    images; "a ": the nearest training digits)."""
    for element in at.get("image"):
        captions = [img.caption for img in element.proto.imgs]
        if len(captions) > 1 and all(c.startswith(starts) for c in captions):
            return captions
    raise AssertionError(f"no gallery of captions starting {starts!r}")


def open_inside(query: dict | None = None):
    at = open_page("inside")
    if query:
        at.query_params.update(query)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.slow
def test_a_test_image_goes_through_the_best_resnet_layer_by_layer(lab_env, components, store):
    root, runs = store
    lab_env(root)
    at = open_inside({"test": "8"})
    assert at.selectbox(key="inside_run").value == runs["resnet"]  # by default the resnet reference run
    assert at.segmented_control(key="inside_source").value == "A test image"
    assert at.number_input(key="inside_test").value == 8
    model = load_model(runs["resnet"], root).eval()
    digit = load_mnist(require_mnist()).test_images[8].numpy().astype(np.float32) / 255
    assert shown_layers(components) == expected_layers(model, digit)
    with torch.inference_mode():
        predicted = int(model(normalize(digit)).argmax())
    assert f"### Predicted: {predicted}" in texts(at)
    sent = components.data[LAYERS]["layers"]
    assert sent[-1]["kind"] == "digits" and np.argmax(sent[-1]["values"]) == predicted
    at.number_input(key="inside_test").set_value(0).run()  # another image: new layers
    digit0 = load_mnist(require_mnist()).test_images[0].numpy().astype(np.float32) / 255
    assert components.data[LAYERS]["layers"][0]["data"] != sent[0]["data"]
    assert shown_layers(components) == expected_layers(model, digit0)
    assert at.query_params["test"] in ("0", ["0"])  # the URL follows the image


@pytest.mark.slow
def test_each_drawing_goes_through_and_an_empty_pad_says_what_to_do(lab_env, components, store):
    root, runs = store
    lab_env(root)
    at = open_inside()
    assert LAYERS not in components.data
    assert "Draw a digit in the black box" in texts(at)
    model = load_model(runs["resnet"], root).eval()
    mnist = load_mnist(require_mnist())
    stamps = []
    for index in (0, 1):  # a 7, then a 2: the second drawing replaces every layer
        components.pad = pad_drawing(mnist.test_images[index].numpy())
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        digit = to_mnist(decode_drawing(components.pad))
        assert shown_layers(components) == expected_layers(model, digit)
        sent = components.data[LAYERS]
        with torch.inference_mode():
            assert np.argmax(sent["layers"][-1]["values"]) == int(model(normalize(digit)).argmax())
        stamps.append(sent["stamp"])
    assert stamps[0] != stamps[1]
    components.pad = None
    at.run()
    assert "Draw a digit in the black box" in texts(at) and not at.exception


@pytest.mark.slow
def test_a_clicked_unit_shows_its_filter_and_the_test_images_that_excite_it_most(lab_env, components, store):
    root, runs = store
    lab_env(root)
    at = open_inside({"test": "0"})
    model = load_model(runs["resnet"], root).eval()
    layers = inside.layers(model, normalize(load_mnist(require_mnist()).test_images[0].numpy() / 255.0))
    first = next(i for i, layer in enumerate(layers) if layer.node == 0)
    at.session_state["inside_picked"] = {"layer": first, "unit": 2}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert f"{layers[first].name} · channel 2" in [s.value for s in at.subheader]
    assert "**Its filter** (3x3 weights on the pixels)" in texts(at)
    units, _ = inside.cached_units(runs["resnet"], root)
    shown = [int(c.split(" ")[0][1:]) for c in gallery(at, "#")]
    assert shown == units.index[0][0][2].tolist()
    deeper = next(i for i, layer in enumerate(layers) if layer.name == "features.6")
    at.session_state["inside_picked"] = {"layer": deeper, "unit": 40}
    at.run()
    assert "features.6 · channel 40" in [s.value for s in at.subheader]
    assert "Its filter" not in texts(at)  # it reads channels, not pixels
    shown = [int(c.split(" ")[0][1:]) for c in gallery(at, "#")]
    assert shown == units.index[0][layers[deeper].node][40].tolist()


@pytest.mark.slow
def test_an_ensembles_members_are_looked_into_one_at_a_time(lab_env, components, store):
    root, runs = store
    lab_env(root)
    at = open_inside({"run": runs["labnet"], "test": "8"})
    model = load_model(runs["labnet"], root).eval()
    digit = load_mnist(require_mnist()).test_images[8].numpy().astype(np.float32) / 255
    member = at.selectbox(key="inside_member")
    assert member.options == ["member 1 (LabNet)", "member 2 (LabNet)", "member 3 (LabNet)"]
    for i in (0, 2):
        member.set_value(i).run()
        assert shown_layers(components) == expected_layers(model.members[i], digit)
        with torch.inference_mode():
            whole = int(model(normalize(digit)).argmax())
        assert f"The whole ensemble says **{whole}**" in texts(at)


@pytest.mark.slow
def test_nearest_training_digits_are_found_on_request_then_kept(lab_env, components, trained_runs, tmp_path):
    root = trained_runs.copy_to(tmp_path / "runs")
    run_id = trained_runs.ids["lenet"]
    lab_env(root)
    at = open_inside({"run": run_id, "test": "8"})
    assert [b.label for b in at.button if b.label == "Find them"] == ["Find them"]
    assert not (run_dir(run_id, root) / inside.NEIGHBOURS).exists()
    next(b for b in at.button if b.label == "Find them").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert (run_dir(run_id, root) / inside.NEIGHBOURS).is_file()
    found = inside.training_features(run_id, root)
    model = load_model(run_id, root).eval()
    x = normalize(load_mnist(require_mnist()).test_images[8].numpy() / 255.0)
    near = inside.nearest(found, inside.penultimate(model, x))
    captions = gallery(at, "a ")
    assert captions == [f"a {int(d)} · {dist:.3f}" for d, dist in zip(near.labels, near.distance)]
    assert f"{near.votes} of 9 are a **{near.vote}**" in texts(at)
    at.segmented_control(key="inside_metric").set_value("euclidean").run()
    near = inside.nearest(found, inside.penultimate(model, x), metric="euclidean")
    assert gallery(at, "a ") == \
        [f"a {int(d)} · {dist:.3f}" for d, dist in zip(near.labels, near.distance)]
    fresh = open_inside({"run": run_id, "test": "8"})  # kept: found at once, no button
    assert "Find them" not in [b.label for b in fresh.button]


@pytest.mark.slow
def test_runs_it_cannot_look_into_get_a_message(lab_env, components, store):
    root, runs = store
    lab_env(root)
    resnet = run_dir(runs["resnet"], root)
    status = read_json(resnet / "status.json")
    atomic_write_json(resnet / "status.json", {**status, "status": "running"})
    with open(resnet / LOCK_NAME, "w") as lock:  # held, as a training process holds it
        fcntl.flock(lock, fcntl.LOCK_EX)
        at = open_inside({"run": runs["resnet"], "test": "0"})
        assert "is still running: its weights change with every epoch" in texts(at)
        assert at.selectbox(key="inside_run").value == runs["labnet"]
    atomic_write_json(resnet / "status.json", status)
    at = open_inside({"run": "20990101-000000-gone"})
    assert "There is no run `20990101-000000-gone`" in texts(at)
    (run_dir(runs["labnet"], root) / WEIGHTS).write_bytes(b"not a safetensors file")
    at = open_inside({"run": runs["labnet"], "test": "0"})
    assert not at.exception and "cannot load its model" in texts(at)


@pytest.mark.slow
def test_a_damaged_units_file_is_said_and_found_again(lab_env, components, store):
    root, runs = store
    lab_env(root)
    path = run_dir(runs["resnet"], root) / inside.UNITS
    path.write_bytes(path.read_bytes()[:100])
    at = open_inside({"test": "0"})
    at.session_state["inside_picked"] = {"layer": 1, "unit": 0}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("The kept units cannot be used" in w.value for w in at.warning)
    assert inside.cached_units(runs["resnet"], root)[0] is not None  # made again, whole
