"""Evaluate: one finished run's test accuracy with its interval, confusion matrix (click a cell to
see its test images), per-class precision, recall and F1, and calibration (reliability diagram,
ECE, a temperature fitted on the validation split), all from the run's saved test predictions."""
from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from core.analysis import calibration, label_issues, predictions
from core.analysis.ensemble import combine, create_ensemble
from core.errors import LabError
from core.export.graph import bundle
from core.stats import wilson_percent
from dashboard import access, glossary
from dashboard.charts import count_scale, fit_width, reliability_chart
from dashboard.explain import image_picker
from dashboard.notices import report
from dashboard.state import EXPORTS, calibration_kept, checkpoints_base, keep_export, test_images
from dashboard.text import md_text
from dashboard.widgets import CLEAN_HELP, digit_grid, finished_run_or_stop, run_label

CELL_IMAGES = 48  # images shown for a selected cell


def sync_from_chart() -> None:
    """A click on the heatmap sets the true/predicted selectboxes (one source of truth)."""
    state = st.session_state.get("eval_heatmap")
    points = (state or {}).get("selection", {}).get("cell") or []
    if points:
        st.session_state["eval_true"] = int(points[0]["true"])
        st.session_state["eval_predicted"] = int(points[0]["predicted"])


def heatmap(cm, normalised: bool) -> None:
    frame = predictions.confusion_table(cm)
    frame["shown"] = frame["share"] * 100 if normalised else frame["count"]
    frame["text"] = [f"{v:.1f}" if normalised else f"{int(v)}" for v in frame["shown"]]
    frame["selected"] = ((frame["true"] == st.session_state["eval_true"])
                         & (frame["predicted"] == st.session_state["eval_predicted"]))
    cell = alt.selection_point(fields=["true", "predicted"], name="cell", on="click", clear=False)
    # Colour on a log-like scale that starts at white: the diagonal (~1000) would otherwise wash out
    # every mistake, and a cell with no image is white, apart from one with a few.
    colour = alt.Color("shown:Q", title="% of row" if normalised else "images",
                       scale=count_scale(100 if normalised else frame["shown"].max()),
                       legend=alt.Legend(orient="right", gradientLength=200))
    base = alt.Chart(frame).encode(
        x=alt.X("predicted:O", title="predicted", axis=alt.Axis(labelAngle=0, orient="top")),
        y=alt.Y("true:O", title="true"))
    rects = base.mark_rect(stroke="#f58518").encode(
        color=colour,
        strokeWidth=alt.condition(alt.datum.selected, alt.value(3), alt.value(0)),
        tooltip=[alt.Tooltip("true:O"), alt.Tooltip("predicted:O"), alt.Tooltip("count:Q", title="images"),
                 alt.Tooltip("share:Q", title="share of true class", format=".2%")],
    ).add_params(cell)
    threshold = float(frame["shown"].max()) * 0.3
    text = base.mark_text(fontSize=12).encode(
        text="text:N",
        color=alt.condition(alt.datum.shown > threshold, alt.value("white"), alt.value("#333")))
    chart = fit_width((rects + text).properties(height=420))
    st.altair_chart(chart, key="eval_heatmap", on_select=sync_from_chart, selection_mode="cell", width="stretch")


def cell_images(run, preds, true: int, predicted: int) -> None:
    examples = predictions.cell_examples(preds, true, predicted)
    kind = "correct" if true == predicted else "mistaken"
    st.markdown(f"**{len(examples):,}** test images of a **{true}** predicted as **{predicted}** "
                f"({kind}); {'least' if true == predicted else 'most'} confident first.")
    if true == predicted:
        examples = predictions.cell_examples(preds, true, predicted, order="unsure")
    shown = examples.head(CELL_IMAGES)
    images = test_images()
    if images is None:
        return
    digit_grid(images[shown["index"].to_numpy()],
               [f"#{i} · {c:.0%}" for i, c in zip(shown["index"], shown["confidence"])],
               size=64, empty="No test image falls in this cell.")
    image_picker([run], images, shown["index"].to_numpy(), shown["label"].to_numpy(), key="ev_why")
    if len(examples) > CELL_IMAGES:
        st.caption(f"Showing {CELL_IMAGES} of {len(examples):,}; the Mistakes page pages through all.")


def save_ensemble(members: list[str]) -> None:
    """Button callback: save the chosen runs as an ensemble run and open it on this page."""
    if not access.allowed("save a run"):
        return
    name = (st.session_state.get("eval_ens_name") or "").strip() or None
    try:
        new_id = create_ensemble(members, name=name, root=checkpoints_base())
    except LabError as exc:
        st.session_state["eval_ens_message"] = ("error", str(exc))
        return
    st.session_state["eval_ens_message"] = ("success", new_id)
    st.session_state["eval_run"] = new_id  # callbacks run before the page: the picker shows it
    st.session_state["eval_ens_members"] = []


def ensemble_section(finished: list) -> None:
    """Pick finished runs, see the mean of their probabilities scored on the test set against
    each member, and save it as a run (kind ensemble) that every page treats like any other."""
    with st.expander("Combine runs into an ensemble", icon=":material/join:",
                     expanded=bool(st.session_state.get("eval_ens_members") or st.session_state.get("eval_ens_message"))):
        st.caption("An ensemble without training: the mean of the chosen runs' test probabilities, "
                   "image by image. Saved, it is a run like any other (Compare, Mistakes, Sketch).")
        message = st.session_state.pop("eval_ens_message", None)
        if message and message[0] == "error":
            st.error(f"Could not save the ensemble: {md_text(message[1])}", icon=":material/error:")
        elif message:
            st.success(f"Saved as run `{message[1]}`: it is shown above.", icon=":material/check_circle:")
        by_id = {r.run_id: r for r in finished}
        st.session_state["eval_ens_members"] = [i for i in st.session_state.get("eval_ens_members", []) if i in by_id]
        chosen = st.multiselect("Runs to combine", list(by_id), key="eval_ens_members",
                                format_func=lambda i: run_label(by_id[i]),
                                placeholder="two or more finished runs")
        if len(chosen) < 2:
            st.info("Pick two or more finished runs to see their ensemble's test accuracy.")
            return
        try:
            combined = combine(chosen, checkpoints_base())
        except LabError as exc:
            report(exc, "These runs cannot be combined", error=True)
            return
        members = combined.member_accuracies()
        best = max(members.values())
        rows = [{"run": run_label(member), "test accuracy": members[member.run_id],
                 "mistakes": int((p["predicted"] != p["labels"]).sum())}
                for member, p in zip(combined.members, combined.member_predictions)]
        rows.append({"run": "ensemble (mean of the probabilities)", "test accuracy": combined.accuracy,
                     "mistakes": int((combined.predicted != combined.labels).sum())})
        st.metric("Ensemble test accuracy", f"{combined.accuracy:.2f}%",
                  delta=f"{combined.accuracy - best:+.2f} points vs the best member")
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="eval_ens_table",
                     column_config={"test accuracy": st.column_config.NumberColumn(format="%.2f%%")})
        st.text_input("Name", key="eval_ens_name", max_chars=80,
                      placeholder="default: ensemble: <the members' names>")
        st.button("Save as a run", icon=":material/save:", key="eval_ens_save", on_click=save_ensemble,
                  args=(list(chosen),), disabled=access.locked(),
                  help=access.LOCKED_HELP if access.locked() else "writes a new run folder: its weights are the "
                  "members', its predictions the mean of theirs")


INTERVAL_HELP = ("the share of test images the run gets right; the caption below gives its 95% Wilson interval, "
                 "where the accuracy on another test set like this one would likely fall")


def calibration_section(run, preds) -> None:
    """ECE and reliability of the saved test probabilities; the temperature fitted on the run's own
    validation split, kept in its folder, and the same after it."""
    st.subheader("Calibration", divider="gray")
    st.caption(f"Does a confidence of 90% mean right 90% of the time? Test images binned by the top "
               f"probability ({calibration.BINS} equal bins); ECE is the gap between confidence and accuracy, "
               "weighted by the bins' sizes. Temperature scaling divides the logits by one number fitted on "
               "the run's validation images (never the test set).")
    labels, probs = preds["labels"], preds["probabilities"].astype("float64")
    before = calibration.ece(probs, labels)
    kept, damage = calibration_kept(run)
    if damage:
        st.warning(f"The kept calibration cannot be used: {md_text(damage)}. Fit it again below.", icon=":material/warning:")
    m = st.columns(3)
    m[0].metric("ECE of the test probabilities", f"{before:.4f}", help=glossary.help_text("ece"))
    curves = {"as trained": calibration.reliability(probs, labels)}
    if kept is not None:
        m[1].metric("Temperature", f"{kept.temperature:.3f}",
                    help=glossary.help_text("temperature", f"fitted on the {kept.fitted_on.get('images', 0):,} images "
                                                           "of the run's validation split"))
        m[2].metric("ECE after temperature scaling", f"{kept.ece_calibrated:.4f}",
                    delta=f"{kept.ece_calibrated - before:+.4f}", delta_color="inverse")
        curves[f"scaled by T = {kept.temperature:.3f}"] = calibration.reliability(
            calibration.scaled(probs, kept.temperature), labels)
    st.altair_chart(reliability_chart(curves), width="stretch")
    glossary.captions("ece", "temperature")
    if kept is None:
        if st.button("Fit a temperature on the validation split", icon=":material/thermostat:", key="eval_calibrate",
                     disabled=run.status != "finished" or access.locked(),
                     help=access.LOCKED_HELP if access.locked() else "a few seconds: one pass over the validation "
                     "images") and access.allowed("fit a temperature"):
            try:
                with st.spinner("Fitting on the validation split…"):
                    calibration.calibrate(run.run_id, checkpoints_base())
            except LabError as exc:
                report(exc)
            else:
                st.rerun()
    else:
        side = "under" if kept.temperature < 1 else "over"
        st.caption(f"T = {kept.temperature:.3f} < 1 sharpens, > 1 softens: this run was {side}-confident. "
                   "Sketch and `python -m core predict --calibrated` can show its scaled confidences.")


def export_section(run) -> None:
    """The run as one ONNX file that runs without the lab (ONNX Runtime, onnxruntime-web), with its card."""
    st.subheader("Take the model with you", divider="gray")
    st.caption("One ONNX graph: float32 pixels (N, 1, 28, 28) in [0, 1], white ink on black, in; probabilities "
               "(N, 10) out; it normalises the pixels itself. Its model card (Markdown and JSON) says how it was "
               "trained and how well it does. Before it is offered, the file is run in ONNX Runtime on the 10,000 "
               "test images and checked against this run's own predictions.")
    key = (checkpoints_base(), run.run_id, run.metrics.get("finished"))
    ready = EXPORTS.get(key)  # one export per run for every session: a visitor downloads the owner's
    if ready is None:
        if access.locked():
            st.caption(":material/lock: Not exported yet: exporting is the lab's owner's (it runs the model on "
                       "the 10,000 test images); once it is done, it can be downloaded here.")
            return
        if st.button("Export as ONNX", icon=":material/deployed_code:", key="eval_export_button",
                     disabled=run.status != "finished", help="seconds: the export, then the check in ONNX Runtime") \
                and access.allowed("export a model"):
            try:
                with st.spinner("Exporting and checking in ONNX Runtime…"):
                    name, data, done = bundle(run.run_id, checkpoints_base())
            except LabError as exc:
                report(exc)
            else:
                keep_export(key, {"name": name, "data": data, "card": done.card, "bytes": done.bytes})
                st.rerun()
        return
    verified = ready["card"].get("verified") or {}
    st.download_button("Download as ONNX (with its model card)", ready["data"], file_name=ready["name"],
                       mime="application/zip", icon=":material/download:", key="eval_export_download", on_click="ignore")
    st.caption(f"{ready['name']}: the model ({ready['bytes']:,} bytes) and its card. Checked in "
               f"{verified.get('runtime', 'ONNX Runtime')}: {verified.get('digits_as_saved', 0):,} of "
               f"{verified.get('images', 0):,} test digits as this run predicted them; probabilities within "
               f"{verified.get('max_probability_difference', float('nan')):.1e}.")


def page() -> None:
    """The evaluate page, as Streamlit runs it (dashboard/app.py routes here)."""
    st.title("Evaluate")
    st.caption("The test set through one finished run: where it goes wrong and for which digits.")
    finished, run, preds = finished_run_or_stop(
        "No finished run to evaluate yet: train a model on the **Train** page; "
        "when it finishes, its confusion matrix and per-class scores appear here.", key="eval_run")
    cm = predictions.prediction_confusion(preds)
    correct = int(cm.trace())
    total = int(cm.sum())
    m = st.columns(5)
    low, high = wilson_percent(correct, total)
    m[0].metric("Test accuracy", f"{100 * correct / total:.2f}%", help=INTERVAL_HELP)
    _, cleaned = label_issues.accuracies(preds)
    m[1].metric("Clean-label accuracy", f"{cleaned:.2f}%", help=CLEAN_HELP)
    m[2].metric("Test images", f"{total:,}")
    m[3].metric("Mistakes", f"{total - correct:,}")
    parameters = run.metrics.get("parameters")
    m[4].metric("Parameters", f"{parameters:,}" if isinstance(parameters, int) else "–")
    st.caption(f"95% interval of the test accuracy (Wilson): {low:.2f}–{high:.2f}%, from {correct:,} of "
               f"{total:,} images right. {glossary.plain('interval')}")

    if st.session_state.get("eval_cell_run") != run.run_id:  # a new run starts on its top mistake
        st.session_state["eval_true"], st.session_state["eval_predicted"] = predictions.top_confusion(cm)
        st.session_state["eval_cell_run"] = run.run_id
    st.session_state.setdefault("eval_true", 0)
    st.session_state.setdefault("eval_predicted", 0)

    matrix_col, detail_col = st.columns([1.1, 1], gap="large")
    with matrix_col:
        st.subheader("Confusion matrix", divider="gray")
        normalised = st.toggle("Row-normalised (% of each true digit)", key="eval_normalised")
        heatmap(cm, normalised)
        with st.expander("As a table"):
            table = predictions.confusion_table(cm).pivot(index="true", columns="predicted", values="count")
            table.index.name, table.columns.name = "true \\ predicted", None
            table.columns = [str(c) for c in table.columns]
            st.dataframe(table, key="eval_cm_table")
            st.caption(f"{total:,} test images in all.")
    with detail_col:
        st.subheader("Images behind a cell", divider="gray")
        st.caption("Click a cell of the matrix, or choose one here.")
        a, b = st.columns(2)
        true = a.selectbox("True digit", range(10), key="eval_true")
        predicted = b.selectbox("Predicted digit", range(10), key="eval_predicted")
        cell_images(run, preds, int(true), int(predicted))

    st.subheader("Per-class scores", divider="gray")
    scores = predictions.per_class_table(cm)
    st.dataframe(scores, hide_index=True, width="stretch", key="eval_scores", column_config={
        "digit": st.column_config.NumberColumn("Digit"),
        "precision": st.column_config.ProgressColumn("Precision", format="percent", min_value=0, max_value=1),
        "recall": st.column_config.ProgressColumn("Recall", format="percent", min_value=0, max_value=1),
        "f1": st.column_config.ProgressColumn("F1", format="percent", min_value=0, max_value=1),
        "support": st.column_config.NumberColumn("Support (test images)")})

    calibration_section(run, preds)
    export_section(run)
    ensemble_section(finished)


if __name__ == "__main__":  # Streamlit runs a page as __main__; tests import it
    page()
