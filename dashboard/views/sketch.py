"""Sketch: draw a digit, see the 28x28 image the models receive and what several models make
of it side by side; save drawings with their true label into a personal handwriting set and
see how each model does on it."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from core import handwriting, tables
from core.preprocess import ImageError, to_mnist
from dashboard import common

CANVAS = 280      # px, ten times MNIST's side
STROKE = 18       # px on the canvas: about MNIST's 2 px pen after scaling the digit to 20 px
MAX_MODELS = 6
PER_ROW = 3


def bump_canvas() -> None:
    """A new key gives a fresh, empty canvas (the Clear button)."""
    st.session_state["sketch_canvas_n"] = st.session_state.get("sketch_canvas_n", 0) + 1


def canvas_digit() -> np.ndarray | None:
    from streamlit_drawable_canvas import st_canvas  # only importable inside a running app
    result = st_canvas(stroke_width=STROKE, stroke_color="#FFFFFF", background_color="#000000",
                       height=CANVAS, width=CANVAS, drawing_mode="freedraw", return_image_data=True,
                       key=f"sketch_canvas_{st.session_state.get('sketch_canvas_n', 0)}")
    st.button("Clear", icon=":material/ink_eraser:", on_click=bump_canvas,
              help="start again (the canvas toolbar also has undo)")
    image = result.image_data
    if image is None:
        return None
    try:
        return to_mnist(image)
    except ImageError:
        return None


def choose_models(candidates: list) -> list:
    by_id = {r.run_id: r for r in candidates}
    best = [r.run_id for r in tables.best_run_per_arch(candidates)][:MAX_MODELS]
    chosen = st.multiselect("Models", list(by_id), default=best, key="sketch_models",
                            format_func=lambda i: common.run_label(by_id[i]), max_selections=MAX_MODELS)
    st.caption("By default the best finished run of each architecture.")
    return [by_id[i] for i in chosen]


def models_table(models: list) -> None:
    st.dataframe(pd.DataFrame({"model": [r.name for r in models], "arch": [r.arch for r in models],
                               "test accuracy": [r.test_acc for r in models]}),
                 hide_index=True, width="stretch", key="sketch_models_table",
                 column_config={"test accuracy": st.column_config.NumberColumn(format="%.2f%%")})


def predictions(digit: np.ndarray, models: list) -> None:
    for start in range(0, len(models), PER_ROW):
        columns = st.columns(PER_ROW)
        for column, run in zip(columns, models[start:start + PER_ROW]):
            model = common.predictor(run)
            if model is None:
                continue
            probs = model.probabilities(digit)[0]
            top = int(probs.argmax())
            with column, st.container(border=True):
                st.markdown(f"### Predicted: {top}")
                st.caption(f"{run.name} · {run.arch} · {probs[top]:.1%} sure")
                st.altair_chart(common.probability_chart(probs, height=150), width="stretch")


def save(digit: np.ndarray) -> None:
    """Button callback: store the drawing with its label, then start a fresh canvas."""
    label = st.session_state.get("sketch_label")
    try:
        new_id = handwriting.add_drawing(digit, int(label))
    except handwriting.HandwritingError as exc:
        st.session_state["sketch_message"] = ("error", str(exc))
        return
    st.session_state["sketch_message"] = ("success", f"Saved as a {label} (#{new_id}).")
    st.session_state["sketch_label"] = None
    bump_canvas()


def save_section(digit: np.ndarray | None) -> None:
    st.markdown("**Add it to your handwriting set**")
    label = st.selectbox("True label", range(10), index=None, placeholder="which digit did you draw?",
                         key="sketch_label")
    st.button("Save to my handwriting", icon=":material/save:", disabled=digit is None or label is None,
              on_click=save, args=(digit,), help="draw a digit and pick its true label first")
    kind, text = st.session_state.pop("sketch_message", (None, None))
    if kind == "error":
        st.error(text)
    elif kind == "success":
        st.success(text, icon=":material/save:")


def handwriting_section(models: list) -> None:
    st.subheader("Your handwriting", divider="gray")
    try:
        hw = handwriting.load_set()
    except handwriting.HandwritingError as exc:
        st.warning(str(exc))
        return
    if len(hw) == 0:
        st.info("Your handwriting set is empty: draw a digit, pick its true label and press "
                "**Save to my handwriting**. Then each model's accuracy on your own writing shows here.",
                icon=":material/lightbulb:")
        return
    counts = handwriting.label_counts(hw)
    st.caption(f"{len(hw)} drawing{'s' if len(hw) != 1 else ''} saved in `{handwriting.handwriting_dir()}` · "
               "per digit: "
               + " · ".join(f"{d}: {c}" for d, c in enumerate(counts)))
    scores = common.handwriting_scores(models, hw)
    if not scores.empty:
        st.dataframe(scores, hide_index=True, width="stretch", key="sketch_hw_scores", column_config={
            "model": "Model", "arch": "Arch", "correct": "Correct", "total": "Drawings",
            "accuracy": st.column_config.ProgressColumn("Accuracy on your handwriting", format="%.1f%%",
                                                        min_value=0, max_value=100),
            "test_acc": st.column_config.NumberColumn("MNIST test accuracy", format="%.2f%%")})
    with st.expander(f"Saved drawings ({len(hw)})"):
        newest = np.argsort(-hw.ids)[:60]
        common.digit_grid(hw.images[newest], [f"#{hw.ids[i]} · {hw.labels[i]}" for i in newest], size=56)
        doomed = st.multiselect("Drawings to delete", [int(i) for i in hw.ids[newest]],
                                format_func=lambda i: f"#{i}", key="sketch_delete")
        if st.button("Delete selected", icon=":material/delete:", disabled=not doomed):
            removed = handwriting.delete_drawings(doomed)
            st.toast(f"Deleted {removed} drawing{'s' if removed != 1 else ''}", icon=":material/delete:")
            st.rerun()


st.title("Sketch")
st.caption("Draw a digit with the mouse (or a finger): the models see it the way MNIST was made, "
           "scaled into a 20 px box and centred by its centre of mass in 28x28.")
runs = common.load_runs()
candidates = [r for r in runs if r.status == "finished" and r.has_weights]
if not candidates:
    common.no_runs_notice("No trained model yet: train one on the **Train** page (lenet takes a few "
                          "minutes on a CPU), then draw digits here and see what it makes of them.")
    st.stop()
common.show_run_warnings(runs)
draw_col, result_col = st.columns([1, 2.2], gap="large")
with draw_col:
    digit = canvas_digit()
    if digit is None:
        st.info("Draw a digit in the black box: predictions appear as soon as you lift the pen.",
                icon=":material/draw:")
    else:
        st.markdown("**What the models see** (28x28)")
        common.digit_image(digit, width=112)
    save_section(digit)
with result_col:
    models = choose_models(candidates)
    if not models:
        st.info("Pick at least one model above.", icon=":material/lightbulb:")
    elif digit is None:
        models_table(models)
    else:
        predictions(digit, models)
handwriting_section(models)
