"""Mistakes: a run's wrong test predictions as a gallery (filter, sort, page), and for two runs
the images one gets wrong and the other right, with their confusion matrices side by side and
their difference."""
from __future__ import annotations

import altair as alt
import numpy as np
import streamlit as st

from core.analysis import predictions
from core.errors import LabError
from dashboard.charts import count_scale, diverging_scale
from dashboard.explain import image_picker
from dashboard.notadigit import ood_marks, ood_toggle
from dashboard.state import saved_predictions, test_images
from dashboard.text import md_text
from dashboard.widgets import by_meaning, digit_grid, finished_run_or_stop, pick_run, unique_names

PER_PAGE = 40
ORDER_LABELS = {"confident": "Most confident first", "unsure": "Least confident first",
                "index": "Test-set order"}
ANY = "any"


def gallery(frame, images, key: str, caption, run) -> None:
    """One page of a mistakes table as images, with a page picker under it and the saliency
    of `run`'s model for any image of the page."""
    if frame.empty:
        st.info("No test image matches.", icon=":material/check_circle:")
        return
    page_key = f"{key}_page"
    _, pages = predictions.page_slice(len(frame), 1, PER_PAGE)
    if st.session_state.get(page_key, 1) > pages:
        st.session_state[page_key] = 1
    window, _ = predictions.page_slice(len(frame), st.session_state.get(page_key, 1), PER_PAGE)
    shown = frame.iloc[window]
    marks = ood_marks(run, images, shown["index"].to_numpy()) if st.session_state.get(f"{key}_ood") else {}
    digit_grid(images[shown["index"].to_numpy()],
               [caption(row) + marks.get(int(row.index), "") for row in shown.itertuples()])
    left, right = st.columns([1, 3], vertical_alignment="center")
    left.number_input("Page", min_value=1, max_value=pages, step=1, key=page_key)
    right.caption(f"Images {window.start + 1}–{window.stop} of {len(frame):,} · {pages} page"
                  f"{'s' if pages != 1 else ''} of {PER_PAGE}")
    image_picker([run], images, shown["index"].to_numpy(), shown["label"].to_numpy(), key=f"{key}_why")


def one_run(run, preds, images) -> None:
    wrong = int((preds["labels"] != preds["predicted"]).sum())
    m = st.columns(3)
    m[0].metric("Mistakes", f"{wrong:,}")
    m[1].metric("Test images", f"{len(preds['labels']):,}")
    m[2].metric("Error rate", f"{100 * wrong / max(1, len(preds['labels'])):.2f}%")
    f = st.columns(3)
    true = f[0].selectbox("True class", [ANY, *range(10)], key="mis_true")
    predicted = f[1].selectbox("Predicted class", [ANY, *range(10)], key="mis_predicted")
    order = f[2].selectbox("Sort", list(ORDER_LABELS), format_func=ORDER_LABELS.get, key="mis_order")
    frame = predictions.mistakes(preds, true=None if true == ANY else int(true),
                             predicted=None if predicted == ANY else int(predicted), order=order)
    if true != ANY or predicted != ANY:
        st.caption(f"{len(frame):,} mistakes match the filter.")
    ood_toggle(run, "mis")
    gallery(frame, images, "mis", lambda r: f"true {r.label} → {r.predicted} · {r.confidence:.0%}", run)


def two_runs(run_a, preds_a, finished, images) -> None:
    st.subheader("Against another run", divider="gray")
    others = [r for r in finished if r.run_id != run_a.run_id]
    if not others:
        st.info("Train a second model to see which images one run gets wrong and the other right.",
                icon=":material/lightbulb:")
        return
    run_b = pick_run("Compare with", by_meaning(others), key="mis_other")  # the best other run first
    preds_b = saved_predictions(run_b)
    if preds_b is None:
        return
    try:
        a_only, b_only = predictions.disagreements(preds_a, preds_b)
    except LabError as exc:
        st.warning(md_text(exc), icon=":material/warning:")
        return
    names = unique_names([run_a, run_b])
    name_a, name_b = names[run_a.run_id], names[run_b.run_id]
    matrices(preds_a, preds_b, name_a, name_b)
    text_a, text_b = md_text(name_a), md_text(name_b)  # tab labels are Markdown
    tabs = st.tabs([f"{text_a} wrong, {text_b} right ({len(a_only):,})",
                    f"{text_b} wrong, {text_a} right ({len(b_only):,})"])
    for tab, indices, wrong, key, run in ((tabs[0], a_only, preds_a, "mis_a", run_a),
                                          (tabs[1], b_only, preds_b, "mis_b", run_b)):
        with tab:
            frame = predictions.mistakes(wrong, order="confident")
            frame = frame[frame["index"].isin(indices)].reset_index(drop=True)
            gallery(frame, images, key,
                    lambda r: f"true {r.label} → {r.predicted} · {r.confidence:.0%}", run)


def matrix_chart(frame, value: str, title: str, scale: alt.Scale, text: str):
    base = alt.Chart(frame, title=title).encode(
        x=alt.X("predicted:O", title="predicted", axis=alt.Axis(labelAngle=0, orient="top")),
        y=alt.Y("true:O", title="true"))
    rects = base.mark_rect().encode(color=alt.Color(f"{value}:Q", scale=scale, legend=None),
                                    tooltip=["true:O", "predicted:O", alt.Tooltip(f"{text}:Q", title="images")])
    labels = base.mark_text(fontSize=10).encode(text=f"{text}:Q")
    return (rects + labels).properties(width=250, height=250)


def matrices(preds_a, preds_b, name_a: str, name_b: str) -> None:
    """The two confusion matrices side by side and their difference (B - A). The names title
    the charts as they are and go into the Markdown around them through md_text."""
    cm_a, cm_b, diff = predictions.compared_confusions(preds_a, preds_b)
    counts = count_scale(max(int(cm_a.max()), int(cm_b.max())))
    a, b = (predictions.confusion_table(cm) for cm in (cm_a, cm_b))
    change = predictions.difference_table(diff)
    # green: better in B (fewer mistakes, more hits), red: worse; zero is white
    limit = max(1, int(abs(diff).max()))
    diverging = diverging_scale(limit)
    text_a, text_b = md_text(name_a), md_text(name_b)
    st.markdown(f"**Confusion matrices side by side**, and what changes from **{text_a}** to **{text_b}**: "
                "green cells are better in the second run (fewer of that mistake, or more right), red worse.")
    st.altair_chart(alt.hconcat(matrix_chart(a, "count", name_a, counts, "count"),
                                matrix_chart(b, "count", name_b, counts, "count"),
                                matrix_chart(change, "better", f"{name_b} − {name_a}", diverging, "change"))
                    .resolve_scale(color="independent"), key="mis_matrices")
    off = ~np.eye(10, dtype=bool)
    st.caption(f"Mistakes: {int(cm_a[off].sum()):,} for {text_a}, {int(cm_b[off].sum()):,} for {text_b} "
               f"({int(diff[off].sum()):+,}).")


def page() -> None:
    """The mistakes page, as Streamlit runs it (dashboard/app.py routes here)."""
    st.title("Mistakes")
    st.caption("Every test image a run gets wrong, with what it said and how sure it was.")
    finished, run, preds = finished_run_or_stop(
        "No finished run yet, so no mistakes to look at: train a model on the **Train** page and its "
        "wrong test predictions appear here.", key="mis_run", needs_mnist="The gallery")
    images = test_images()
    if images is None:
        st.stop()
    one_run(run, preds, images)
    two_runs(run, preds, finished, images)


if __name__ == "__main__":  # Streamlit runs a page as __main__; tests import it
    page()
