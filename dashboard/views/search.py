"""Search: a hyperparameter study (core.training.search, Optuna) started from a form, and read
while it runs: its trials, the best so far, how the best grew with the epochs spent, each trial's
validation curve (pruned ones cut where they stopped), the trials across the searched knobs, and
which knob mattered most. Every trial is a run: any of them opens in Compare."""
from __future__ import annotations

import math
import time

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from core.config import DEVICES, ConfigError, TrainConfig
from core.errors import LabError
from core.models import get_spec, list_models
from core.recipe import KNOB
from core.store.folder import read_json
from core.training import search
from dashboard import access
from dashboard import glossary
from dashboard.charts import fit_width
from dashboard.knobs import PLAIN, float_step
from dashboard.notices import report, require_mnist
from dashboard.text import md_text
from dashboard.widgets import status_badge

KEEP = {"persist_state": "session"}  # the form keeps its values while the user visits other pages
DEFAULT_ARCH = "mlp"
DEFAULT_KNOBS = ("lr", "batch_size")
MAX_EPOCHS = 10           # the recipe's epochs per trial, capped: a study trains many trials
DEFAULT_TRIALS = 20
DEFAULT_LIMIT = 10_000    # training images per trial: a study of quick trials
IMPORTANCE_TRIALS = 5     # finished trials before the importance is worth reading
POLL_SECONDS = 2.0
WATCH_SECONDS = 30        # after Start or Cancel: refresh even before the driver writes its state
COMPARE_RUNS = "runs"     # the Compare page's preselection, /compare?runs=ID1,ID2 (views/compare.py)
URL_PARAM = "study"       # /search?study=NAME opens the page on that study
# Knobs whose range reads best on a log scale (factors of ten matter, not differences).
LOG_KNOBS = ("lr", "weight_decay", "batch_size", "start_factor", "final_factor")
# A range for a knob whose recipe value is 0 (off), where a tenth and ten times say nothing.
ZERO_RANGES = {"weight_decay": (1e-5, 1e-2), "momentum": (0.0, 0.95), "label_smoothing": (0.0, 0.2),
               "adv_eps": (0.0, 0.3), "adv_warmup": (0.0, 0.5), "oe_weight": (0.0, 1.0)}
STATE_COLOURS = {"best": "#e8710a", "finished": "#1f5fa8", "pruned": "#9e9e9e", "running": "#54a24b",
                 "failed": "#d62728", "cancelled": "#bdbdbd", "interrupted": "#f2b134"}
SAMPLER_WORDS = {"tpe": "TPE (learns from earlier trials)", "random": "random (for comparison)"}
PRUNER_WORDS = {"asha": "ASHA (successive halving)", "hyperband": "Hyperband", "median": "median rule",
                "none": "none (every trial runs to the end)"}
INTRO = ("A **study** trains a series of short runs, its *trials*, each with other values of the knobs you "
         "choose. After each trial it learns which values do well and proposes the next ones nearer to them, "
         "and it stops a poor trial after an epoch or two instead of training it to the end. The trials are "
         "judged on their **validation accuracy** (on training images kept aside), never on the test set, "
         "so the test set still gives an honest figure for the winner.")


# --- the form --------------------------------------------------------------------------------

def default_range(name: str, value) -> tuple[float, float, bool]:
    """(low, high, log) for searching knob `name` around the recipe's `value`: a tenth to ten times
    it, inside the knob's bounds; a share close to 1 (a decay, a beta) as its distance to 1; a knob
    that is off (0) over ZERO_RANGES. Log scale for the knobs of LOG_KNOBS."""
    knob = KNOB[name]
    bottom, top = knob.bounds
    value = float(value or 0)
    if value == 0:
        low, high = ZERO_RANGES.get(name, (bottom or 0.0, min(top, 1.0) if top is not None else 1.0))
    elif knob.low == 0 and knob.high == 1 and 0.5 < value < 1:
        low, high = 1 - min(1.0, (1 - value) * 10), 1 - (1 - value) / 10
    else:
        low, high = value / 10, value * 10
    if bottom is not None:
        low = max(low, bottom)
        if knob.ends[0] == "(" and low <= bottom:
            low = bottom + (high - bottom) / 100
    if top is not None:
        high = min(high, top)
        if knob.ends[1] == ")" and high >= top:
            high = top - (top - low) / 100
    if knob.kind is int:
        low, high = max(int(round(low)), int(bottom or 0), 1 if name in LOG_KNOBS else 0), int(round(high))
        high = max(high, low + 1)
    log = name in LOG_KNOBS and low > 0
    return low, high, log


def keys(name: str) -> dict[str, str]:
    return {"low": f"search_low_{name}", "high": f"search_high_{name}", "log": f"search_log_{name}",
            "choices": f"search_choices_{name}"}


def choice_options(name: str) -> list[str]:
    knob = KNOB[name]
    return list(knob.choices) if knob.choices else ["false", "true"]


def apply_recipe(only_missing: bool = False) -> None:
    """The chosen architecture's recipe into every knob's range (all of them when the architecture
    changes; on the session's first visit, only those not set yet), and its epochs per trial."""
    arch = st.session_state["search_arch"]
    recipe = get_spec(arch).recipe
    values = {}
    for name in search.searchable():
        k = keys(name)
        if KNOB[name].choices or KNOB[name].kind is bool:
            values[k["choices"]] = choice_options(name)
        else:
            low, high, log = default_range(name, getattr(recipe, name))
            values.update({k["low"]: low, k["high"]: high, k["log"]: log})
    values["search_epochs"] = min(int(recipe.epochs), MAX_EPOCHS)
    values["search_name"] = search.default_name(arch)
    for key, value in values.items():
        if not only_missing or key not in st.session_state:
            st.session_state[key] = value


def range_widgets(name: str) -> None:
    """One knob's range: its two ends and the log switch, or the values to try of a choice."""
    knob = KNOB[name]
    k = keys(name)
    plain = PLAIN.get(name, knob.text)
    if knob.choices or knob.kind is bool:
        st.multiselect(f"{name}: values to try", choice_options(name), key=k["choices"], **KEEP,
                       help=f"{plain} The study tries each of the values picked here (two or more).")
        return
    label, low_col, high_col, log_col = st.columns([1.1, 1.4, 1.4, 0.9], vertical_alignment="bottom")
    label.markdown(f"**{name}**" + (f" :gray[({md_text(knob.unit)})]" if knob.unit else ""), help=plain)
    bottom, top = knob.bounds
    common = {"min_value": bottom, "max_value": top, **KEEP}
    if knob.kind is int:
        low_col.number_input("from", step=1, key=k["low"], help=f"The smallest {name} to try.", **common)
        high_col.number_input("to", step=1, key=k["high"], help=f"The largest {name} to try.", **common)
    else:
        low_col.number_input("from", step=float_step(st.session_state[k["low"]] or 0.01), format="%g",
                             key=k["low"], help=f"The smallest {name} to try.", **common)
        high_col.number_input("to", step=float_step(st.session_state[k["high"]] or 0.01), format="%g",
                              key=k["high"], help=f"The largest {name} to try.", **common)
    log_col.checkbox("log scale", key=k["log"], **KEEP,
                     help="Try values spread evenly over the factors of ten (0.001, 0.01, 0.1, ...) rather than "
                          "evenly between the ends: right for a learning rate, whose good values span powers of "
                          "ten. Needs a low end above 0.")


def _number(value) -> str:
    return str(int(value)) if isinstance(value, (int, np.integer)) else repr(float(value))


def param_text(name: str) -> str:
    """The knob's range as the command line writes it (lr=0.01:1:log, optimizer=sgd,adam)."""
    k = keys(name)
    if KNOB[name].choices or KNOB[name].kind is bool:
        picked = st.session_state.get(k["choices"]) or []
        if len(picked) < 2:
            raise ConfigError(f"{name}: pick two or more values to try")
        return f"{name}=" + ",".join(picked)
    low, high = st.session_state[k["low"]], st.session_state[k["high"]]
    return f"{name}={_number(low)}:{_number(high)}" + (":log" if st.session_state.get(k["log"]) else "")


def start_form(mnist_ok: bool) -> None:
    models = list_models()
    if st.session_state.get("search_arch") not in models:
        st.session_state["search_arch"] = DEFAULT_ARCH if DEFAULT_ARCH in models else models[0]
    apply_recipe(only_missing=True)
    if st.session_state.pop("search_new_name", False):  # the last study took the name: a fresh one
        st.session_state["search_name"] = search.default_name(st.session_state["search_arch"])
    st.session_state.setdefault("search_knobs", [k for k in DEFAULT_KNOBS])

    top = st.columns([1, 2])
    arch = top[0].selectbox("Architecture", models, key="search_arch", on_change=apply_recipe, **KEEP,
                            help="The model every trial trains. Its recipe fills the ranges below.")
    top[1].multiselect("Knobs to search", search.searchable(), key="search_knobs", **KEEP,
                       max_selections=search.MAX_PARAMS,
                       help="The settings the study varies; every other setting stays at the recipe's value "
                            f"(Train's Advanced section lists them). Recipe: {get_spec(arch).recipe.describe(' · ')}")
    knobs = st.session_state["search_knobs"]
    if knobs:
        st.caption("The range of each knob, filled from the recipe: a tenth to ten times its value. The "
                   "study only ever tries values inside these ranges.")
    for name in knobs:
        range_widgets(name)

    c = st.columns(4)
    c[0].number_input("Epochs per trial", min_value=1, max_value=1000, step=1, key="search_epochs", **KEEP,
                      help="How long a trial that is never stopped trains. The pruner stops poor trials "
                           "earlier: most trials train only an epoch or two.")
    st.session_state.setdefault("search_limit", DEFAULT_LIMIT)
    c[1].number_input("Training-set limit (0 = all)", min_value=0, step=1000, key="search_limit", **KEEP,
                      help="Train each trial on only this many images: many quick trials find good values "
                           "sooner than a few long ones.")
    st.session_state.setdefault("search_trials", DEFAULT_TRIALS)
    c[2].number_input("Trials", min_value=1, max_value=search.MAX_TRIALS, step=1, key="search_trials", **KEEP,
                      help="How many trials the study runs at most, stopped ones included.")
    st.session_state.setdefault("search_budget", 0)
    c[3].number_input("Epoch budget (0 = none)", min_value=0, step=10, key="search_budget", **KEEP,
                      help="Optional: the epochs the study may train in all, summed over its trials; it stops "
                           "when either budget is spent.")
    d = st.columns(4)
    st.session_state.setdefault("search_sampler", search.SAMPLERS[0])
    d[0].selectbox("Sampler", search.SAMPLERS, key="search_sampler", format_func=SAMPLER_WORDS.get, **KEEP,
                   help=glossary.help_text("tpe", "How the next values are picked. TPE starts with 5 random "
                                           "trials, then learns; random never learns, a baseline to compare with."))
    st.session_state.setdefault("search_pruner", search.PRUNERS[0])
    d[1].selectbox("Pruner", search.PRUNERS, key="search_pruner", format_func=PRUNER_WORDS.get, **KEEP,
                   help=glossary.help_text("pruned", "When a trial is stopped early. ASHA and Hyperband keep "
                                           "the best third of the trials at 1, 3, 9, ... epochs; the median rule "
                                           "stops a trial below the others' median at the same epoch; none trains "
                                           "every trial to the end."))
    st.session_state.setdefault("search_seed", 0)
    d[2].number_input("Seed", min_value=0, step=1, key="search_seed", **KEEP,
                      help="Fixes the sampler's draws and every trial's training: the same seed and settings "
                           "make the same study again.")
    st.session_state.setdefault("search_device", "auto")
    d[3].selectbox("Device", DEVICES, key="search_device", **KEEP, help=PLAIN["device"])
    st.text_input("Study name", key="search_name", **KEEP,
                  help="Names the study and its runs (\"NAME #3\" is its trial 3): letters, digits, '.', '_' "
                       "and '-'.")
    if st.button("Start the study", type="primary", icon=":material/travel_explore:",
                 disabled=not mnist_ok or access.locked(), key="search_start",
                 help=access.LOCKED_HELP if access.locked() else None):
        start(arch, knobs)


def start(arch: str, knobs: list[str]) -> None:
    """Create the study and start its driver; a bad request is one line in red and creates nothing."""
    if not access.allowed("start a study"):
        return
    ss = st.session_state
    name = (ss.get("search_name") or "").strip() or search.default_name(arch)
    try:
        if not knobs:
            raise ConfigError("choose at least one knob to search")
        params = tuple(search.parse_param(param_text(n)) for n in knobs)
        base = TrainConfig(arch=arch, epochs=int(ss["search_epochs"]), train_limit=int(ss["search_limit"]) or None,
                           device=ss["search_device"], seed=int(ss["search_seed"]))
        settings = search.Settings(study=name, base=base.to_dict(), params=params, trials=int(ss["search_trials"]),
                                   budget_epochs=int(ss["search_budget"]) or None, sampler=ss["search_sampler"],
                                   pruner=ss["search_pruner"], seed=int(ss["search_seed"]))
        search.launch(settings)
    except LabError as exc:
        report(exc, error=True)
        return
    ss["search_pick"] = name
    ss["search_new_name"] = True
    ss["search_watch"] = (name, time.time() + WATCH_SECONDS)
    ss["search_launched"] = f"Started the study **{md_text(name)}**: its trials show below as they train."
    st.rerun()


# --- one study: its trials as tables and charts -------------------------------------------------

def _fmt(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def values_text(params: dict) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in params.items())


def shown_state(row: dict, study_state: str) -> str:
    """A trial's state as the page says it (search.trial_rows already calls a stopped study's
    running trial interrupted: `search --resume` goes on with it)."""
    if row["state"] == "running" and study_state != "running":
        return "interrupted"
    return row["state"]


def best_row(rows: list[dict]) -> dict | None:
    finished = [r for r in rows if r["state"] == "finished" and r["val_acc"] is not None]
    return max(finished, key=lambda r: (r["val_acc"], -r["number"]), default=None)


def trials_table(rows: list[dict], params: list[search.Param], study_state: str) -> pd.DataFrame:
    table = pd.DataFrame({
        "trial": [r["number"] for r in rows],
        "state": [shown_state(r, study_state) for r in rows],
        "epochs": [r["epochs"] for r in rows],
        "val_acc": [r["val_acc"] for r in rows],
        **{p.name: [r["params"].get(p.name) for r in rows] for p in params},
        "note": [r["why"] for r in rows],
        "run_id": [r["run_id"] for r in rows]})
    for p in params:  # a choice column as text (bools and numbers side by side read alike)
        if p.choices:
            table[p.name] = [None if v is None else _fmt(v) for v in table[p.name]]
    return table


def show_table(table: pd.DataFrame, params: list[search.Param]) -> None:
    colour = {s: f"color: {c}" for s, c in STATE_COLOURS.items()}
    styled = table.style.map(lambda s: colour.get(s, "") + "; font-weight: 600", subset=["state"])
    config = {
        "trial": st.column_config.NumberColumn("Trial", width=60, pinned=True),
        "state": st.column_config.TextColumn("State", width=90,
                                             help="finished: trained to the end · pruned: stopped early, behind the "
                                                  "others at the same epoch · running: training now · interrupted: "
                                                  "stopped with the study, `search --resume` goes on with it · "
                                                  "failed: could not train (see Note)"),
        "epochs": st.column_config.NumberColumn("Epochs", width=70, help="epochs the trial trained"),
        "val_acc": st.column_config.NumberColumn("Val acc", format="%.2f%%", width=85,
                                                 help="validation accuracy after its last epoch (what the study "
                                                      "maximises; for a pruned trial, where it stopped)"),
        "note": st.column_config.TextColumn("Note", width=220),
        "run_id": st.column_config.TextColumn("Run id", width=240)}
    for p in params:
        config[p.name] = (st.column_config.TextColumn(p.name, width=90) if p.choices else
                          st.column_config.NumberColumn(p.name, format="%.4g" if KNOB[p.name].kind is float else "%d",
                                                        width=90))
    st.dataframe(styled, key="search_trials_table", hide_index=True, width="stretch", column_config=config,
                 height=min(420, 38 + 35 * len(table)), placeholder="–")


def history_frame(rows: list[dict]) -> pd.DataFrame:
    """One row per trial in trial order: the epochs the study had spent when it ended (each
    trial's epochs, summed over it and the ones before), its validation accuracy, and the best
    finished trial's so far (NaN before the first one finishes)."""
    ordered = sorted(rows, key=lambda r: r["number"])
    best, out = math.nan, []
    spent = 0
    for r in ordered:
        spent += r["epochs"]
        finished = r["state"] == "finished" and r["val_acc"] is not None
        if finished:
            best = r["val_acc"] if math.isnan(best) else max(best, r["val_acc"])
        out.append({"trial": r["number"], "state": r["state"], "epochs_spent": spent,
                    "val_acc": r["val_acc"] if finished else math.nan, "best_so_far": best,
                    "values": values_text(r["params"])})
    return pd.DataFrame(out, columns=["trial", "state", "epochs_spent", "val_acc", "best_so_far", "values"])


def history_chart(frame: pd.DataFrame) -> alt.LayerChart:
    x = alt.X("epochs_spent:Q", title="epochs trained by the study so far", scale=alt.Scale(zero=True),
              axis=alt.Axis(tickMinStep=1, format="d"))
    y_scale = alt.Scale(zero=False, nice=True)
    tooltip = [alt.Tooltip("trial:Q", title="trial"), alt.Tooltip("state:N"),
               alt.Tooltip("epochs_spent:Q", title="epochs spent"),
               alt.Tooltip("val_acc:Q", title="val acc", format=".2f"),
               alt.Tooltip("best_so_far:Q", title="best so far", format=".2f"), alt.Tooltip("values:N")]
    base = alt.Chart(frame)
    step = base.transform_filter("isValid(datum.best_so_far)").mark_line(
        interpolate="step-after", strokeWidth=2.5, color=STATE_COLOURS["best"]).encode(
        x=x, y=alt.Y("best_so_far:Q", title="validation accuracy (%)", scale=y_scale), tooltip=tooltip)
    points = base.transform_filter("isValid(datum.val_acc)").mark_point(
        filled=True, size=70, color=STATE_COLOURS["finished"], opacity=0.9).encode(
        x=x, y=alt.Y("val_acc:Q", scale=y_scale), tooltip=tooltip)
    return fit_width(alt.layer(step, points).properties(height=260, description="search-history"))


def curves_frame(rows: list[dict], study_state: str) -> pd.DataFrame:
    best = best_row(rows)
    out = []
    for r in rows:
        state = shown_state(r, study_state)
        kind = "best" if best is not None and r["number"] == best["number"] else state
        last = max(r["curve"]) if r["curve"] else None
        for epoch, acc in r["curve"].items():
            out.append({"trial": r["number"], "state": state, "line": kind, "epoch": int(epoch), "val_acc": acc,
                        "last": epoch == last, "values": values_text(r["params"])})
    return pd.DataFrame(out, columns=["trial", "state", "line", "epoch", "val_acc", "last", "values"])


def curves_chart(frame: pd.DataFrame) -> alt.LayerChart:
    kinds = [k for k in STATE_COLOURS if k in set(frame["line"])]
    colour = alt.Color("line:N", title="trial", sort=kinds,
                       scale=alt.Scale(domain=kinds, range=[STATE_COLOURS[k] for k in kinds]),
                       legend=alt.Legend(orient="bottom", direction="horizontal", columns=min(len(kinds), 3),
                                         symbolType="stroke", symbolStrokeWidth=3))
    dash = alt.StrokeDash("line:N", sort=kinds, legend=None,
                          scale=alt.Scale(domain=kinds, range=[[4, 3] if k == "pruned" else [1, 0] for k in kinds]))
    tooltip = [alt.Tooltip("trial:Q"), alt.Tooltip("state:N"), alt.Tooltip("epoch:Q"),
               alt.Tooltip("val_acc:Q", title="val acc", format=".2f"), alt.Tooltip("values:N")]
    x = alt.X("epoch:Q", title="epoch", axis=alt.Axis(tickMinStep=1, format="d"))
    y = alt.Y("val_acc:Q", title="validation accuracy (%)", scale=alt.Scale(zero=False))
    lines = alt.Chart(frame).mark_line(strokeWidth=2).encode(
        x=x, y=y, color=colour, strokeDash=dash, detail="trial:N", tooltip=tooltip,
        strokeWidth=alt.condition("datum.line == 'best'", alt.value(3.5), alt.value(1.8)),
        order="epoch:Q")
    ends = alt.Chart(frame).transform_filter("datum.last && datum.state != 'pruned'").mark_point(
        size=45, filled=True).encode(x=x, y=y, color=colour, tooltip=tooltip)
    cut = alt.Chart(frame).transform_filter("datum.last && datum.state == 'pruned'").mark_point(
        size=110, filled=True, shape="cross", strokeWidth=0).encode(x=x, y=y, color=colour, tooltip=tooltip)
    return fit_width(alt.layer(lines, ends, cut).properties(height=260, description="search-curves"))


def position(param: search.Param, value) -> float:
    """Where `value` sits on the knob's axis, 0 at the range's low end and 1 at its high end (on
    a log scale for a log range); a choice by its place in the list."""
    if value is None:
        return math.nan
    if param.choices:
        texts = [_fmt(c) for c in param.choices]
        return texts.index(_fmt(value)) / max(1, len(texts) - 1) if _fmt(value) in texts else math.nan
    low, high, value = float(param.low), float(param.high), float(value)
    if param.log:
        low, high, value = math.log10(low), math.log10(high), math.log10(value)
    return (value - low) / (high - low) if high > low else 0.5


def parallel_frames(rows: list[dict], params: list[search.Param],
                    study_state: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The trials (finished and pruned) with each knob's place on its axis (0..1) and its value as
    text, and the axes' tick labels."""
    out = []
    for r in rows:
        if r["state"] not in ("finished", "pruned") or r["val_acc"] is None:
            continue
        row = {"trial": r["number"], "state": shown_state(r, study_state), "val_acc": r["val_acc"]}
        for p in params:
            row[p.name] = position(p, r["params"].get(p.name))
            row[f"raw_{p.name}"] = _fmt(r["params"].get(p.name))
        out.append(row)
    ticks = []
    for p in params:
        if p.choices:
            ticks += [{"knob": p.name, "position": position(p, c), "label": _fmt(c)} for c in p.choices]
        else:
            middle = math.sqrt(p.low * p.high) if p.log else (p.low + p.high) / 2
            if KNOB[p.name].kind is int:
                middle = round(middle)
            ticks += [{"knob": p.name, "position": position(p, v), "label": _fmt(v)}
                      for v in (p.low, middle, p.high)]
    columns = ["trial", "state", "val_acc"] + [c for p in params for c in (p.name, f"raw_{p.name}")]
    return pd.DataFrame(out, columns=columns), pd.DataFrame(ticks, columns=["knob", "position", "label"])


def parallel_chart(frame: pd.DataFrame, ticks: pd.DataFrame, params: list[search.Param]) -> alt.LayerChart:
    names = [p.name for p in params]
    x = alt.X("knob:N", sort=names, title=None, scale=alt.Scale(type="point", padding=0.25),
              axis=alt.Axis(labelAngle=0, orient="top", grid=True, gridColor="#999", domain=False, ticks=False,
                            labelFontWeight="bold", labelFontSize=12, labelPadding=8))
    y = alt.Y("position:Q", axis=None, scale=alt.Scale(domain=[0, 1]))
    lines = alt.Chart(frame).transform_window(index="count()").transform_fold(
        names, as_=["knob", "position"]).transform_calculate(value="datum['raw_' + datum.knob]").mark_line(
        strokeWidth=2, opacity=0.85).encode(
        x=x, y=y, detail="index:N",
        color=alt.Color("val_acc:Q", title="validation accuracy (%)", scale=alt.Scale(scheme="viridis"),
                        legend=alt.Legend(orient="bottom", direction="horizontal", gradientLength=200,
                                          format=".1f")),
        strokeDash=alt.condition("datum.state == 'pruned'", alt.value([4, 3]), alt.value([1, 0])),
        tooltip=[alt.Tooltip("trial:Q"), alt.Tooltip("state:N"),
                 alt.Tooltip("val_acc:Q", title="val acc", format=".2f"),
                 alt.Tooltip("knob:N"), alt.Tooltip("value:N")])
    labels = alt.Chart(ticks).mark_text(align="left", dx=5, fontSize=11, color="#444").encode(
        x=alt.X("knob:N", sort=names, scale=alt.Scale(type="point", padding=0.25)), y=y, text="label:N")
    return fit_width(alt.layer(lines, labels).properties(
        height=280, width="container", description="search-parallel",
        padding={"left": 10, "top": 5, "bottom": 5, "right": 40}))


def importance_section(study, name: str, rows: list[dict], params: list[search.Param]) -> None:
    st.markdown("**Which knob mattered most**", help=glossary.help_text("importance"))
    finished = sum(r["state"] == "finished" for r in rows)
    if len(params) < 2:
        st.caption("Importance compares the searched knobs with one another: this study searches only one.")
        return
    if finished < IMPORTANCE_TRIALS:
        more = IMPORTANCE_TRIALS - finished
        st.caption(f"Shows once {IMPORTANCE_TRIALS} trials have finished: {finished} so far, {more} more "
                   f"needed (pruned trials do not count: they never reach the end).")
        return
    cache_key = (name, finished)
    cached = st.session_state.get("search_importance")
    if cached and cached[0] == cache_key:
        importances = cached[1]
    else:
        try:
            importances = search.importances(study)
        except LabError as exc:  # an importance that cannot be computed must not break the page
            st.warning(f"The importance could not be computed: {md_text(str(exc))}", icon=":material/warning:")
            return
        st.session_state["search_importance"] = (cache_key, importances)
    frame = pd.DataFrame({"knob": list(importances), "importance": [float(v) for v in importances.values()]})
    chart = alt.Chart(frame).mark_bar(color=STATE_COLOURS["finished"]).encode(
        x=alt.X("importance:Q", title="share of the differences explained", axis=alt.Axis(format="%"),
                scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("knob:N", title=None, sort="-x"),
        tooltip=[alt.Tooltip("knob:N"), alt.Tooltip("importance:Q", format=".1%")])
    st.altair_chart(fit_width(chart.properties(height=max(80, 32 * len(frame)), description="search-importance")),
                    width="stretch", key="search_importance_chart")
    st.caption(f"How much of the spread in validation accuracy between the {finished} finished trials each knob "
               "explains (fANOVA): a long bar is a knob worth tuning, a short one barely matters in these ranges. "
               "With few trials it is a rough guide.")


def compare_section(rows: list[dict], name: str) -> None:
    with_runs = [r for r in sorted(rows, key=lambda r: (r["val_acc"] is None, -(r["val_acc"] or 0), r["number"]))
                 if r["run_id"]]
    if not with_runs:
        return
    by_id = {r["run_id"]: r for r in with_runs}
    key = f"search_compare_pick_{name}"  # one pick per study: another study's runs are not its options
    kept = [i for i in st.session_state.get(key) or [] if i in by_id]
    # the best two finished trials until the user picks: also once the first trials finish while it runs
    st.session_state[key] = kept or [r["run_id"] for r in with_runs if r["state"] == "finished"][:2]
    picked = st.multiselect(
        "Open in Compare", list(by_id), key=key,
        format_func=lambda i: f"#{by_id[i]['number']} · {by_id[i]['state']} · "
                              + (f"{by_id[i]['val_acc']:.2f}%" if by_id[i]["val_acc"] is not None else "–"),
        max_selections=12,
        help="Every trial is a run: Compare shows their curves side by side and whether their test "
             "accuracies really differ.")
    if st.button("Open in Compare", icon=":material/balance:", key="search_compare", disabled=not picked):
        st.switch_page("views/compare.py", query_params={COMPARE_RUNS: ",".join(picked)})


def cancel_button(name: str) -> None:
    if st.button("Cancel study", icon=":material/stop:", key=f"search_cancel_{name}", disabled=access.locked(),
                 help=access.LOCKED_HELP if access.locked() else "Stops the study: the trial training now saves its "
                      "run and stops; `python -m core search --resume NAME` goes on later.") \
            and access.allowed("cancel a study"):
        try:
            stopped = search.cancel(name)
        except LabError as exc:
            report(exc, error=True)
            return
        st.session_state["search_watch"] = (name, time.time() + WATCH_SECONDS)
        st.toast("Stopping the study…" if stopped else "The study had already stopped",
                 icon=":material/stop_circle:")


def watching(name: str) -> bool:
    watch = st.session_state.get("search_watch")
    return bool(watch and watch[0] == name and time.time() < watch[1])


def study_view(name: str) -> None:
    """The picked study; while it runs, Streamlit reruns this alone every POLL_SECONDS."""
    state = search.study_state(name)
    shown = "starting" if state == "interrupted" and watching(name) and \
        not (search.study_dir(name) / search.STATE).exists() else state
    head, badge, button = st.columns([4, 1.2, 1.4], vertical_alignment="center")
    with badge:
        status_badge("running" if shown == "starting" else shown)
    if state == "running":
        with button:
            cancel_button(name)
    try:
        settings, study = search.load_study(name)
        rows = search.trial_rows(study, live=state == "running")
    except LabError as exc:
        head.markdown(f"**{md_text(name)}**")
        report(exc, error=True)
        return
    params = list(settings.params)
    spent = sum(r["epochs"] for r in rows)
    budget = " and ".join(b for b in (f"{settings.trials} trials" if settings.trials else "",
                                      f"{settings.budget_epochs} epochs" if settings.budget_epochs else "") if b)
    base = settings.base
    head.markdown(f"**{md_text(name)}** · {md_text(base.get('arch'))}, {base.get('epochs')} epochs per trial"
                  + (f" on {base['train_limit']:,} images" if base.get("train_limit") else ""))
    st.caption(f"Searches {', '.join('`' + p.text + '`' for p in params)} · {SAMPLER_WORDS.get(settings.sampler)} "
               f"sampler · {PRUNER_WORDS.get(settings.pruner, settings.pruner)} pruner · budget {budget} · "
               f"{len(rows)} trials, {spent} epochs trained so far")
    if state == "failed":
        message = (read_json(search.study_dir(name) / search.STATE) or {}).get("message", "")
        st.error(f"The study's driver failed{': ' + md_text(message) if message else ''}. Its trials so far stay "
                 "below.", icon=":material/error:")
    elif state == "interrupted" and shown != "starting":
        st.info("No driver runs this study now (it was killed, or the machine restarted): "
                f"`python -m core search --resume {md_text(name)}` goes on with it, no trial lost.",
                icon=":material/pause_circle:")
    if not rows:
        st.info("No trial yet: the study has just started; its first trial shows here within seconds."
                if shown in ("running", "starting") else "No trial yet.", icon=":material/hourglass_empty:")
        finish_polling(state, name)
        return

    best = best_row(rows)
    if best is not None:
        line, link = st.columns([4, 1.4], vertical_alignment="center")
        line.markdown(f":material/emoji_events: **Best so far: trial #{best['number']}**, "
                      f"{best['val_acc']:.2f}% validation accuracy, with {md_text(values_text(best['params']))}")
        if link.button("Open the best in Compare", icon=":material/balance:", key="search_compare_best",
                       help="Compare with this trial's run picked: its curves, its test accuracy."):
            st.switch_page("views/compare.py", query_params={COMPARE_RUNS: best["run_id"]})
    else:
        st.markdown("No trial has finished yet: the best shows here once one has.")
    counts = pd.Series([shown_state(r, state) for r in rows]).value_counts()
    st.caption(" · ".join(f"{n} {s}" for s, n in counts.items()))
    show_table(trials_table(rows, params, state), params)

    left, right = st.columns(2, gap="large")
    with left:
        st.markdown("**How the best grew**")
        st.altair_chart(history_chart(history_frame(rows)), width="stretch", key="search_history_chart")
        st.caption("Each dot is a finished trial's validation accuracy, placed at the epochs the study had "
                   "trained when it ended; the orange steps are the best so far. Steps that flatten early mean "
                   "more trials add little.")
    with right:
        st.markdown("**Each trial's validation curve**")
        st.altair_chart(curves_chart(curves_frame(rows, state)), width="stretch", key="search_curves_chart")
        st.caption("One line per trial. Dashed grey lines ending in a cross are pruned trials, stopped at that "
                   "epoch because they were behind; the thick orange line is the best trial.")
    left, right = st.columns(2, gap="large")
    with left:
        st.markdown("**The trials across the knobs**")
        frame, ticks = parallel_frames(rows, params, state)
        if len(frame):
            st.altair_chart(parallel_chart(frame, ticks, params), width="stretch", key="search_parallel_chart")
            st.caption("One line per trial, crossing each knob's axis at the value it tried (bottom: the low end "
                       "of the range, top: the high end). Bright lines did well: where they bunch on an axis is "
                       "a good value for that knob. Dashed lines were pruned.")
        else:
            st.caption("The trials show here once one has finished or been pruned.")
    with right:
        importance_section(study, name, rows, params)
    compare_section(rows, name)
    finish_polling(state, name)


def finish_polling(state: str, name: str) -> None:
    """While the study runs, say so; once it stops, one full rerun drops the fragment's timer."""
    if state == "running" or watching(name):
        st.caption(":material/autorenew: updating while the study runs")
    elif st.session_state.get("search_polling"):
        st.session_state["search_polling"] = False
        st.rerun()


def pick_study(names: list[str]) -> str:
    wanted = st.query_params.get(URL_PARAM)
    if wanted in names and st.session_state.get("search_from_url") != wanted:
        st.session_state["search_pick"], st.session_state["search_from_url"] = wanted, wanted
    if st.session_state.get("search_pick") not in names:
        st.session_state["search_pick"] = names[0]
    name = st.selectbox("Study", names, key="search_pick", help="The studies in this lab, the newest first.")
    if st.query_params.get(URL_PARAM) != name:
        st.query_params[URL_PARAM] = name
        st.session_state["search_from_url"] = name
    return name


def page() -> None:
    """The search page, as Streamlit runs it (dashboard/app.py routes here)."""
    st.title("Search")
    st.markdown(INTRO)
    mnist_ok = require_mnist("A study")
    if st.session_state.get("search_launched"):
        st.success(st.session_state.pop("search_launched"), icon=":material/travel_explore:")
    names = search.study_names()
    with st.expander("Start a study", expanded=not names, icon=":material/add:"):
        start_form(mnist_ok)
    if not names:
        st.info("No study yet: choose the knobs to search above and press **Start the study**. With the "
                "mlp, a training-set limit of 10,000 and 20 trials, a study takes a few minutes on a CPU.",
                icon=":material/lightbulb:")
        st.stop()
    st.subheader("Studies", divider="gray")
    name = pick_study(names)
    polling = search.study_state(name) == "running" or watching(name)
    st.session_state["search_polling"] = polling
    st.fragment(study_view, run_every=POLL_SECONDS if polling else None)(name)


if __name__ == "__main__":  # Streamlit runs a page as __main__; tests import it
    page()
