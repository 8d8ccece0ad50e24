"""Sweep: a learning-rate x batch-size grid (seed 003's exploration) as ordinary queued runs;
validation accuracy as a heatmap whose cells lead to their runs."""
from __future__ import annotations

import altair as alt
import streamlit as st

from core.training import jobs
from core.training import raylaunch
from core.store import tables
from core.config import DEVICES, ConfigError, TrainConfig
from core.errors import LabError
from core.models import list_models
from core.training.grids import parse_values, prepare_sweep, sweep_cells, sweep_ids, sweep_table
from core.training.loop import check_trainable
from dashboard import access
from dashboard.charts import fit_width, show_history
from dashboard.notices import no_runs_notice, report, require_mnist, show_run_warnings
from dashboard.state import load_runs
from dashboard.text import md_text
from dashboard.widgets import VAL_HELP, status_badge

MAX_CELLS = 36


def launch_form(mnist_ok: bool) -> None:
    models = list_models()
    with st.form("sweep_form", border=False):
        c = st.columns(3)
        arch = c[0].selectbox("Architecture", models, index=models.index("mlp") if "mlp" in models else 0,
                              key="sweep_arch")
        epochs = c[1].number_input("Epochs", value=3, step=1, key="sweep_epochs")
        limit = c[2].number_input("Training-set limit (0 = all)", min_value=0, value=10_000, step=1000,
                                  key="sweep_limit")
        d = st.columns(3)
        lrs_text = d[0].text_input("Learning rates", value="0.01, 0.03, 0.1", key="sweep_lrs")
        batches_text = d[1].text_input("Batch sizes", value="32, 64, 128", key="sweep_batches")
        device = d[2].selectbox("Device", DEVICES, key="sweep_device")
        address = st.text_input("Ray cluster (optional)", key="sweep_ray", placeholder="HOST:PORT or auto",
                                help="Send every run to this Ray cluster as a task (1 CPU, or a fraction of a "
                                     "GPU); empty: this machine's queue. The checkpoints folder must be shared "
                                     "by every node of the cluster.")
        st.caption("Comma-separated values; every pair becomes one run. A training-set limit keeps "
                   "a grid quick.")
        submitted = st.form_submit_button("Launch sweep", type="primary", icon=":material/play_arrow:",
                                          disabled=not mnist_ok or access.locked(),
                                          help=access.LOCKED_HELP if access.locked() else None)
    if submitted and access.allowed("launch a sweep"):  # before anything reads the Ray address
        launch(arch, epochs, limit, lrs_text, batches_text, device, address.strip())


def launch(arch, epochs, limit, lrs_text, batches_text, device, address="") -> None:
    try:
        lrs = parse_values(lrs_text, float, "learning rates")
        batch_sizes = parse_values(batches_text, int, "batch sizes")
        if len(lrs) * len(batch_sizes) > MAX_CELLS:
            raise ConfigError(f"{len(lrs)} x {len(batch_sizes)} = {len(lrs) * len(batch_sizes)} runs; "
                             f"a sweep may have at most {MAX_CELLS}")
        base = TrainConfig(arch=arch, epochs=int(epochs), train_limit=int(limit) or None, device=device)
        if address:  # the cluster checks the device; the driver creates the runs once it joined the cluster
            with st.spinner(f"Sending the sweep to the Ray cluster at {md_text(address)}..."):
                sweep_id = raylaunch.launch_driver(base.replace(lr=lrs[0], batch_size=batch_sizes[0]),
                                                  lrs, batch_sizes, address)
            writers = None
        else:
            check_trainable(base)  # bad data or no GPU: say so, create no run
            sweep_id, writers = prepare_sweep(base, lrs, batch_sizes)
    except LabError as exc:
        report(exc, error=True)
        return
    if writers is None:
        st.session_state["sweep_pick"] = sweep_id
        st.session_state["sweep_launched"] = (f"Sent {len(lrs) * len(batch_sizes)} runs as `{sweep_id}` to the "
                                              f"Ray cluster at {md_text(address)}.")
        st.rerun()
    for writer in writers:
        jobs.launch_prepared(writer)
    st.session_state["sweep_pick"] = sweep_id
    st.session_state["sweep_launched"] = f"Queued {len(writers)} runs as `{sweep_id}`."
    st.rerun()


def pick_cell() -> None:
    state = st.session_state.get("sweep_heatmap")
    points = (state or {}).get("selection", {}).get("cell") or []
    if points and points[0].get("run_id"):
        st.session_state["sweep_cell"] = points[0]["run_id"]


def heatmap(cells) -> None:
    cell = alt.selection_point(fields=["run_id"], name="cell", on="click", clear=False)
    base = alt.Chart(cells).encode(
        x=alt.X("batch_size:O", title="batch size", axis=alt.Axis(labelAngle=0, orient="top")),
        y=alt.Y("lr_text:O", title="learning rate", sort=alt.EncodingSortField("lr", order="descending")))
    tooltip = [alt.Tooltip("lr:Q", format="g"), "batch_size:O", "status:N",
               alt.Tooltip("val_acc:Q", title="val acc", format=".2f"),
               alt.Tooltip("test_acc:Q", title="test acc", format=".2f"), "run_id:N"]
    # Cells without a result yet (queued, running) stay grey with their status as text.
    rects = base.mark_rect(stroke="#f58518").encode(
        color=alt.condition("isValid(datum.val_acc)",
                            alt.Color("val_acc:Q", title="val acc (%)", scale=alt.Scale(scheme="viridis"),
                                      legend=alt.Legend(orient="bottom", direction="horizontal", gradientLength=180,
                                                        format=".1f")),
                            alt.value("#9e9e9e")),
        strokeWidth=alt.condition(alt.datum.selected, alt.value(4), alt.value(0)),
        tooltip=tooltip,
    ).add_params(cell)
    middle = float(cells["val_acc"].dropna().median()) if cells["val_acc"].notna().any() else 0.0
    text = base.mark_text(fontSize=15, fontWeight="bold").encode(
        text="label:N", tooltip=tooltip,
        color=alt.condition(f"isValid(datum.val_acc) && datum.val_acc > {middle}",
                            alt.value("#1b1b1b"), alt.value("white")))
    height = min(520, max(160, 80 * cells["lr"].nunique()))
    st.altair_chart(fit_width((rects + text).properties(height=height)), key="sweep_heatmap",
                    on_select=pick_cell, selection_mode="cell", width="stretch")


def cell_detail(runs_by_id: dict, table, cells) -> None:
    ids = list(table["run_id"])
    if st.session_state.get("sweep_cell") not in ids:
        finished = table.dropna(subset=["val_acc"])
        st.session_state["sweep_cell"] = (finished.loc[finished["val_acc"].idxmax(), "run_id"]
                                          if len(finished) else ids[0])
    labels = {r.run_id: f"lr {r.lr_text} · batch {r.batch_size} · {r.status}" for r in cells.itertuples()}
    run_id = st.selectbox("Cell", ids, key="sweep_cell", format_func=labels.get,
                          help="or click a cell of the heatmap")
    run = runs_by_id[run_id]
    with st.container(border=True):
        head, badge = st.columns([4, 1], vertical_alignment="center")
        head.markdown(f"**lr {run.config.get('lr') or 0:g} · batch {run.config.get('batch_size')}**  \n"
                      f":gray[`{run.run_id}`]")
        with badge:
            status_badge(run.status)
        m = st.columns(3)
        m[0].metric("Val accuracy", f"{run.val_acc:.2f}%" if run.val_acc is not None else "–",
                    help=VAL_HELP)
        m[1].metric("Test accuracy", f"{run.test_acc:.2f}%" if run.test_acc is not None else "–")
        m[2].metric("Epochs", f"{run.epochs_done}/{tables.planned_epochs(run) or '?'}")
        curves = tables.live_curves(run.history, run.progress if run.status == "running" else None)
        if len(curves):
            show_history(curves, height=160, stacked=True)
        else:
            st.caption("No finished epoch yet.")
        if run.finished_with("predictions"):
            st.page_link("views/evaluate.py", label="Open in Evaluate", icon=":material/grid_on:",
                         query_params={"run": run.run_id})


def cluster_controls(sweep_id: str) -> None:
    """Where a sweep sent to a Ray cluster runs, and its Cancel (which cancels the Ray tasks)."""
    cluster = raylaunch.cluster_sweep(sweep_id)
    if cluster is None:
        return
    text, button = st.columns([4, 1], vertical_alignment="center")
    text.caption(f":material/hub: on the Ray cluster at {md_text(cluster.get('address'))}, driven from "
                 f"{md_text(cluster.get('host'))} (pid {md_text(cluster.get('pid'))})"
                 + ("" if cluster["active"] else " · the driver has ended"))
    if cluster["active"] and button.button("Cancel sweep", key=f"sweep_cancel_{sweep_id}", icon=":material/stop:",
                                           disabled=access.locked()) and access.allowed("cancel a sweep"):
        try:
            stopped = raylaunch.cancel_sweep(sweep_id)
        except LabError as exc:
            report(exc, error=True)
            return
        st.toast("Cancelling the sweep's Ray tasks" if stopped else "The sweep had already ended")


def sweep_view() -> None:
    runs = st.session_state.pop("sweep_runs", None)  # read by this full run of the page
    if runs is None:  # the timer's rerun: only the active runs can have changed
        runs = load_runs(active_only=True)
    sweeps = sweep_ids(runs)
    if not sweeps:
        return
    st.subheader("Results", divider="gray")
    wanted = st.query_params.get("sweep")
    if wanted in sweeps and st.session_state.get("sweep_from_url") != wanted:
        st.session_state["sweep_pick"], st.session_state["sweep_from_url"] = wanted, wanted
    if st.session_state.get("sweep_pick") not in sweeps:
        st.session_state["sweep_pick"] = sweeps[0]
    sweep_id = st.selectbox("Sweep", sweeps, key="sweep_pick")
    table = sweep_table(runs, sweep_id)
    statuses = table["status"].value_counts()
    st.caption(" · ".join(f"{n} {s}" for s, n in statuses.items()) + f" · {len(table)} runs")
    cluster_controls(sweep_id)
    cells = sweep_cells(table)
    cells["selected"] = cells["run_id"] == st.session_state.get("sweep_cell")
    grid_col, detail_col = st.columns([1.2, 1], gap="large")
    with grid_col:
        heatmap(cells)
        grid = table.pivot_table(index="lr", columns="batch_size", values="val_acc", aggfunc="max",
                                 dropna=False)
        grid = grid.reindex(index=sorted(table["lr"].unique()), columns=sorted(table["batch_size"].unique()))
        grid.index = [f"{lr:g}" for lr in grid.index]
        grid.index.name = "lr \\ batch size"
        grid.columns = [str(c) for c in grid.columns]
        with st.expander("Validation accuracy (%, kept weights) as a table"):
            st.dataframe(grid, key="sweep_grid", column_config={
                c: st.column_config.NumberColumn(c, format="%.2f") for c in grid.columns})
    with detail_col:
        cell_detail({r.run_id: r for r in runs}, table, cells)
    if any(s in ("running", "queued") for s in table["status"]):
        st.caption(":material/autorenew: updating while the sweep runs")
    elif st.session_state.get("sweep_polling"):
        st.session_state["sweep_polling"] = False
        st.rerun()


def page() -> None:
    """The sweep page, as Streamlit runs it (dashboard/app.py routes here)."""
    st.title("Sweep")
    st.caption("A grid of learning rates x batch sizes, each cell an ordinary run in the queue "
               "(one job per device at a time). Watch validation accuracy fill in.")
    mnist_ok = require_mnist("A sweep")
    if st.session_state.get("sweep_launched"):
        st.success(st.session_state.pop("sweep_launched"), icon=":material/grid_view:")
    runs = load_runs()
    show_run_warnings(runs)
    have_sweeps = bool(sweep_ids(runs))
    with st.expander("Launch a sweep", expanded=not have_sweeps, icon=":material/add:"):
        launch_form(mnist_ok)
    if not have_sweeps:
        no_runs_notice("No sweep yet: choose an architecture, a few learning rates and batch sizes "
                       "above and press **Launch sweep**. With a training-set limit of 10,000 and "
                       "3 epochs, a 3x3 mlp grid takes a few minutes on a CPU.", link_to_train=False)
        st.stop()
    polling = any(r.status in ("running", "queued") for r in runs if r.config.get("sweep"))
    st.session_state["sweep_polling"] = polling
    st.session_state["sweep_runs"] = runs
    st.fragment(sweep_view, run_every=2.0 if polling else None)()


if __name__ == "__main__":  # Streamlit runs a page as __main__; tests import it
    page()
