"""Compare: every run in one sortable table with its test accuracy's 95% interval; whether the
picked runs really differ (dashboard.significance); their curves overlaid in a 2x2 grid
(train/validation x loss/accuracy, seed 002's view); rename and delete."""
from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from core.store import tables
from core.errors import LabError
from core.store.runs import delete_run, rename_run
from dashboard.notices import no_runs_notice, show_run_warnings
from dashboard.significance import groups_section, pairs_section
from dashboard.state import accuracy_without_confirmed, load_runs, predictions_problem
from dashboard.text import md_text
from dashboard.widgets import CLEAN_HELP, VAL_HELP, pick_run, unique_names

DEFAULT_SHOWN = 5  # runs drawn when none is selected in the table


def runs_table(runs: list) -> tuple[list, bool]:
    """The table; returns the runs selected in it (or the newest few with curves), and whether
    they were selected."""
    table = tables.run_table(runs)
    table["test_acc_clean"] = [accuracy_without_confirmed(r) for r in runs]
    table["test_ci"] = [None if pd.isna(low) else f"{low:.2f}–{high:.2f}%"
                        for low, high in zip(table["test_low"], table["test_high"])]
    for run in runs:  # its clean-label figure is blank: say why, by name
        problem = predictions_problem(run)
        if problem:
            st.warning(f"**{md_text(run.name)}**: {md_text(problem)}", icon=":material/warning:")
    event = st.dataframe(
        table, key="compare_table", on_select="rerun", selection_mode="multi-row", hide_index=True,
        placeholder="–",
        width="stretch", height=min(420, 38 + 35 * len(table)),
        column_order=["name", "reference", "arch", "status", "parameters", "epochs", "val_acc", "test_acc", "test_ci", "test_acc_clean",
                      "sec_per_epoch", "device", "group", "created", "run_id"],
        column_config={
            "name": st.column_config.TextColumn("Name"),
            "reference": st.column_config.CheckboxColumn(
                "Reference", help="shipped with MNIST Lab (trained with the default recipe; cannot be "
                                  "renamed or deleted here)"),
            "arch": st.column_config.TextColumn("Arch"),
            "status": st.column_config.TextColumn("Status"),
            "parameters": st.column_config.NumberColumn("Parameters", format="localized"),
            "epochs": st.column_config.NumberColumn("Epochs"),
            "val_acc": st.column_config.NumberColumn("Val acc", format="%.2f%%", help=VAL_HELP),
            "test_acc": st.column_config.NumberColumn("Test acc", format="%.2f%%"),
            "test_ci": st.column_config.TextColumn(
                "Test 95% CI", help="the 95% Wilson interval of the test accuracy: where the accuracy on "
                                   "another 10,000 images like these would likely fall. Runs whose intervals "
                                   "overlap may still differ: ask below"),
            "test_acc_clean": st.column_config.NumberColumn("Test acc (clean labels)", format="%.2f%%",
                                                            help=CLEAN_HELP),
            "sec_per_epoch": st.column_config.NumberColumn("s / epoch", format="%.2f"),
            "device": st.column_config.TextColumn("Device"),
            "group": st.column_config.TextColumn("Seed group", help="runs of one recipe over several seeds "
                                                                  "(`train --seeds`, or Seeds on the Train page)"),
            "created": st.column_config.TextColumn("Created"),
            "run_id": st.column_config.TextColumn("Run id")})
    rows = list(event.selection.rows) if event is not None else []
    if rows:
        return [runs[i] for i in rows if i < len(runs)], True
    with_curves = [r for r in runs if r.epochs_done > 0][:DEFAULT_SHOWN]
    if with_curves:
        st.caption(f"Select rows (the boxes on the left) to choose runs; showing the newest "
                   f"{len(with_curves)} with curves.")
    return with_curves, False


def groups_table(runs: list) -> None:
    """Each seed group's test and validation accuracy as mean ± std (sample std) over its runs."""
    groups = tables.group_table(runs)
    if groups.empty:
        return
    st.subheader("Seed groups", divider="gray")
    st.caption("One recipe trained over several seeds: mean ± sample standard deviation over the group's "
               "finished runs (± – with a single run); a run that did not finish is counted out, test and "
               "validation alike. Tick a member run below to draw the group as a band.")
    shown = groups.assign(val_text=[tables.mean_std_text(m, s) for m, s in zip(groups.val_mean, groups.val_std)])
    st.dataframe(shown, key="compare_groups", hide_index=True, width="stretch",
                 height=min(300, 38 + 35 * len(shown)),
                 column_order=["group", "arch", "count_text", "test_text", "val_text"],
                 column_config={"group": st.column_config.TextColumn("Seed group"),
                                "arch": st.column_config.TextColumn("Arch"),
                                "count_text": st.column_config.TextColumn("Runs averaged"),
                                "test_text": st.column_config.TextColumn("Test acc (mean ± std)"),
                                "val_text": st.column_config.TextColumn("Val acc (mean ± std)",
                                                                        help=VAL_HELP)})


def band_frame(chosen: list, runs: list, x: str, smoothing: float):
    """The grid's data with seed groups as bands: each chosen run of a group brings in its whole
    group, drawn as the mean (one line, label 'group (n runs)') with lower/upper at ± std; the
    other chosen runs stay one line each (lower/upper empty)."""
    groups = {tables.run_group(r) for r in chosen} - {None}
    loose = [r for r in chosen if tables.run_group(r) is None]
    frame = tables.curves(loose, x=x, smoothing=smoothing)
    frame["run"] = frame["run_id"].map(unique_names(loose))
    members = [r for r in runs if tables.run_group(r) in groups]
    bands = tables.group_curves(members, x=x, smoothing=smoothing)
    if not bands.empty:
        sizes = {g: sum(tables.run_group(r) == g for r in members) for g in groups}
        bands["run"] = [f"{g} (mean ± std, {sizes[g]} runs)" for g in bands["group"]]
        bands["raw"] = bands["value"]
        bands["time"] = bands["x"]
    return frame.assign(std=float("nan"), lower=float("nan"), upper=float("nan")), bands


def curves_grid(chosen: list, x: str, smoothing: float, runs: list | None = None, bands: bool = False) -> None:
    if bands and any(tables.run_group(r) for r in chosen):
        lines, spread = band_frame(chosen, runs or chosen, x, smoothing)
        frame = lines if spread.empty else (spread if lines.empty else
                                              pd.concat([lines, spread], ignore_index=True))
    else:
        frame = tables.curves(chosen, x=x, smoothing=smoothing)
        if not frame.empty:
            frame["run"] = frame["run_id"].map(unique_names(chosen))
    if frame.empty:
        st.info("The chosen runs have no finished epoch yet: their curves appear after the first epoch.",
                icon=":material/hourglass_top:")
        return
    # Run names may repeat (every recipe run is called "recipe"): curves_grid labels them apart.
    pick = alt.selection_point(fields=["run"], bind="legend")
    x_title = "epoch" if x == "epoch" else "wall time (s)"
    x_enc = alt.X("x:Q", title=x_title, axis=alt.Axis(tickMinStep=1, format="d") if x == "epoch" else alt.Axis())
    color = alt.Color("run:N", title="run (click to highlight)", legend=alt.Legend(orient="bottom", columns=3))
    tooltip = [alt.Tooltip("run:N"), alt.Tooltip("panel:N", title="curve"),
               alt.Tooltip("epoch:Q"), alt.Tooltip("time:Q", title="seconds", format=".1f"),
               alt.Tooltip("value:Q", title="value" if smoothing == 0 else "smoothed", format=".4f"),
               alt.Tooltip("raw:Q", format=".4f")]
    base = alt.Chart(frame)
    chart = base.mark_line(point=alt.OverlayMarkDef(size=30), strokeWidth=2).encode(
        x=x_enc, y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False)), color=color,
        opacity=alt.condition(pick, alt.value(1.0), alt.value(0.12)),
        tooltip=tooltip + ([alt.Tooltip("std:Q", title="± std", format=".4f")] if "std" in frame else []),
    ).properties(width=430, height=230).add_params(pick)
    if "lower" in frame and frame["lower"].notna().any():  # seed groups: mean ± std as a band
        band = base.mark_area(opacity=0.2).encode(
            x=x_enc, y=alt.Y("lower:Q", title=None, scale=alt.Scale(zero=False)), y2="upper:Q", color=color,
            opacity=alt.condition(pick, alt.value(0.2), alt.value(0.03)))
        chart = alt.layer(band, chart)
    chart = chart.facet(
        facet=alt.Facet("panel:N", title=None, sort=list(tables.PANELS),
                        header=alt.Header(labelFontSize=14, labelFontWeight="bold")),
        columns=2,
    ).resolve_scale(y="independent", x="independent")
    st.altair_chart(chart)


def manage(runs: list) -> None:
    st.subheader("Rename or delete a run", divider="gray")
    own = [r for r in runs if not r.reference]
    if len(own) < len(runs):
        st.caption("Reference runs ship with MNIST Lab and stay as they are; your own runs are listed here.")
    if not own:
        st.info("Only reference runs so far: the runs you train can be renamed and deleted here.",
                icon=":material/lock:")
        return
    run = pick_run("Run", own, key="compare_manage_run")
    if run is None:
        return
    left, right = st.columns(2, gap="large")
    with left, st.form("rename_form", border=False):
        new_name = st.text_input("New name", value=run.name, max_chars=80, key=f"compare_name_{run.run_id}")
        if st.form_submit_button("Rename", icon=":material/edit:"):
            try:
                rename_run(run.run_id, new_name)
            except LabError as exc:
                st.error(md_text(exc))
            else:
                st.toast(f"Renamed to {md_text(new_name.strip())}", icon=":material/edit:")
                st.rerun()
    with right:
        pending = st.session_state.get("compare_delete") == run.run_id
        if not pending:
            if st.button("Delete…", icon=":material/delete:", disabled=run.status in ("running", "queued"),
                         help="running and queued runs must be cancelled first"):
                st.session_state["compare_delete"] = run.run_id
                st.rerun()
        else:
            st.warning(f"Delete **{md_text(run.name)}** (`{run.run_id}`) and all its files? "
                       "This cannot be undone.")
            yes, no = st.columns(2)
            if yes.button("Yes, delete it", type="primary", icon=":material/delete_forever:"):
                st.session_state.pop("compare_delete", None)
                try:
                    delete_run(run.run_id)
                except LabError as exc:
                    st.error(md_text(exc))
                else:
                    st.toast(f"Deleted {md_text(run.name)}", icon=":material/delete:")
                    st.rerun()
            if no.button("Keep it"):
                st.session_state.pop("compare_delete", None)
                st.rerun()


def page() -> None:
    """The compare page, as Streamlit runs it (dashboard/app.py routes here)."""
    st.title("Compare")
    st.caption("Every run in one table: sort by any column, tick rows to overlay their curves.")
    runs = load_runs()
    if not runs:
        no_runs_notice("No runs to compare yet: train two or more models on the **Train** page "
                       "(or `python -m core train --arch lenet`), then come back here.")
        st.stop()
    show_run_warnings(runs)
    groups_table(runs)
    chosen, ticked = runs_table(runs)
    pairs_section(runs, chosen if ticked else [])
    groups_section(runs)
    st.subheader("Curves", divider="gray")
    controls = st.columns([2, 2, 3])
    show_bands = controls[2].toggle("Show seed groups as bands", value=True, key="compare_bands",
                                    help="a ticked run of a seed group draws its whole group: the mean over its "
                                         "seeds as a line, ± one sample standard deviation as a band")
    x_axis = controls[0].radio("X axis", ["epoch", "wall time"], horizontal=True, key="compare_x")
    smoothing = controls[1].slider("Smoothing", 0.0, 0.95, 0.0, 0.05, key="compare_smoothing",
                                   help="exponential moving average, as TensorBoard draws it")
    if chosen:
        curves_grid(chosen, "epoch" if x_axis == "epoch" else "time", smoothing, runs=runs, bands=show_bands)
    else:
        st.info("No run has a finished epoch yet: curves appear here once one has.",
                icon=":material/hourglass_top:")
    manage(runs)


if __name__ == "__main__":  # Streamlit runs a page as __main__; tests import it
    page()
