"""Compare: every run in one sortable table; the picked runs' curves overlaid in a 2x2 grid
(train/validation x loss/accuracy, seed 002's view); rename and delete."""
from __future__ import annotations

import altair as alt
import streamlit as st

from core import tables
from core.errors import LabError
from core.runs import delete_run, rename_run
from dashboard import common

DEFAULT_SHOWN = 5  # runs drawn when none is selected in the table


def runs_table(runs: list) -> list:
    """The table; returns the runs selected in it (or the newest few with curves)."""
    table = tables.run_table(runs)
    event = st.dataframe(
        table, key="compare_table", on_select="rerun", selection_mode="multi-row", hide_index=True,
        placeholder="–",
        width="stretch", height=min(420, 38 + 35 * len(table)),
        column_order=["name", "reference", "arch", "status", "parameters", "epochs", "val_acc", "test_acc",
                      "sec_per_epoch", "device", "created", "run_id"],
        column_config={
            "name": st.column_config.TextColumn("Name"),
            "reference": st.column_config.CheckboxColumn(
                "Reference", help="shipped with MNIST Lab (trained with the default recipe; cannot be "
                                  "renamed or deleted here)"),
            "arch": st.column_config.TextColumn("Arch"),
            "status": st.column_config.TextColumn("Status"),
            "parameters": st.column_config.NumberColumn("Parameters", format="localized"),
            "epochs": st.column_config.NumberColumn("Epochs"),
            "val_acc": st.column_config.NumberColumn("Val acc", format="%.2f%%", help=common.VAL_HELP),
            "test_acc": st.column_config.NumberColumn("Test acc", format="%.2f%%"),
            "sec_per_epoch": st.column_config.NumberColumn("s / epoch", format="%.2f"),
            "device": st.column_config.TextColumn("Device"),
            "created": st.column_config.TextColumn("Created"),
            "run_id": st.column_config.TextColumn("Run id")})
    rows = list(event.selection.rows) if event is not None else []
    if rows:
        return [runs[i] for i in rows if i < len(runs)]
    with_curves = [r for r in runs if r.epochs_done > 0][:DEFAULT_SHOWN]
    if with_curves:
        st.caption(f"Select rows (the boxes on the left) to choose runs; showing the newest "
                   f"{len(with_curves)} with curves.")
    return with_curves


def curves_grid(chosen: list, x: str, smoothing: float) -> None:
    frame = tables.curves(chosen, x=x, smoothing=smoothing)
    if frame.empty:
        st.info("The chosen runs have no finished epoch yet: their curves appear after the first epoch.",
                icon=":material/hourglass_top:")
        return
    # Run names may repeat (every recipe run is called "recipe"): label them apart.
    frame["run"] = frame["run_id"].map(common.unique_names(chosen))
    pick = alt.selection_point(fields=["run"], bind="legend")
    x_title = "epoch" if x == "epoch" else "wall time (s)"
    chart = alt.Chart(frame).mark_line(point=alt.OverlayMarkDef(size=30), strokeWidth=2).encode(
        x=alt.X("x:Q", title=x_title, axis=alt.Axis(tickMinStep=1, format="d") if x == "epoch" else alt.Axis()),
        y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False)),
        color=alt.Color("run:N", title="run (click to highlight)", legend=alt.Legend(orient="bottom", columns=3)),
        opacity=alt.condition(pick, alt.value(1.0), alt.value(0.12)),
        tooltip=[alt.Tooltip("run:N"), alt.Tooltip("panel:N", title="curve"),
                 alt.Tooltip("epoch:Q"), alt.Tooltip("time:Q", title="seconds", format=".1f"),
                 alt.Tooltip("value:Q", title="value" if smoothing == 0 else "smoothed", format=".4f"),
                 alt.Tooltip("raw:Q", format=".4f")],
    ).properties(width=430, height=230).add_params(pick).facet(
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
    run = common.pick_run("Run", own, key="compare_manage_run")
    if run is None:
        return
    left, right = st.columns(2, gap="large")
    with left, st.form("rename_form", border=False):
        new_name = st.text_input("New name", value=run.name, max_chars=80, key=f"compare_name_{run.run_id}")
        if st.form_submit_button("Rename", icon=":material/edit:"):
            try:
                rename_run(run.run_id, new_name)
            except LabError as exc:
                st.error(str(exc))
            else:
                st.toast(f"Renamed to {new_name.strip()}", icon=":material/edit:")
                st.rerun()
    with right:
        pending = st.session_state.get("compare_delete") == run.run_id
        if not pending:
            if st.button("Delete…", icon=":material/delete:", disabled=run.status in ("running", "queued"),
                         help="running and queued runs must be cancelled first"):
                st.session_state["compare_delete"] = run.run_id
                st.rerun()
        else:
            st.warning(f"Delete **{run.name}** (`{run.run_id}`) and all its files? This cannot be undone.")
            yes, no = st.columns(2)
            if yes.button("Yes, delete it", type="primary", icon=":material/delete_forever:"):
                st.session_state.pop("compare_delete", None)
                try:
                    delete_run(run.run_id)
                except LabError as exc:
                    st.error(str(exc))
                else:
                    st.toast(f"Deleted {run.name}", icon=":material/delete:")
                    st.rerun()
            if no.button("Keep it"):
                st.session_state.pop("compare_delete", None)
                st.rerun()


st.title("Compare")
st.caption("Every run in one table: sort by any column, tick rows to overlay their curves.")
runs = common.load_runs()
if not runs:
    common.no_runs_notice("No runs to compare yet: train two or more models on the **Train** page "
                          "(or `python -m core train --arch lenet`), then come back here.")
    st.stop()
common.show_run_warnings(runs)
chosen = runs_table(runs)
st.subheader("Curves", divider="gray")
controls = st.columns([2, 2, 3])
x_axis = controls[0].radio("X axis", ["epoch", "wall time"], horizontal=True, key="compare_x")
smoothing = controls[1].slider("Smoothing", 0.0, 0.95, 0.0, 0.05, key="compare_smoothing",
                               help="exponential moving average, as TensorBoard draws it")
if chosen:
    curves_grid(chosen, "epoch" if x_axis == "epoch" else "time", smoothing)
else:
    st.info("No run has a finished epoch yet: curves appear here once one has.",
            icon=":material/hourglass_top:")
manage(runs)
