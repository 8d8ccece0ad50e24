"""The first page, at `/`: what the lab is, what ships with it (the reference runs, the best one
named with its 95% interval), and three things to try, each one click away: draw a digit
(Sketch), ask whether the best model is really better than the second (Compare, those two runs
picked) and train a small model (Train, with the quick preset filled in)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core.store.runs import Run
from dashboard.notices import show_run_warnings
from dashboard.state import load_runs
from dashboard.text import md_text
from dashboard.widgets import default_subjects, is_recipe_reference, unique_names

COMPARE_RUNS = "runs"        # the Compare page's preselection, /compare?runs=ID1,ID2 (views/compare.py)
TRAIN_PRESET = {"preset": "quick"}  # the Train page's quick preset (dashboard/views/train.py)


def interval_text(run: Run) -> str:
    """'99.69% (95% interval 99.57–99.78%)', or the accuracy alone without test counts."""
    if run.test_ci is None:
        return f"{run.test_acc:.2f}%"
    low, high = run.test_ci
    return f"{run.test_acc:.2f}% (95% interval {low:.2f}–{high:.2f}%)"


def shipped_section(runs: list[Run]) -> list[Run]:
    """What ships: the reference runs, the best named (their table comes at the end of the page,
    reference_table). Returns the recipe references, best first: by validation accuracy, so the
    test figure shown is a report on the run the validation set chose."""
    shipped = [r for r in runs if r.reference]
    best_first = [r for r in default_subjects(shipped) if is_recipe_reference(r)]
    st.subheader("What ships with it", divider="gray")
    if not best_first:
        st.info("This lab's runs folder holds no reference runs: the models MNIST Lab ships with are not "
                "here. Train one below, or point `MNIST_LAB_CHECKPOINTS` at the repository's checkpoints/.",
                icon=":material/inventory_2:")
        return []
    cells = len(shipped) - len(best_first)
    best = best_first[0]
    st.markdown(
        f"**{len(shipped)} trained models**, ready to use: the reference run of each of "
        f"{len(best_first)} recipes" + (f" and {cells} cells of a learning-rate × batch-size sweep" if cells else "")
        + f". The best on the validation digits, **{md_text(best.name)}**, reads {interval_text(best)} of the 10,000 test digits right: "
        "the interval is where its accuracy on another 10,000 such digits would likely fall.")
    return best_first


def reference_table(best_first: list[Run]) -> None:
    """The recipe references, best first (by validation accuracy), with their test intervals."""
    if not best_first:
        return
    st.subheader("The shipped models", divider="gray")
    st.caption("Best first by validation accuracy, measured on training digits held out from training: "
               "the 10,000 test digits report on each model, they never choose one.")
    names = unique_names(best_first)
    table = pd.DataFrame({
        "model": [names[r.run_id] for r in best_first],
        "validation accuracy": [r.val_acc for r in best_first],
        "test accuracy": [r.test_acc for r in best_first],
        "95% interval": ["–" if r.test_ci is None else f"{r.test_ci[0]:.2f}–{r.test_ci[1]:.2f}%" for r in best_first],
        "epochs": [r.epochs_done for r in best_first]})
    st.dataframe(table, hide_index=True, key="home_shipped", column_config={
        "model": st.column_config.TextColumn("Model"),
        "validation accuracy": st.column_config.NumberColumn("Validation accuracy", format="%.2f%%"),
        "test accuracy": st.column_config.NumberColumn("Test accuracy", format="%.2f%%"),
        "95% interval": st.column_config.TextColumn("95% interval"),
        "epochs": st.column_config.NumberColumn("Epochs")})


def compare_pair(best: Run, second: Run) -> None:
    """Open Compare with exactly these two runs picked (its own URL preselection)."""
    st.switch_page("views/compare.py", query_params={COMPARE_RUNS: f"{best.run_id},{second.run_id}"})


def try_section(best_first: list[Run]) -> None:
    st.subheader("Three things to try", divider="gray")
    draw, ask, train = st.columns(3, gap="medium")
    with draw.container(border=True, height="stretch"):
        st.markdown("**Draw a digit** and watch every model read it as you draw; draw a letter and see which "
                    "models say it is no digit at all.")
        st.page_link("views/sketch.py", label="Draw a digit", icon=":material/draw:")
    with ask.container(border=True, height="stretch"):
        if len(best_first) >= 2:
            best, second = best_first[:2]
            names = unique_names([best, second])
            st.markdown(f"**Is {md_text(names[best.run_id])} really better than {md_text(names[second.run_id])}?** "
                        f"{best.test_acc:.2f}% against {second.test_acc:.2f}%: a test on the same 10,000 images "
                        "says whether the gap is more than luck.")
            if st.button("Compare the best two", icon=":material/balance:", key="home_compare"):
                compare_pair(best, second)
        else:
            st.markdown("**Is one model really better than another?** Compare tests two runs on the same "
                        "images once there are two.")
            st.page_link("views/compare.py", label="Compare runs", icon=":material/balance:")
    with train.container(border=True, height="stretch"):
        st.markdown("**Train a small model in a minute**: a LeNet, two passes over the 55,000 training "
                    "images, about 20 seconds on this machine's CPU. Then find it beside the shipped ones.")
        st.page_link("views/train.py", label="Train a small model", icon=":material/model_training:",
                     query_params=TRAIN_PRESET)


def page() -> None:
    """The first page, as Streamlit runs it (dashboard/app.py routes `/` here)."""
    st.title("MNIST Lab")
    st.markdown("MNIST Lab trains classifiers of handwritten digits on your own machine and lets you look "
                "inside them. You can compare runs with honest statistics, see the digits a model gets wrong "
                "and why, test how it holds up against noise and attacks, and draw digits for it to read.")
    runs = load_runs()
    if not runs:
        st.info("This lab's runs folder is empty: no model to look at yet. Train a first one (about "
                "20 seconds on a CPU), and every page has something to show.", icon=":material/inventory_2:")
        st.page_link("views/train.py", label="Train a small model", icon=":material/model_training:",
                     query_params=TRAIN_PRESET)
        return
    show_run_warnings(runs)
    best_first = shipped_section(runs)
    try_section(best_first)
    reference_table(best_first)
    st.caption("Every page is in the sidebar; docs/dashboard.md describes each.")


if __name__ == "__main__":  # Streamlit runs a page as __main__; tests import it
    page()
