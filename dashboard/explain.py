"""Saliency on the pages: for one image and one run, heatmaps of what pushed its model towards
the digit it predicts and towards the true digit (or one the user picks), by Captum's
Integrated Gradients (core.analysis.saliency). Mistakes, Evaluate's confusion cells, Label issues, the
embedding map and Sketch all show it through `saliency_panel` or `image_picker`.

A map costs 1.4 to 33 ms (p95) per image and model on this CPU (`python -m core bench --saliency`), so
maps are computed when shown and kept in memory (per run, weights file, image and digit), not
written to the run folder.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import streamlit as st

from core.analysis import saliency
from core.store.folder import WEIGHTS
from dashboard.inference import cached_predictor, predictor
from dashboard.notices import report
from dashboard.state import checkpoints_base, file_stamp
from dashboard.text import md_text
from dashboard.widgets import digit_image, enlarge, run_label

HOW = ("Integrated Gradients (Captum), from a blank page to the image: **red** pixels pushed the model "
       "towards the digit, **blue** pixels away from it; the image's ink is shaded grey.")


@st.cache_data(max_entries=512, show_spinner=False)
def _maps(base: str, run_id: str, weights: tuple | None, image: bytes, digits: tuple[int, ...]) -> np.ndarray:
    model = cached_predictor(base, run_id, weights).model
    return saliency.explain(model, np.frombuffer(image, np.float32).reshape(28, 28).copy(), digits)


SCALE, FRAME = 4, 2  # a heatmap is shown 4x, in a 2 px grey frame (its white would merge with the page)


def framed(rgb: np.ndarray) -> np.ndarray:
    return np.pad(rgb, ((FRAME, FRAME), (FRAME, FRAME), (0, 0)), constant_values=200)


def unit_image(image: np.ndarray) -> np.ndarray:
    """A 28x28 digit as float32 on [0, 1], from uint8 0..255 or floats already on [0, 1]."""
    image = np.asarray(image)
    return (image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32))


def saliency_panel(run, image: np.ndarray, *, true: int | None, key: str) -> None:
    """The image and two heatmaps for `run`'s model: its predicted digit, and the true digit
    (when it differs) or else a digit the user picks (by default the runner-up)."""
    model = predictor(run)
    if model is None:  # its weights no longer load: predictor said why
        return
    image = unit_image(image)
    probs = model.probabilities(image)[0]
    predicted = int(probs.argmax())
    runner_up = int(np.argsort(probs)[-2])
    default = true if true is not None and true != predicted else runner_up
    other = st.selectbox("Explain also the digit", range(10), index=default, key=f"{key}_{run.run_id}_digit",
                         help="by default the true digit when the model got it wrong, else its second choice")
    try:
        maps = _maps(checkpoints_base(), run.run_id, file_stamp(run.path / WEIGHTS), image.tobytes(),
                     (predicted, int(other)))
    except Exception as exc:  # noqa: BLE001 - report() keeps a bug's traceback
        report(exc, f"**{md_text(run.name)}**: no saliency map")
        return
    cols = st.columns(3)
    with cols[0]:
        digit_image(image, width=112, caption="the image" + (f" (true {true})" if true is not None else ""),
                    output_format="PNG")
    for col, amap, digit, what in ((cols[1], maps[0], predicted, "predicted"), (cols[2], maps[1], int(other), "")):
        with col:
            sure = f"{probs[digit]:.0%}" if probs[digit] >= 0.005 else "<1%"
            label = f"towards {digit} ({what + ', ' if what else ''}{sure})"
            st.image(framed(enlarge(saliency.heatmap(amap, image), SCALE)), caption=label,
                     width=SCALE * 28 + 2 * FRAME, output_format="PNG")
    st.caption(HOW)


def image_picker(runs: Sequence, images: np.ndarray, indices: Sequence[int], labels: Sequence[int], *, key: str,
                 title: str = "Why? The saliency of one of these images") -> None:
    """An expander to pick one of the test images shown above (and, given several runs, the run
    whose model explains it) and see `saliency_panel` for it, with a link to the image on Inside the
    network."""
    if not runs or len(indices) == 0:
        return
    with st.expander(title, icon=":material/visibility:"):
        by_index = {int(i): int(t) for i, t in zip(indices, labels)}
        left, right = st.columns(2)
        index = left.selectbox("Test image", list(by_index), key=f"{key}_image",
                               format_func=lambda i: f"#{i} (true {by_index[i]})")
        run = runs[0]
        if len(runs) > 1:
            by_id = {r.run_id: r for r in runs}
            run = by_id[right.selectbox("Model of the run", list(by_id), key=f"{key}_run",
                                        format_func=lambda i: run_label(by_id[i]))]
        saliency_panel(run, images[index], true=by_index[index], key=f"{key}_{index}")
        st.page_link("views/inside.py", label="Look inside: this image through the model, layer by layer",
                     icon=":material/layers:", query_params={"run": run.run_id, "test": str(index)})
