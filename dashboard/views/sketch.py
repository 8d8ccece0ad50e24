"""Sketch: draw a digit, see the 28x28 image the models receive and what several models make
of it side by side; save drawings with their true label into a personal handwriting set and
see how each model does on it.

Speed (issue 11, scripts/bench_sketch.py): a stroke reruns only `sketch_panel`, a fragment
holding the canvas, the save form and the prediction cards; the run listing, the model picker
and the handwriting section run again only when the page does (a new model selection, a saved
or deleted drawing). The models stay loaded (dashboard.inference.predictor), the drawing is
normalised once for all of them, and the cards are one HTML element, the probabilities drawn as bars in it (an
Altair chart per card cost about 20 ms of Python and a Vega render in the browser each, and each
Streamlit element is a message the browser renders on its own).

The pad is dashboard.pad's, shared with Inside the network: it sends the drawing the moment the
pen is lifted.
"""
from __future__ import annotations

import hashlib
import html
import time

import numpy as np
import pandas as pd
import streamlit as st
import torch

from core.analysis import attacks
from core.data import handwriting
from core.store import tables
from core.models import list_models
from dashboard import access
from dashboard.explain import saliency_panel
from dashboard.inference import detector, freeze_heap, handwriting_scores, predictor, probabilities
from dashboard import glossary
from dashboard.notadigit import check_weakness, ood_section
from dashboard.pad import bump_canvas, canvas_digit, decode_drawing  # noqa: F401 - decode_drawing: the tests read drawings as Sketch does
from dashboard.state import kept_calibration
from dashboard.widgets import digit_grid, digit_image, finished_runs_or_stop, run_label

MAX_MODELS = len(list_models())  # one of each architecture
TOP_COLOUR, BAR_COLOUR = "#f58518", "#4c78a8"  # the predicted digit's probability bar, and the other nine


def choose_models(candidates: list) -> list:
    """The models to ask, in a collapsed expander (nine tags would push the pad below a phone's
    fold; each model's row names it anyway); by default the best finished run of each architecture."""
    by_id = {r.run_id: r for r in candidates}
    best = [r.run_id for r in tables.best_run_per_arch(candidates)][:MAX_MODELS]
    with st.expander("Models asked (by default the best of each architecture)", icon=":material/tune:"):
        chosen = st.multiselect("Models", list(by_id), default=best, key="sketch_models",
                                format_func=lambda i: run_label(by_id[i]), max_selections=MAX_MODELS)
        st.caption("By default the best finished run of each architecture.")
        st.toggle("Calibrated confidences", key="sketch_calibrated",
                  help=glossary.help_text("temperature", "each model's probabilities scaled by the temperature fitted "
                                          "on its validation split (Evaluate fits one); a model without a fit shows "
                                          "its own and says so"))
    return [by_id[i] for i in chosen]


def models_table(models: list) -> None:
    intervals = [r.test_ci for r in models]
    st.dataframe(pd.DataFrame({"model": [r.name for r in models], "arch": [r.arch for r in models],
                               "test accuracy": [r.test_acc for r in models],
                               "95% CI": [f"{c[0]:.2f}–{c[1]:.2f}%" if c else None for c in intervals]}),
                 hide_index=True, width="stretch", key="sketch_models_table",
                 column_config={"test accuracy": st.column_config.NumberColumn(format="%.2f%%"),
                                "95% CI": st.column_config.TextColumn(
                                    help="the 95% Wilson interval of the test accuracy")})


# The rows' look, sent once with them (inline styles on every bar made the cards' message 29 KB).
# A row per model, as compact as a phone needs: the verdict and the model on the left, its three
# likeliest digits on the right (on a phone, side by side under them).
CARDS_CSS = """<style>
.sk-cards { display: flex; flex-direction: column; gap: 0.4rem; }
.sk-card { display: flex; flex-wrap: wrap; align-items: center; gap: 0.1rem 1rem;
  border: 1px solid rgba(128, 128, 128, 0.3); border-radius: 0.5rem; padding: 0.35rem 0.7rem; }
.sk-who { flex: 1 1 12rem; min-width: 0; }
.sk-head { display: flex; align-items: center; gap: 0.4rem; }
.sk-card h3 { margin: 0; padding: 0; font-size: 1.15rem; line-height: 1.4; }
.sk-card p { margin: 0; font-size: 0.8rem; opacity: 0.7; overflow-wrap: anywhere; }
.sk-flag { padding: 0 0.4rem; border-radius: 0.6rem; font-size: 0.75rem;
  font-weight: 400; vertical-align: middle; background: rgba(255, 165, 0, 0.18); color: #b45309; cursor: help; }
.sk-tops { flex: 0 1 11rem; min-width: 9rem; }
.sk-bar { display: flex; align-items: center; gap: 0.4em; font-size: 0.78rem; line-height: 1.3; }
.sk-bar > :first-child { width: 0.7em; }
.sk-bar > :last-child { width: 3.4em; text-align: right; }
.sk-bar i { flex: 1; height: 0.6em; background: rgba(128, 128, 128, 0.15); border-radius: 2px; }
.sk-bar b { display: block; height: 100%%; background: %s; border-radius: 2px; }
.sk-bar.top { font-weight: 700; }
.sk-bar.top b { background: %s; }
.sk-ood { border-color: #d62728; }
.sk-ood h3 { color: #d62728; }
@media (max-width: 640px) {  /* a phone: the likeliest digits side by side under the verdict, a short row */
  .sk-tops { flex-basis: 100%%; display: flex; gap: 0.7rem; }
  .sk-tops .sk-bar { flex: 1; }
}
.sk-why { cursor: help; text-decoration: underline dotted 1px; text-underline-offset: 0.25em; }
</style>""" % (BAR_COLOUR, TOP_COLOUR)
TOP_DIGITS = 3  # the likeliest digits a row shows


def probability_bars(probs: np.ndarray, shown: int = TOP_DIGITS) -> str:
    """The `shown` likeliest digits as HTML, likeliest first: a labelled bar each, the predicted
    one highlighted."""
    top = int(np.argmax(probs))
    order = np.argsort(-probs.astype(float), kind="stable")[:shown]
    return "".join(f'<div class="sk-bar{" top" if digit == top else ""}"><span>{digit}</span>'
                   f'<i><b style="width:{100 * float(probs[digit]):.1f}%"></b></i><span>{float(probs[digit]):.1%}</span></div>'
                   for digit in order)


def card(run, probs: np.ndarray, confidence: str = "", outlier: tuple[float, float] | None = None,
         weak: str | None = None) -> str:
    """One model's row as HTML: the verdict (the predicted digit, or "Not a digit to this model"),
    the model and how sure it is (and how that was scaled, where `confidence` says), its likeliest
    digits. With `outlier` (score, threshold), the score and the threshold are in the verdict's
    tooltip; above the threshold the drawing is not a digit to this model, and the row says what it
    would say. `weak` (why the model's not-a-digit check is weak or missing) marks the row."""
    top = int(np.argmax(probs))
    note = f" ({html.escape(confidence)})" if confidence else ""
    name = f"{html.escape(run.name)} · {html.escape(run.arch)}"
    flag = (f'<span class="sk-flag" title="{html.escape(weak)}">'
            f'{"no check" if weak.startswith("no ") else "weak check"}</span>') if weak else ""
    if outlier is None:
        tip = "this model has no not-a-digit check: it names a digit for anything"
    else:
        side = "above" if outlier[0] > outlier[1] else "at or below"
        tip = (f"not-a-digit score {outlier[0]:.4g}, {side} this model's threshold {outlier[1]:.4g}: "
               + glossary.sentence("ood_score"))
    tip = html.escape(tip)
    if outlier is not None and outlier[0] > outlier[1]:
        return (f'<div class="sk-card sk-ood"><div class="sk-who"><div class="sk-head"><h3 class="sk-why" title="{tip}">'
                f'Not a digit to this model</h3>{flag}</div><p>{name} · it would say {top}, {probs[top]:.1%} sure{note}</p>'
                f'</div><div class="sk-tops">{probability_bars(probs)}</div></div>')
    return (f'<div class="sk-card"><div class="sk-who"><div class="sk-head"><h3 class="sk-why" title="{tip}">'
            f'Predicted: {top}</h3>{flag}</div><p>{name} · {probs[top]:.1%} sure{note}</p></div>'
            f'<div class="sk-tops">{probability_bars(probs)}</div></div>')


def temperatures(models: list) -> tuple[list[float], list[str]]:
    """Each model's temperature and what its card says of it: 1 and nothing unless calibrated
    confidences are asked for; then its kept fit, or 1 and "no fit yet"."""
    if not st.session_state.get("sketch_calibrated"):
        return [1.0] * len(models), [""] * len(models)
    kept = [kept_calibration(run) for run in models]
    return ([k.temperature if k else 1.0 for k in kept],
            [f"calibrated, T = {k.temperature:.2f}" if k else "no calibration fitted yet" for k in kept])


def predictions(digit: np.ndarray, models: list) -> None:
    """One row per model, all in one HTML element (a stroke sends the browser one element to draw
    instead of five per model), then what the models saw, and what the figures mean where a row
    says "not a digit" or flags a weak check."""
    loaded = [(run, predictor(run)) for run in models]  # cached: loaded once per weights file
    loaded = [(run, model) for run, model in loaded if model is not None]
    if not loaded:
        return
    freeze_heap()  # once per process, with the models loaded: no long garbage-collector pauses
    scales, notes = temperatures([run for run, _ in loaded])
    detectors = [detector(run)[0] for run, _ in loaded]
    weak = [check_weakness(run, found) for (run, _), found in zip(loaded, detectors)]
    judged = probabilities([model for _, model in loaded], digit, scales, detectors)
    rows = "".join(card(run, probs, note, None if found is None else (score, found.threshold), flag)
                   for (run, _), (probs, score), note, found, flag in zip(loaded, judged, notes, detectors, weak))
    st.html(f'{CARDS_CSS}<div class="sk-cards">{rows}</div>')
    said = [key for key, shown in (("ood_score", any(found is not None and score > found.threshold for
                                                     (_, score), found in zip(judged, detectors))),
                                   ("weak_check", any(weak))) if shown]
    if said:
        glossary.captions(*said)
    left, right = st.columns([1, 3], vertical_alignment="center")
    with left:
        digit_image(digit, width=112, output_format="PNG")
    right.caption("**What the models see** (28x28): the drawing scaled into a 20 px box and centred by its centre "
                  "of mass, the way MNIST was made. Hover a verdict for its not-a-digit score.")
    why(digit, [run for run, _ in loaded])
    change_its_mind(digit, [run for run, _ in loaded])


def why(digit: np.ndarray, models: list) -> None:
    """Saliency of the drawing for one model: what pushed it towards its digit and towards
    another. Off by default: a stroke with it off costs nothing more."""
    if not st.toggle("Why? Show the saliency of the drawing", key="sketch_why",
                     help="Integrated Gradients: which strokes pushed a model towards a digit"):
        return
    by_id = {r.run_id: r for r in models}
    run_id = st.selectbox("Model", list(by_id), key="sketch_why_run", format_func=lambda i: run_label(by_id[i]))
    drawing = hashlib.sha1(np.ascontiguousarray(digit).tobytes()).hexdigest()[:12]  # a new drawing: the runner-up again
    saliency_panel(by_id[run_id], digit, true=None, key=f"sketch_why_{drawing}")


def change_its_mind(digit: np.ndarray, models: list) -> None:
    """The smallest L-inf change (PGD, bisected on eps) that makes one model give another digit
    for the drawing, and the changed drawing. Off by default."""
    if not st.toggle("What would change its mind?", key="sketch_mind",
                     help="the smallest change of the drawing's pixels (each by at most eps, on [0, 1]) that makes "
                          "the model answer another digit: PGD, 20 steps, eps found by bisection"):
        return
    by_id = {r.run_id: r for r in models}
    run_id = st.selectbox("Model", list(by_id), key="sketch_mind_run", format_func=lambda i: run_label(by_id[i]))
    model = predictor(by_id[run_id])
    if model is None:
        return
    started = time.perf_counter()
    found = attacks.smallest_flip(model.model, torch.from_numpy(np.asarray(digit, dtype=np.float32))[None, None])
    seconds = time.perf_counter() - started
    if found is None:
        st.info(f"No change of at most 0.5 per pixel makes it say another digit (searched in {seconds:.1f} s).",
                icon=":material/shield:")
        return
    eps, changed, new = found
    left, right = st.columns([1, 3], vertical_alignment="center")
    with left:
        digit_image(changed[0, 0].numpy(), width=112, output_format="PNG")
    right.markdown(f"Changing each pixel by at most **{eps:.3f}** (of 1) makes it say **{new}**: the drawing on "
                   f"the left. Found in {seconds:.1f} s (PGD, 20 steps, one random start, eps bisected to 0.005).")


def save(digit: np.ndarray) -> None:
    """Button callback: store the drawing with its label, then start a fresh canvas."""
    if not access.allowed("save to the handwriting set"):
        return
    label = st.session_state.get("sketch_label")
    try:
        new_id = handwriting.add_drawing(digit, int(label))
    except handwriting.HandwritingError as exc:
        st.session_state["sketch_message"] = ("error", str(exc))
        return
    st.session_state["sketch_message"] = ("success", f"Saved as a {label} (#{new_id}).")
    st.session_state["sketch_label"] = None
    st.session_state["sketch_saved"] = True  # the handwriting section, outside the fragment, must show it
    bump_canvas()


def save_section(digit: np.ndarray | None) -> None:
    st.markdown("**Add it to your handwriting set**")
    label = st.selectbox("True label", range(10), index=None, placeholder="which digit did you draw?",
                         key="sketch_label")
    st.button("Save to my handwriting", icon=":material/save:", disabled=digit is None or label is None
              or access.locked(), on_click=save, args=(digit,),
              help=access.LOCKED_HELP if access.locked() else "draw a digit and pick its true label first")
    kind, text = st.session_state.pop("sketch_message", (None, None))
    if kind == "error":
        st.error(text)
    elif kind == "success":
        st.success(text, icon=":material/save:")


def sketch_panel(models: list) -> None:
    """The pad, the predictions and the save form: all that a stroke changes. Run as a fragment,
    so a stroke, Clear or a label reruns this alone. The predictions come right after the pad (on a
    phone, where the columns stack, directly under it), the save form after them."""
    if st.session_state.pop("sketch_saved", False):
        st.rerun(scope="app")  # a drawing was saved: the handwriting section below changes too
    draw_col, result_col = st.columns([1, 2.2], gap="medium")
    with draw_col:
        digit = canvas_digit()
    with result_col:
        if not models:
            st.info("Pick at least one model above.", icon=":material/lightbulb:")
        elif digit is None:
            st.info("Draw a digit in the black box: each model's answer appears here as soon as you lift the pen.",
                    icon=":material/draw:")
            models_table(models)
        else:
            predictions(digit, models)
    with st.columns([1, 2.2], gap="medium")[0]:  # the pad's width on a wide screen, all of a phone's
        save_section(digit)


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
    scores = handwriting_scores(models, hw)
    if not scores.empty:
        # the model and its accuracy first: on a phone they are the columns in view, the rest scroll
        st.dataframe(scores, hide_index=True, width="stretch", key="sketch_hw_scores",
                     column_order=("model", "accuracy", "correct", "total", "test_acc", "arch"), column_config={
            "model": "Model", "arch": "Arch", "correct": "Correct", "total": "Drawings",
            "accuracy": st.column_config.ProgressColumn("Accuracy on your handwriting", format="%.1f%%",
                                                        min_value=0, max_value=100),
            "test_acc": st.column_config.NumberColumn("MNIST test accuracy", format="%.2f%%")})
    with st.expander(f"Saved drawings ({len(hw)})"):
        newest = np.argsort(-hw.ids)[:60]
        digit_grid(hw.images[newest], [f"#{hw.ids[i]} · {hw.labels[i]}" for i in newest], size=56)
        doomed = st.multiselect("Drawings to delete", [int(i) for i in hw.ids[newest]],
                                format_func=lambda i: f"#{i}", key="sketch_delete")
        if st.button("Delete selected", icon=":material/delete:", disabled=not doomed or access.locked()) \
                and access.allowed("delete drawings"):
            removed = handwriting.delete_drawings(doomed)
            st.toast(f"Deleted {removed} drawing{'s' if removed != 1 else ''}", icon=":material/delete:")
            st.rerun()


def page() -> None:
    st.title("Sketch")
    st.caption("Draw a digit with the mouse or a finger: each model says which digit it sees, or that it is not "
               "a digit to it.")
    candidates = finished_runs_or_stop("No trained model yet: train one on the **Train** page (lenet takes "
                                       "a few minutes on a CPU), then draw digits here and see what it "
                                       "makes of them.", needs="weights")
    models = choose_models(candidates)
    st.fragment(sketch_panel)(models)
    ood_section(models)
    handwriting_section(models)


if __name__ == "__main__":  # Streamlit runs a page as __main__; tests import it
    page()
