"""Embedding map: where a run's model puts each of the 10,000 test images, its penultimate
features projected to 2-D (core.analysis.embedding), coloured by the true digit, its mistakes ringed in black and the
dataset's confirmed label errors marked by black diamonds. Drag a box to see the images inside it; Shift-drag
pans, the wheel zooms, a double click resets the view.

The map is computed once per run and projection and kept in the run folder; the reference
runs ship theirs, so it opens without a wait.
"""
from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from core.analysis import embedding as maps
from core.errors import LabError
from core.analysis.label_issues import confirmed_indices
from dashboard import access
from dashboard.charts import fit_width
from dashboard.explain import image_picker
from dashboard.notadigit import ood_marks, ood_toggle
from dashboard.notices import report, require_mnist
from dashboard.state import checkpoints_base, test_images
from dashboard.text import md_text
from dashboard.widgets import by_meaning, digit_grid, finished_runs_or_stop, pick_run

RING_NAMES = {"mistake": "the run's mistake", "label": "label error (confirmed)"}
SHOWN = 60  # images of a selection shown at once
# measured on this 2-core CPU (`python -m core bench --embedding`, 2026-11-24, docs/failures.md):
# UMAP 7-14 s a map, 35 s for a process's first (numba compiles it); t-SNE 24-31 s; PCA under 7 s
EXPECTED = {"umap": "about 10-35 s", "tsne": "about 25-30 s", "pca": "a few seconds"}


def points(emb: maps.Embedding) -> pd.DataFrame:
    """One row per test image: x, y, index, true digit, prediction and what ring it gets."""
    ring = np.where(emb.mistakes, "mistake", "")
    ring[confirmed_indices()] = "label"
    return pd.DataFrame({"x": emb.xy[:, 0], "y": emb.xy[:, 1], "index": np.arange(len(emb.xy)),
                         "digit": emb.labels.astype(str), "predicted": emb.predicted, "ring": ring})


def chart(frame: pd.DataFrame) -> alt.LayerChart:
    brush = alt.selection_interval(name="brush", on="[pointerdown[!event.shiftKey], window:pointerup] > "
                                                   "window:pointermove!", zoom=False)
    view = alt.selection_interval(bind="scales", translate="[pointerdown[event.shiftKey], window:pointerup] > "
                                                           "window:pointermove!", zoom="wheel!")
    tooltip = [alt.Tooltip("index:Q", title="test image"), alt.Tooltip("digit:N", title="true digit"),
               alt.Tooltip("predicted:Q", title="predicted")]
    x = alt.X("x:Q", title=None, axis=alt.Axis(labels=False, ticks=False))
    y = alt.Y("y:Q", title=None, axis=alt.Axis(labels=False, ticks=False))
    dots = alt.Chart(frame).mark_circle(size=14, opacity=0.75).encode(
        x=x, y=y, tooltip=tooltip,
        color=alt.Color("digit:N", title="true digit", scale=alt.Scale(scheme="category10"),
                        sort=[str(d) for d in range(10)], legend=alt.Legend(orient="right")),
    ).add_params(brush, view)
    # Mistakes as black rings, confirmed label errors as black diamonds: no digit is drawn black
    # or as a diamond, so neither mark reads as a digit's colour.
    marked = frame[frame["ring"] != ""].assign(mark=lambda f: f["ring"].map(RING_NAMES))
    rings = alt.Chart(marked).mark_point(filled=False, color="#000000").encode(
        x=x, y=y, tooltip=tooltip + [alt.Tooltip("mark:N", title="marked as")],
        shape=alt.Shape("mark:N", title="marked", sort=list(RING_NAMES.values()),
                        scale=alt.Scale(domain=list(RING_NAMES.values()), range=["circle", "diamond"]),
                        legend=alt.Legend(orient="right")),
        size=alt.Size("mark:N", scale=alt.Scale(domain=list(RING_NAMES.values()), range=[70, 200]), legend=None),
        strokeWidth=alt.StrokeWidth("mark:N", scale=alt.Scale(domain=list(RING_NAMES.values()), range=[1.2, 2.2]),
                                    legend=None))
    return fit_width(alt.layer(dots, rings).properties(height=560), svg=False)


def dragged_box(event) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The box dragged on the map, ((x0, x1), (y0, y1)) in the map's units; None when there is none."""
    box = (getattr(getattr(event, "selection", None), "brush", None) or {}) if event else {}
    if len(box.get("x") or ()) != 2 or len(box.get("y") or ()) != 2:
        return None
    return tuple(sorted(map(float, box["x"]))), tuple(sorted(map(float, box["y"])))


def page() -> None:
    """The embedding page, as Streamlit runs it (dashboard/app.py routes here)."""
    st.title("Embedding map")
    st.caption("Each dot is a test image, placed by what the model's last hidden layer makes of it (its "
               "penultimate features, projected to 2-D); colour is the true digit. Images the model gets wrong "
               "are ringed in black, the 15 test labels people confirmed wrong marked by black diamonds.")
    candidates = finished_runs_or_stop("No finished run yet: train one on the **Train** page and map its test "
                                       "images here.", needs="weights")
    if not require_mnist("The embedding map"):
        st.stop()
    left, right = st.columns([2, 1])
    with left:
        run = pick_run("Run", by_meaning(candidates), key="emb_run", query_param="run")
    method = right.segmented_control("Projection", list(maps.METHODS), default="umap", key="emb_method",
                                     format_func=lambda m: maps.METHODS[m].split(" (")[0],
                                     help="UMAP keeps neighbours together and clusters apart; t-SNE similar; PCA is "
                                          "linear and shows the features' main directions") or "umap"
    emb = maps.cached(run.run_id, method, checkpoints_base())
    if emb is None:
        notice = st.empty()  # the offer goes once the map is there
        with notice.container():
            st.info(f"The {maps.METHODS[method]} map of **{md_text(run.name)}** is not computed yet: "
                    f"{EXPECTED[method]} on a CPU, once; it is kept in the run folder.",
                    icon=":material/scatter_plot:")
            clicked = st.button("Compute the map", icon=":material/play_arrow:", key="emb_compute",
                                disabled=access.locked(), help=access.LOCKED_HELP if access.locked() else None)
        if not clicked or not access.allowed("compute an embedding map"):
            st.stop()
        stages = st.empty()

        def stage(line: str) -> None:  # called between the stages, in this script's thread: the latest shows
            stages.caption(line)
        try:
            with st.spinner(f"Computing the map of 10,000 test images ({EXPECTED[method]} on an idle CPU; longer "
                            "when the machine is busy)…", show_time=True):
                emb = maps.embedding(run.run_id, method, checkpoints_base(), report=stage)
        except LabError as exc:
            report(exc)
            st.stop()
        stages.empty()
        notice.empty()
        if emb.not_kept:
            st.warning(f"Map computed in {emb.seconds:.1f} s, but it could not be kept in the run folder "
                       f"({emb.not_kept}): it will be computed again next time.", icon=":material/warning:")
        else:
            st.toast(f"Map computed in {emb.seconds:.1f} s and kept in the run folder", icon=":material/check:")

    frame = points(emb)
    m = st.columns(3)
    m[0].metric("Test images", f"{len(frame):,}")
    m[1].metric("Mistakes (black rings)", f"{int(emb.mistakes.sum()):,}")
    m[2].metric("Confirmed label errors (black diamonds)", f"{int((frame['ring'] == 'label').sum())}")
    event = st.altair_chart(chart(frame), key=f"emb_chart_{run.run_id}_{method}", on_select="rerun",
                            selection_mode=["brush"], width="stretch")
    st.caption("Drag a box to see its images · Shift-drag to pan · wheel to zoom · double-click to reset · "
               f"computed in {emb.seconds:.1f} s ({maps.METHODS[method]})")
    box = dragged_box(event)
    if box is None:
        st.info("Drag a box over a region of the map to see its images.", icon=":material/select:")
        st.stop()
    images = test_images()
    if images is None:
        st.stop()
    chosen = maps.in_box(emb, *box)
    chosen = chosen[np.argsort(~emb.mistakes[chosen], kind="stable")]  # the run's mistakes first
    (x0, x1), (y0, y1) = box
    st.markdown(f"**{len(chosen):,} images selected**, {int(emb.mistakes[chosen].sum()):,} of them mistakes"
                + (f"; the first {SHOWN} shown, mistakes first" if len(chosen) > SHOWN else "")
                + f" · x {x0:.3f} to {x1:.3f}, y {y0:.3f} to {y1:.3f}")
    shown = chosen[:SHOWN]
    ood_toggle(run, "emb")
    marks = ood_marks(run, images, shown) if st.session_state.get("emb_ood") and len(shown) else {}
    digit_grid(images[shown], [f"#{i} · {emb.labels[i]} → {emb.predicted[i]}" + marks.get(int(i), "") for i in shown],
               size=64, empty="No test image inside the box.")
    image_picker([run], images, shown, emb.labels[shown], key="emb_why")


if __name__ == "__main__":  # Streamlit runs a page as __main__; tests import it
    page()
