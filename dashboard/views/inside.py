"""Inside the network: a digit (drawn on the pad, or one of MNIST's test images) through any
finished run's model, layer by layer; a unit's filter and the test images that excite it most;
and the training digits nearest to the input in the model's penultimate features, with their vote.

The maps come from the model's own forward pass (core.analysis.inside, traced by torch.fx). A
stroke reruns only `panel`, a fragment, as on Sketch: the run and the member are picked outside
it. The layers are drawn in the browser by dashboard.layers' component; the units' top images and
the training features are kept in the run folder (computed once per run).
"""
from __future__ import annotations

import numpy as np
import streamlit as st
import torch
from PIL import Image

from core.analysis import inside
from core.data.images import normalize
from core.store.folder import ACTIVE, WEIGHTS
from dashboard import access
from dashboard import glossary
from dashboard.inference import one_thread, predictor
from dashboard.layers import layer_grids, stamp_of
from dashboard.notices import report, require_mnist
from dashboard.pad import canvas_digit
from dashboard.state import checkpoints_base, file_stamp, load_runs, mnist
from dashboard.text import md_text
from dashboard.widgets import by_meaning, digit_image, finished_runs_or_stop, pick_run

DRAW, TEST = "Draw a digit", "A test image"
DEFAULT_ARCH = "resnet"  # a convolutional network with blocks, pooling and a dense head: every kind of layer
KEY = "inside"


def default_run(runs: list) -> str | None:
    """The run the page opens on: the first run of DEFAULT_ARCH in the pickers' order (its reference run
    where there is one: chosen by architecture, not by a test figure), else the first in that order."""
    ordered = by_meaning(runs)
    return next((r.run_id for r in ordered if r.arch == DEFAULT_ARCH), ordered[0].run_id if ordered else None)


def asked_for_unusable(finished: list) -> None:
    """A link (?run=) to a run that cannot be looked into yet: say why, above the picker."""
    asked = st.query_params.get("run")
    if not asked or asked in {r.run_id for r in finished}:
        return
    found = next((r for r in load_runs() if r.run_id == asked), None)
    if found is None:
        st.warning(f"There is no run `{md_text(asked)}` in this lab: showing another.", icon=":material/help:")
    elif found.status in ACTIVE:
        st.info(f"**{md_text(found.name)}** is still {found.status}: its weights change with every epoch. Look inside "
                "it once it has finished; here is another run meanwhile.", icon=":material/hourglass_top:")
    else:
        st.warning(f"**{md_text(found.name)}** is {found.status} without saved weights: there is nothing to look inside.",
                   icon=":material/warning:")


@st.cache_resource(max_entries=16, show_spinner=False)
def _units(base: str, run_id: str, weights: tuple | None, kept: tuple | None) -> tuple[inside.Units, list[str]]:
    """The run's units and what computing them said of a damaged kept file (shown once, when found)."""
    said: list[str] = []
    return inside.top_images(run_id, base, report=said.append), [line for line in said if "cannot be used" in line]


@st.cache_resource(max_entries=4, show_spinner=False)
def _features(base: str, run_id: str, weights: tuple | None, kept: tuple | None) -> tuple[inside.TrainingFeatures,
                                                                                         list[str]]:
    said: list[str] = []
    found = inside.training_features(run_id, base, report=said.append)
    return found, [line for line in said if "cannot be used" in line]


def kept_stamp(run, name: str) -> tuple | None:
    return file_stamp(run.path / name)


def kept_result(run, cached, doing: str, failed: str, kept: tuple | None):
    """What `cached` (_units or _features) gives for the run, under a spinner saying `doing`, after a
    warning for a damaged kept file it replaced; None after saying why there is none."""
    try:
        with st.spinner(doing):
            found, damage = cached(checkpoints_base(), run.run_id, file_stamp(run.path / WEIGHTS), kept)
    except inside.InsideError as exc:
        st.info(str(exc), icon=":material/info:")
        return None
    except Exception as exc:  # noqa: BLE001 - report() keeps a bug's traceback
        report(exc, f"**{md_text(run.name)}**: {failed}")
        return None
    for line in damage:
        st.warning(line[0].upper() + line[1:] + ".", icon=":material/build:")
    return found


def test_digit(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, int]:
    """The test image picked (its index follows the URL's ?test=): (28x28 on [0, 1], index)."""
    asked = st.query_params.get("test")
    if asked is not None and asked.isdigit() and int(asked) < len(images) \
            and st.session_state.get(f"{KEY}_test__from_url") != asked:
        st.session_state[f"{KEY}_test"] = int(asked)
        st.session_state[f"{KEY}_test__from_url"] = asked
    index = int(st.number_input("Test image (0-9999)", min_value=0, max_value=len(images) - 1, step=1,
                                key=f"{KEY}_test", help="any of MNIST's 10,000 test images; Mistakes, Label issues, "
                                "Evaluate and the Embedding map link here for the image they show"))
    if st.query_params.get("test") != str(index):
        st.query_params["test"] = str(index)
        st.session_state[f"{KEY}_test__from_url"] = str(index)
    digit = images[index].astype(np.float32) / 255.0
    digit_image(digit, width=140, caption=f"test image #{index}, labelled {int(labels[index])}", output_format="PNG")
    return digit, index


def picked_unit(layers: list[inside.Layer]) -> dict | None:
    """The unit last clicked ({layer, unit}), when it is one of these layers'. It is kept apart from
    the grids' own state, which Streamlit forgets in a run that does not draw them (an empty pad)."""
    try:
        state = st.session_state[f"{KEY}_layers"]
        clicked = state["unit"] if "unit" in state else None
    except (KeyError, TypeError):
        clicked = None
    if isinstance(clicked, dict) and clicked.get("stamp") != st.session_state.get(f"{KEY}_clicked"):
        st.session_state[f"{KEY}_clicked"] = clicked.get("stamp")  # a new click: it is the unit now
        st.session_state[f"{KEY}_picked"] = {"layer": clicked.get("layer"), "unit": clicked.get("unit")}
    unit = st.session_state.get(f"{KEY}_picked")
    if not isinstance(unit, dict):
        return None
    layer, index = unit.get("layer"), unit.get("unit")
    if not isinstance(layer, int) or not isinstance(index, int) or not 0 <= layer < len(layers):
        return None
    shown = layers[layer]
    if shown.node < 0 or not 0 <= index < inside.unit_scores(torch.from_numpy(shown.values)[None]).shape[1]:
        return None
    return {"layer": layer, "unit": index}


def overlay(digit: np.ndarray, amap: np.ndarray, size: int = 84) -> np.ndarray:
    """A test digit in grey with the unit's map over it in orange (its largest value fully
    orange), the map stretched from its own resolution to the image's."""
    grey = np.asarray(Image.fromarray((digit * 255).astype(np.uint8)).resize((size, size), Image.NEAREST),
                      dtype=np.float32) / 255
    top = float(amap.max())
    heat = np.clip(amap / top, 0, 1) if top > 0 else np.zeros_like(amap)
    heat = np.asarray(Image.fromarray((heat * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR),
                      dtype=np.float32)[..., None] / 255
    orange = np.array([245, 133, 24], dtype=np.float32) / 255
    rgb = np.stack([grey] * 3, -1) * 0.7 * (1 - heat) + orange * heat
    return np.clip(rgb * 255, 0, 255).astype(np.uint8)


def filter_image(weights: np.ndarray, size: int = 112) -> np.ndarray:
    """A filter's weights: orange adds where the pixel has ink, blue subtracts, black is 0."""
    m = float(np.abs(weights).max()) or 1.0
    v = weights / m
    rgb = np.zeros((*weights.shape, 3), dtype=np.float32)
    rgb[v > 0] = np.outer(v[v > 0], [245, 133, 24])
    rgb[v < 0] = np.outer(-v[v < 0], [66, 133, 244])
    return np.asarray(Image.fromarray(rgb.astype(np.uint8)).resize((size, size), Image.NEAREST))


def unit_panel(run, part, layers: list[inside.Layer], picked: dict, member: int) -> None:
    """The unit clicked: its value now, its filter where it reads pixels, and the nine test images
    that excite it most, each with the unit's map over it."""
    layer = layers[picked["layer"]]
    unit = picked["unit"]
    kind = "channel" if layer.maps else "unit"
    st.subheader(f"{layer.name} · {kind} {unit}", divider="gray")
    now = float(inside.unit_scores(torch.from_numpy(layer.values)[None])[0, unit])
    st.caption(f"{layer.what}. On this input it reaches **{now:.3g}** (a {kind}'s strength: "
               + ("its largest value over its map)." if layer.maps else "its value)."))
    weights = inside.first_filter(part, layer.node, unit)
    if weights is not None:
        left, right = st.columns([1, 3], vertical_alignment="center")
        with left:
            st.image(filter_image(weights), width=112, output_format="PNG")
        right.caption(f"**Its filter** ({weights.shape[0]}x{weights.shape[1]} weights on the pixels): orange adds "
                      "where the digit has ink, blue subtracts, black ignores. " + (
                          "A dense unit of the first layer weighs every pixel: this is the template it matches."
                          if weights.shape == (28, 28) else "It slides over the image; its map is how well each "
                          "place matches."))
    units = kept_result(run, _units, "Finding the test images that excite each unit most (once for this run)…",
                        "no top images", kept_stamp(run, inside.UNITS))
    if units is None:
        return
    arrays = mnist()
    if arrays is None:
        return
    index = units.index[member][layer.node][unit]
    scores = units.score[member][layer.node][unit]
    images = arrays["test_images"][index].astype(np.float32) / 255
    with one_thread():
        maps = inside.unit_maps(part, normalize(images), layer.node, unit)
    st.markdown(f"**The {len(index)} test images that excite it most**, the {kind}'s map over each in orange:")
    st.image([overlay(im, m) for im, m in zip(images, maps)], width=84,
             caption=[f"#{i} · a {int(arrays['test_labels'][i])} · {s:.3g}" for i, s in zip(index, scores)])
    if units.not_kept:
        st.caption(f"Not kept in the run folder ({units.not_kept}): found again next time.")


def neighbours_panel(run, model, x: torch.Tensor, predicted: int) -> None:
    """The training digits nearest to the input in the run's penultimate features, and their vote."""
    st.markdown("**Nearest training digits**", help=glossary.help_text(
        "penultimate", "the training images whose penultimate features are closest to the input's"))
    metric = st.segmented_control("Distance", inside.METRICS, default="cosine", key=f"{KEY}_metric",
                                  help="cosine: the angle between the features (their pattern, not their size); "
                                       "euclidean: the straight-line distance") or "cosine"
    kept = kept_stamp(run, inside.NEIGHBOURS)
    key = (checkpoints_base(), run.run_id, file_stamp(run.path / WEIGHTS), kept)
    if kept is None and st.session_state.get(f"{KEY}_find") != key[:3]:
        st.caption("The model's penultimate features of every image it trained on are computed once for this run "
                   "(a forward pass over up to 55,000 images: a minute or two on a CPU) and kept in its folder.")
        if not st.button("Find them", icon=":material/travel_explore:", key=f"{KEY}_find_button",
                         disabled=access.locked(), help=access.LOCKED_HELP if access.locked() else None) \
                or not access.allowed("compute a run's training features"):
            return
        st.session_state[f"{KEY}_find"] = key[:3]
    found = kept_result(run, _features, "Computing the penultimate features of the training images (once for this "
                        "run)…", "no nearest training digits", kept)
    if found is None:
        return
    with one_thread():
        near = inside.nearest(found, inside.penultimate(model, x), metric=metric)
    arrays = mnist()
    if arrays is None:
        return
    images = arrays["train_images"][near.train_index]
    st.image([np.repeat(np.repeat(im, 2, 0), 2, 1) for im in images], width=56,
             caption=[f"a {int(d)} · {dist:.3f}" for d, dist in zip(near.labels, near.distance)])
    agree = ("agrees with the model" if near.vote == predicted
             else f"**the model says {predicted}**: it reads this input unlike the digits it is nearest to")
    st.caption(f"{near.votes} of {len(near.labels)} are a **{near.vote}**: their vote {agree}. {metric.capitalize()} "
               f"distance between the model's penultimate features; nearest first; training images #"
               + ", ".join(str(int(i)) for i in near.train_index[:3]) + "…")
    glossary.caption("knn_vote")


def templates(part) -> None:
    """For a model whose first layer is dense (the MLPs): each unit's 784 weights as a 28x28 image,
    the template it matches against the digit."""
    first = inside.first_filter(part, 0, 0)
    if first is None or first.shape != (28, 28):
        return
    units = inside.unit_count(part)[0]
    with st.expander(f"The first layer's {units} templates", icon=":material/grid_view:"):
        st.caption("Each unit of the first dense layer weighs every pixel: orange adds where the digit has ink, blue "
                   "subtracts. Its value is how well the digit matches its template (before the ReLU).")
        st.image([filter_image(inside.first_filter(part, 0, u), size=56) for u in range(units)], width=56,
                 caption=[f"unit {u}" for u in range(units)])


def panel(run, member: int, source: str) -> None:
    """The input, the layers, the unit clicked and the nearest training digits: all that a stroke
    changes (a fragment)."""
    loaded = predictor(run)
    if loaded is None:  # its weights no longer load: predictor said why
        return
    model = loaded.model
    name, part = inside.members(model)[member]
    left, right = st.columns([1, 2.2], gap="medium")
    with left:
        if source == DRAW:
            digit = canvas_digit(KEY)
        else:
            arrays = mnist()
            if arrays is None:
                return
            digit, _ = test_digit(arrays["test_images"], arrays["test_labels"])
    if digit is None:
        right.info("Draw a digit in the black box: every layer of the model appears below as soon as you lift the "
                   "pen.", icon=":material/draw:")
        return
    x = normalize(digit)
    with one_thread():
        shown = inside.layers(part, x)
        probs = inside.probabilities(model, part, shown, x)
    predicted = int(np.argmax(probs))
    picked = picked_unit(shown)
    stamp = stamp_of(np.ascontiguousarray(digit, dtype=np.float32).tobytes(), run.run_id.encode(), str(member).encode())
    st.markdown("**Layer by layer**, in the model's order. Click a channel (or a unit of a strip) to see what "
                "excites it. Each layer has its own colour scale: black is 0.")
    glossary.caption("unit")
    layer_grids(shown, stamp, picked, key=f"{KEY}_layers")
    if picked is not None:
        unit_panel(run, part, shown, picked, member)
    with right:
        st.markdown(f"### Predicted: {predicted}")
        whole = f" The whole ensemble says **{predicted}** ({probs[predicted]:.1%})." if name != "model" else ""
        st.caption(f"{md_text(run.name)} · {run.arch}, {probs[predicted]:.1%} sure." + (
            f" Its layers below are **{name}**'s." + whole if name != "model" else ""))
        neighbours_panel(run, model, x, predicted)


def page() -> None:
    st.title("Inside the network")
    st.caption("Watch a digit go through a model: what each layer makes of it, which test images excite a unit most, "
               "and which training digits the model thinks it resembles.")
    finished = finished_runs_or_stop("No trained model yet: train one on the **Train** page, then look inside it "
                                     "here.", needs="weights")
    if not require_mnist("Inside the network"):
        st.stop()
    asked_for_unusable(finished)
    run = pick_run("Model", by_meaning(finished), key=f"{KEY}_run", query_param="run", default=default_run(finished),
                   help="any finished run; by default a resnet (its reference run where there is one)")
    loaded = predictor(run)
    if loaded is None:
        st.stop()
    parts = inside.members(loaded.model)
    member = 0
    if len(parts) > 1:
        member = st.selectbox("Member", range(len(parts)), key=f"{KEY}_member",
                              format_func=lambda i: f"{parts[i][0]} ({type(parts[i][1]).__name__})",
                              help="an ensemble averages its members' probabilities; each member has its own layers")
        if member >= len(parts):
            member = 0
    templates(parts[member][1])
    asked = st.query_params.get("test")
    if asked is not None and st.session_state.get(f"{KEY}_source__from_url") != asked:
        st.session_state[f"{KEY}_source"] = TEST  # a link asked for a test image
        st.session_state[f"{KEY}_source__from_url"] = asked
    source = st.segmented_control("Input", (DRAW, TEST), default=DRAW, key=f"{KEY}_source") or DRAW
    if source == DRAW and "test" in st.query_params:
        del st.query_params["test"]
    st.fragment(panel)(run, member, source)


if __name__ == "__main__":  # Streamlit runs a page as __main__; tests import it
    page()
