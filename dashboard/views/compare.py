"""Compare: every run in one sortable table, the best first, with its test accuracy's 95% interval;
one selection of runs (the best reference runs and the user's newest by default, or the runs named
in `/compare?runs=ID1,ID2`) that drives whether they really differ (dashboard.significance), their
curves (loss and accuracy, train solid and validation dashed) and the seed bands; rename and delete."""
from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from core.store import tables
from core.errors import LabError
from core.store.runs import delete_run, rename_run
from dashboard import access
from dashboard.notices import no_runs_notice, show_run_warnings
from dashboard.significance import groups_section, pairs_section
from dashboard.state import accuracy_without_confirmed, load_runs, predictions_problem
from dashboard.text import md_text
from dashboard.charts import fit_width, run_colour
from dashboard.widgets import CLEAN_HELP, VAL_HELP, by_validation, is_recipe_reference, pick_run, run_label, unique_names

DEFAULT_BEST = 4  # reference runs picked by default, the best by validation accuracy
MAX_PICKED = 12  # runs one selection may hold: a larger p-value grid or legend is not read
URL_PARAM = "runs"  # /compare?runs=ID1,ID2 preselects these runs (see preselection)


def best_first(runs: list) -> list:
    """The order of the table of picked runs, which reports their test accuracy: by it, best first;
    runs without one last, in their given order. What is picked is chosen by validation
    (default_selection)."""
    scored = sorted((r for r in runs if r.test_acc is not None), key=lambda r: -r.test_acc)
    return scored + [r for r in runs if r.test_acc is None]


def worth_defaulting(run) -> bool:
    """A run that may be picked without being asked for: finished, with more than one epoch."""
    return run.status == "finished" and run.epochs_done >= 2 and run.test_acc is not None


def default_selection(runs: list) -> list[str]:
    """The runs Compare opens on: the DEFAULT_BEST best reference runs of the recipes (sweep runs
    left out) by validation accuracy (widgets.by_validation), then the user's own newest finished run of two epochs or more.
    Without two such runs (a lab without its reference runs), the best finished runs of two epochs or
    more, then, only to make a pair, the best other finished runs."""
    reference = [r for r in by_validation(runs) if is_recipe_reference(r) and worth_defaulting(r)]
    own = [r for r in runs if not r.reference and worth_defaulting(r)]
    picked = [r.run_id for r in reference[:DEFAULT_BEST]]
    if own:
        picked.append(max(own, key=lambda r: r.run_id).run_id)  # run ids start with their creation time
    if len(picked) < 2:
        finished = [r for r in by_validation(runs) if r.status == "finished" and r.test_acc is not None]
        better = [r.run_id for r in finished if worth_defaulting(r) and r.run_id not in picked]
        picked += better[:DEFAULT_BEST + 1 - len(picked)]
        if len(picked) < 2:
            picked += [r.run_id for r in finished if r.run_id not in picked][:2 - len(picked)]
    return picked[:MAX_PICKED]


def preselection(runs: list) -> tuple[list[str], list[str]] | None:
    """The runs asked for in the page's URL, `/compare?runs=ID1,ID2` (run ids, comma-separated, in
    the order to show them): (known ids, unknown ids), or None without the parameter. Another page
    links here with st.page_link("views/compare.py", query_params={"runs": "ID1,ID2"}); unknown ids
    are left out with a notice, the known ones replace the default selection."""
    raw = st.query_params.get(URL_PARAM)
    if raw is None:
        return None
    known = {r.run_id for r in runs}
    asked = list(dict.fromkeys(i.strip() for i in raw.split(",") if i.strip()))
    return [i for i in asked if i in known][:MAX_PICKED], [i for i in asked if i not in known]


def pick_runs(runs: list) -> list:
    """The page's one selection (key compare_runs): the runs the curves, the significance section
    and the seed bands all show. Opens on preselection() when the URL asks for new runs, else on
    the user's last selection in this session, else on default_selection()."""
    by_id = {r.run_id: r for r in runs}
    asked = preselection(runs)
    raw = st.query_params.get(URL_PARAM)
    if asked is not None and asked[1]:
        st.warning("Not in this lab, left out: " + ", ".join(f"`{md_text(i)}`" for i in asked[1]),
                   icon=":material/warning:")
    if asked is not None and (st.session_state.get("compare_runs_url") != raw or "compare_runs" not in st.session_state):
        st.session_state["compare_runs"] = asked[0]
        st.session_state["compare_runs_url"] = raw
    elif "compare_runs" not in st.session_state:  # a first visit, or back from another page
        default = default_selection(runs)
        kept = st.session_state.get("compare_picked")  # (what was picked, whether it was the default then)
        # A selection the user made stays; the default is worked out again (a run trained meanwhile joins it).
        st.session_state["compare_runs"] = kept[0] if kept and not kept[1] else default
    st.session_state["compare_runs"] = [i for i in st.session_state["compare_runs"] if i in by_id]
    picked = st.multiselect(
        "Runs to compare", list(by_id), key="compare_runs", max_selections=MAX_PICKED,
        format_func=lambda i: run_label(by_id[i]),
        help="one selection for the whole page: the curves, whether the runs really differ, and the seed "
             "bands. It opens on the best reference runs and your newest finished run.")
    st.session_state["compare_picked"] = (list(picked), list(picked) == default_selection(runs))
    return [by_id[i] for i in picked]


def runs_table(runs: list) -> None:
    """Every run in one table, the best test accuracy first."""
    runs = best_first(runs)
    table = tables.run_table(runs)
    table["test_acc_clean"] = [accuracy_without_confirmed(r) for r in runs]
    table["test_ci"] = [None if pd.isna(low) else f"{low:.2f}–{high:.2f}%"
                        for low, high in zip(table["test_low"], table["test_high"])]
    for run in runs:  # its clean-label figure is blank: say why, by name
        problem = predictions_problem(run)
        if problem:
            st.warning(f"**{md_text(run.name)}**: {md_text(problem)}", icon=":material/warning:")
    st.dataframe(
        table, key="compare_table", hide_index=True,
        placeholder="–",
        width="stretch", height=min(420, 38 + 35 * len(table)),
        column_order=["name", "test_acc", "test_ci", "reference", "arch", "status", "epochs", "val_acc",
                      "test_acc_clean", "parameters", "sec_per_epoch", "device", "group", "created", "run_id"],
        column_config={
            "name": st.column_config.TextColumn("Name", width=170, pinned=True),
            "reference": st.column_config.CheckboxColumn(
                "Reference", width=90, help="shipped with MNIST Lab (trained with the default recipe; cannot be "
                                            "renamed or deleted here)"),
            "arch": st.column_config.TextColumn("Arch", width=80),
            "status": st.column_config.TextColumn("Status", width=85),
            "parameters": st.column_config.NumberColumn("Parameters", format="localized", width=105),
            "epochs": st.column_config.NumberColumn("Epochs", width=75),
            "val_acc": st.column_config.NumberColumn("Val acc", format="%.2f%%", help=VAL_HELP, width=85),
            "test_acc": st.column_config.NumberColumn("Test acc", format="%.2f%%", width=90),
            "test_ci": st.column_config.TextColumn(
                "Test 95% CI", width=125,
                help="the 95% Wilson interval of the test accuracy: where the accuracy on "
                     "another 10,000 images like these would likely fall. Runs whose intervals "
                     "overlap may still differ: ask below"),
            "test_acc_clean": st.column_config.NumberColumn("Test acc (clean labels)", format="%.2f%%",
                                                            help=CLEAN_HELP, width=175),
            "sec_per_epoch": st.column_config.NumberColumn("s / epoch", format="%.2f", width=85),
            "device": st.column_config.TextColumn("Device", width=80),
            "group": st.column_config.TextColumn("Seed group", width=110,
                                                 help="runs of one recipe over several seeds "
                                                      "(`train --seeds`, or Seeds on the Train page)"),
            "created": st.column_config.TextColumn("Created", width=150),
            "run_id": st.column_config.TextColumn("Run id", width=260)})


def groups_table(runs: list) -> None:
    """Each seed group's test and validation accuracy as mean ± std (sample std) over its runs."""
    groups = tables.group_table(runs)
    if groups.empty:
        return
    st.subheader("Seed groups", divider="gray")
    st.caption("One recipe trained over several seeds: mean ± sample standard deviation over the group's "
               "finished runs (± – with a single run); a run that did not finish is counted out, test and "
               "validation alike. Pick a member run above to draw the group as a band.")
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
    """The curves' data with seed groups as bands: each chosen run of a group brings in its whole
    group, drawn as the mean (one line, label 'group (n runs)') with lower/upper at ± std; the
    other chosen runs stay one line each (lower/upper empty). Returns (lines, bands, own names)."""
    groups = {tables.run_group(r) for r in chosen} - {None}
    loose = [r for r in chosen if tables.run_group(r) is None]
    frame = tables.curves(loose, x=x, smoothing=smoothing)
    names = unique_names(loose)
    frame["run"] = frame["run_id"].map(names)
    own = {names[r.run_id] for r in loose if not r.reference}
    members = [r for r in runs if tables.run_group(r) in groups]
    bands = tables.group_curves(members, x=x, smoothing=smoothing)
    if not bands.empty:
        sizes = {g: sum(tables.run_group(r) == g for r in members) for g in groups}
        label = {g: f"{g} (mean ± std, {sizes[g]} runs)" for g in groups}
        bands["run"] = bands["group"].map(label)
        bands["raw"] = bands["value"]
        bands["time"] = bands["x"]
        bands["metric"] = ["loss" if "loss" in p else "accuracy" for p in bands["panel"]]
        bands["split"] = ["train" if p.startswith("train") else "validation" for p in bands["panel"]]
        own |= {label[g] for g in groups if any(not r.reference for r in members if tables.run_group(r) == g)}
    return frame.assign(std=float("nan"), lower=float("nan"), upper=float("nan")), bands, own


def curve_frame(chosen: list, x: str, smoothing: float, runs: list | None = None,
                bands: bool = False) -> tuple[pd.DataFrame, list[str], set[str]]:
    """The long table the curves draw (one row per run, split, metric and epoch; seed groups as
    mean ± std when `bands`), the names in the legend in the order picked, and the user's own among them."""
    if bands and any(tables.run_group(r) for r in chosen):
        lines, spread, own = band_frame(chosen, runs or chosen, x, smoothing)
        frame = lines if spread.empty else (spread if lines.empty else
                                              pd.concat([lines, spread], ignore_index=True))
    else:
        frame = tables.curves(chosen, x=x, smoothing=smoothing)
        names = unique_names(chosen)
        own = {names[r.run_id] for r in chosen if not r.reference}
        frame = frame.assign(run=frame["run_id"].map(names), std=float("nan"), lower=float("nan"),
                             upper=float("nan"))
    order = list(dict.fromkeys(frame["run"])) if not frame.empty else []
    return frame, order, own & set(order)


def curve_charts(frame: pd.DataFrame, order: list[str], own: set[str], x: str, smoothing: float) -> list[alt.Chart]:
    """Two charts, loss and accuracy, each with train (solid) and validation (dashed) of every run:
    a colour per run (run_palette: the user's runs warm, reference runs cool), the legend below;
    click a run in the legend to highlight it. Seed groups draw their ± std band."""
    pick = alt.selection_point(fields=["run"], bind="legend")
    x_title = "epoch" if x == "epoch" else "wall time (s)"
    x_enc = alt.X("x:Q", title=x_title, axis=alt.Axis(tickMinStep=1, format="d") if x == "epoch" else alt.Axis())
    color = run_colour("run", order, own, title="run (click to highlight)")
    dash = alt.StrokeDash("split:N", title=None, sort=["train", "validation"],
                          scale=alt.Scale(domain=["train", "validation"], range=[[1, 0], [6, 3]]),
                          legend=alt.Legend(orient="top", symbolType="stroke", symbolStrokeColor="#333333",
                                            symbolSize=400))
    tooltip = [alt.Tooltip("run:N"), alt.Tooltip("split:N"), alt.Tooltip("epoch:Q"),
               alt.Tooltip("time:Q", title="seconds", format=".1f"),
               alt.Tooltip("value:Q", title="value" if smoothing == 0 else "smoothed", format=".4f"),
               alt.Tooltip("raw:Q", format=".4f"), alt.Tooltip("std:Q", title="± std", format=".4f")]
    charts = []
    for metric, title in (("loss", "loss"), ("accuracy", "accuracy (%)")):
        base = alt.Chart(frame[frame["metric"] == metric])
        y = alt.Y("value:Q", title=title, scale=alt.Scale(zero=False))
        chart = base.mark_line(point=alt.OverlayMarkDef(size=30), strokeWidth=2).encode(
            x=x_enc, y=y, color=color, strokeDash=dash, detail="split:N",
            opacity=alt.condition(pick, alt.value(1.0), alt.value(0.12)), tooltip=tooltip,
        ).add_params(pick)
        if frame["lower"].notna().any():  # seed groups: mean ± std as a band
            band = base.mark_area(opacity=0.2).encode(
                x=x_enc, y=alt.Y("lower:Q", title=title, scale=alt.Scale(zero=False)), y2="upper:Q", color=color,
                detail="split:N", opacity=alt.condition(pick, alt.value(0.2), alt.value(0.03)))
            chart = alt.layer(band, chart)
        charts.append(fit_width(chart.properties(height=260)))
    return charts


def curves_section(chosen: list, runs: list) -> None:
    """The picked runs' loss and accuracy, train and validation, over epochs or wall time."""
    st.subheader("Curves", divider="gray")
    controls = st.columns([2, 2, 3])
    show_bands = controls[2].toggle("Show seed groups as bands", value=True, key="compare_bands",
                                    help="a picked run of a seed group draws its whole group: the mean over its "
                                         "seeds as a line, ± one sample standard deviation as a band")
    x_axis = controls[0].radio("X axis", ["epoch", "wall time"], horizontal=True, key="compare_x")
    smoothing = controls[1].slider("Smoothing", 0.0, 0.95, 0.0, 0.05, key="compare_smoothing",
                                   help="exponential moving average, as TensorBoard draws it")
    x = "epoch" if x_axis == "epoch" else "time"
    frame, order, own = curve_frame(chosen, x, smoothing, runs=runs, bands=show_bands)
    if frame.empty:
        st.info("The picked runs have no finished epoch yet: their curves appear after the first epoch.",
                icon=":material/hourglass_top:")
        return
    for column, chart in zip(st.columns(2, gap="large"), curve_charts(frame, order, own, x, smoothing)):
        column.altair_chart(chart, width="stretch")


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
        if st.form_submit_button("Rename", icon=":material/edit:", disabled=access.locked()) \
                and access.allowed("rename a run"):
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
            if st.button("Delete…", icon=":material/delete:",
                         disabled=run.status in ("running", "queued") or access.locked(),
                         help=access.LOCKED_HELP if access.locked() else "running and queued runs must be cancelled first"):
                st.session_state["compare_delete"] = run.run_id
                st.rerun()
        else:
            st.warning(f"Delete **{md_text(run.name)}** (`{run.run_id}`) and all its files? "
                       "This cannot be undone.")
            yes, no = st.columns(2)
            if yes.button("Yes, delete it", type="primary", icon=":material/delete_forever:",
                          disabled=access.locked()) and access.allowed("delete a run"):
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
    """The compare page, as Streamlit runs it (dashboard/app.py routes here).

    `/compare?runs=ID1,ID2` opens it on those runs (see preselection)."""
    st.title("Compare")
    st.caption("Every run in one table, the best first. Pick runs under it: the curves, the significance "
               "tests and the seed bands all show the same runs.")
    runs = load_runs()
    if not runs:
        no_runs_notice("No runs to compare yet: train two or more models on the **Train** page "
                       "(or `python -m core train --arch lenet`), then come back here.")
        st.stop()
    show_run_warnings(runs)
    runs_table(runs)
    chosen = pick_runs(runs)
    groups_table(runs)
    pairs_section(chosen)
    groups_section(runs)
    if chosen:
        curves_section(chosen, runs)
    else:
        st.info("Pick runs above to draw their curves.", icon=":material/lightbulb:")
    manage(runs)


if __name__ == "__main__":  # Streamlit runs a page as __main__; tests import it
    page()
