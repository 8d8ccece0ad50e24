"""Charts the pages share (Altair): a run's training curves, reliability diagrams, a matrix of
pairwise p-values; and what every chart shares: a colour per run (user's runs and reference runs
in different hue families), legends below in columns, scales that start or centre at white."""
from __future__ import annotations

import colorsys

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st


def show_history(curves: pd.DataFrame, height: int = 220, stacked: bool = False) -> None:
    """One run's loss and accuracy (core.store.tables.live_curves), train and validation: side by
    side, or one under the other with `stacked` (for a narrow column, where side by side squashes them)."""
    colours = alt.Scale(domain=["train", "validation"], range=["#4c78a8", "#f58518"])
    integer_epochs = bool((curves["epoch"] % 1 == 0).all())
    places = [st.container(), st.container()] if stacked else st.columns(2)
    for column, metric in zip(places, ("loss", "accuracy")):
        frame = curves[curves["metric"] == metric]
        chart = alt.Chart(frame).mark_line(point=True, strokeWidth=2).encode(
            x=alt.X("epoch:Q", title="epoch",
                    axis=alt.Axis(tickMinStep=1, format="d" if integer_epochs else ".1~f")),
            y=alt.Y("value:Q", title=metric if metric == "loss" else "accuracy (%)",
                    scale=alt.Scale(zero=False), axis=alt.Axis(format=".3~f" if metric == "loss" else ".1~f",
                                                               tickCount=4)),
            color=alt.Color("split:N", title=None, scale=colours,
                            legend=alt.Legend(orient="bottom", direction="horizontal", symbolType="stroke")),
            tooltip=[alt.Tooltip("split:N"), alt.Tooltip("epoch:Q", format=".2f"),
                     alt.Tooltip("value:Q", title=metric, format=".4f")],
        ).properties(height=height)
        column.altair_chart(fit_width(chart), width="stretch")


def reliability_chart(curves: dict[str, pd.DataFrame], height: int = 320) -> alt.LayerChart:
    """Accuracy against mean confidence per confidence bin (core.analysis.calibration.reliability),
    one line per name in `curves`; behind them, bars of each bin's image count on the right axis
    (a square-root scale: the top bin holds most images), so a near-empty bin's swing reads as such.
    The diagonal is perfect calibration."""
    frame = pd.concat([rows.assign(probabilities=name) for name, rows in curves.items()], ignore_index=True)
    names = list(curves)
    colour = alt.Color("probabilities:N", title=None, sort=names,
                       scale=alt.Scale(domain=names, range=["#1f5fa8", "#e8710a"][:len(names)] or ["#1f5fa8"]),
                       legend=legend_below(len(names)))
    tooltip = [alt.Tooltip("probabilities:N", title="probabilities"),
               alt.Tooltip("lower:Q", title="bin from", format=".3f"),
               alt.Tooltip("upper:Q", title="bin to", format=".3f"), alt.Tooltip("count:Q", title="images in the bin"),
               alt.Tooltip("confidence:Q", title="mean confidence", format=".4f"),
               alt.Tooltip("accuracy:Q", title="accuracy", format=".4f")]
    scale = alt.Scale(domain=[0, 1])
    x = alt.X("confidence:Q", title="confidence (bins of the top probability)", scale=scale, axis=alt.Axis(format="%"))
    counts = alt.Chart(frame).mark_rect(opacity=0.3).encode(
        x=alt.X("lower:Q", scale=scale, title="confidence (bins of the top probability)", axis=alt.Axis(format="%")),
        x2="upper:Q",
        y=alt.Y("count:Q", title="images in the bin (bars)", scale=alt.Scale(type="sqrt"),
                axis=alt.Axis(orient="right", grid=False, tickCount=5)),
        y2=alt.datum(0), color=colour, tooltip=tooltip)
    diagonal = alt.Chart(pd.DataFrame({"confidence": [0.0, 1.0], "accuracy": [0.0, 1.0]})).mark_line(
        strokeDash=[4, 4], color="#888").encode(x=x, y=alt.Y("accuracy:Q", scale=scale, axis=None))
    lines = alt.Chart(frame).mark_line(point=True, strokeWidth=2).encode(
        x=x, y=alt.Y("accuracy:Q", title="accuracy in the bin (lines)", scale=scale, axis=alt.Axis(format="%")),
        color=colour, tooltip=tooltip)
    return fit_width(alt.layer(counts, alt.layer(diagonal, lines)).resolve_scale(y="independent")
                     .properties(height=height, padding={"left": 5, "top": 5, "bottom": 5, "right": 10}))


def p_value_matrix(p_values: pd.DataFrame, names: dict[str, str], alpha: float, height: int = 360) -> alt.Chart:
    """A square of pairwise Holm-corrected p-values (run ids as index and columns), labelled with
    `names`; a pair under `alpha` is marked as a difference. Every label shows (the column labels
    angled, a long name cut with "…" and whole in the tooltip). A click on a cell selects the point
    parameter "pair" with the cell's row_id and column_id (the two run ids)."""
    frame = p_values.rename_axis("row_id").reset_index().melt(id_vars="row_id", var_name="column_id", value_name="p")
    frame["row"] = frame["row_id"].map(names)
    frame["column"] = frame["column_id"].map(names)
    order = [names[i] for i in p_values.index]
    frame["verdict"] = np.where(frame["p"].isna(), "", np.where(frame["p"] < alpha, "different", "no evidence"))
    frame["text"] = [("" if np.isnan(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")) for p in frame["p"]]
    pair = alt.selection_point(name="pair", fields=["row_id", "column_id"], on="click", clear=False)
    base = alt.Chart(frame).encode(
        x=alt.X("column:N", title=None, sort=order,
                axis=alt.Axis(labelAngle=-40, labelLimit=110, labelOverlap=False, orient="top")),
        y=alt.Y("row:N", title=None, sort=order, axis=alt.Axis(labelLimit=110, labelOverlap=False)),
        tooltip=[alt.Tooltip("row:N", title="run"), alt.Tooltip("column:N", title="against"),
                 alt.Tooltip("p:Q", title="p, Holm-corrected", format=".4f"),
                 alt.Tooltip("verdict:N", title=f"at the {alpha:.0%} level")])
    cells = base.mark_rect(stroke="#333333").encode(
        color=alt.Color("verdict:N", title=f"at the {alpha:.0%} level",
                        scale=alt.Scale(domain=["different", "no evidence", ""], range=["#f58518", "#c6dbef", "#f4f4f4"]),
                        legend=alt.Legend(orient="bottom", values=["different", "no evidence"], direction="vertical")),
        strokeWidth=alt.condition(pair, alt.value(2.5), alt.value(0), empty=False),
    ).add_params(pair)
    text = base.mark_text(fontSize=11).encode(text="text:N")
    return fit_width(alt.layer(cells, text).properties(  # room on the right for the last angled label
        height=height, title="Holm-corrected p-values (click a cell)", padding={"left": 5, "top": 5, "bottom": 5,
                                                                              "right": 20}))


# --- Colours and legends every chart shares -------------------------------------------------------

WHITE = "#ffffff"
COUNT_RANGE = [WHITE, "#08306b"]  # count matrices: zero is white, the largest count dark blue
DIVERGING_RANGE = ["#b2182b", WHITE, "#1a7f37"]  # worse (red) · no difference (white) · better (green)
# Hue families (degrees on the colour wheel): a user's own runs centre on orange, reference runs on
# blue, opposite each other, and FAMILY_GAP degrees always separate the two families.
OWN_CENTRE, REFERENCE_CENTRE = 20.0, 200.0
FAMILY_GAP = 40.0
MAX_STEP = 60.0  # degrees between neighbouring runs' hues, at most
LEGEND_COLUMNS = 2  # two entries a row fit a 390 px phone at LEGEND_LABEL_LIMIT
LEGEND_LABEL_LIMIT = 110  # px; a longer name is cut with "…" and shown whole in the tooltip


def _arc(count: int, centre: float, step: float) -> list[float]:
    """`count` hues `step` degrees apart centred on `centre`, in an order that puts neighbours in
    the legend far apart on the wheel."""
    hues = [(centre + step * (i - (count - 1) / 2)) % 360 for i in range(count)]
    order = list(range(0, count, 2)) + list(range(1, count, 2))
    return [hues[i] for i in order]


def _hex(hue: float, lightness: float = 0.45, saturation: float = 0.75) -> str:
    r, g, b = colorsys.hls_to_rgb(hue / 360, lightness, saturation)
    return "#{:02x}{:02x}{:02x}".format(*(round(255 * c) for c in (r, g, b)))


def run_palette(names: list[str], own: set[str] | frozenset[str] = frozenset()) -> dict[str, str]:
    """A colour per name, each its own hue: names in `own` (the user's runs) take hues around orange,
    the others (reference runs) hues around blue, FAMILY_GAP degrees apart at least; when only one
    kind is present it keeps to its family's side of the wheel as long as the runs fit there."""
    mine = [n for n in names if n in own]
    theirs = [n for n in names if n not in own]
    if mine and theirs:  # both families, one step apart within each, FAMILY_GAP between them
        step = min(MAX_STEP, (360 - 2 * FAMILY_GAP) / max(1, len(names) - 2))
        hues = dict(zip(theirs, _arc(len(theirs), REFERENCE_CENTRE, step))) | \
            dict(zip(mine, _arc(len(mine), OWN_CENTRE, step)))
    else:  # one family only: around its centre, spreading to the whole wheel only for many runs
        step = min(MAX_STEP, 360 / max(1, len(names)))
        hues = dict(zip(names, _arc(len(names), OWN_CENTRE if mine else REFERENCE_CENTRE, step)))
    return {n: _hex(hues[n]) for n in names}


def run_colour(field: str, names: list[str], own: set[str] | frozenset[str] = frozenset(),
               title: str | None = "run", symbol: str = "stroke") -> alt.Color:
    """The colour encoding of a chart with a line or bar per run: run_palette's colours, the legend
    below the chart in LEGEND_COLUMNS columns (every run listed; long names cut, whole in the tooltip)."""
    palette = run_palette(names, own)
    return alt.Color(f"{field}:N", title=title, sort=names,
                     scale=alt.Scale(domain=names, range=[palette[n] for n in names]),
                     legend=legend_below(len(names), symbolType=symbol))


def legend_below(entries: int, **extra) -> alt.Legend:
    """A legend under the chart, wrapped into columns so it never runs past a phone's width."""
    return alt.Legend(orient="bottom", direction="vertical" if entries > 1 else "horizontal",
                      columns=min(LEGEND_COLUMNS, max(1, entries)), labelLimit=LEGEND_LABEL_LIMIT,
                      **{"symbolType": "stroke", "symbolStrokeWidth": 3, **extra})


def count_scale(largest: float, symlog: bool = True) -> alt.Scale:
    """A sequential scale for counts that starts at white: a zero cell is white, never pale blue.
    Interpolated in Lab: Vega's default, HCL, gives white no hue and keeps the far end's chroma,
    so the scale would start at a pale cyan instead."""
    return alt.Scale(type="symlog" if symlog else "linear", domain=[0, max(float(largest), 1.0)],
                     range=COUNT_RANGE, clamp=True, interpolate="lab")


def diverging_scale(limit: float) -> alt.Scale:
    """A red-white-green scale over [-limit, limit] with white at 0 (no difference), interpolated
    in Lab (see count_scale)."""
    limit = max(float(limit), 1e-9)
    return alt.Scale(domain=[-limit, limit], domainMid=0, range=DIVERGING_RANGE, clamp=True, interpolate="lab")


def fit_width(chart, svg: bool = True):
    """The chart with Vega's "fit-x" autosize: it takes the container's width and keeps its own
    height for the plot, legends and labels added beneath (Streamlit's default "fit" squeezes the
    plot to make room for a legend below it, down to nothing on a phone). With `svg` it is drawn
    as SVG (crisp text, and a legend a screen reader or a test can read); charts of thousands of
    marks pass svg=False and stay on canvas."""
    chart = chart.properties(autosize=alt.AutoSizeParams(type="fit-x", contains="padding"))
    return chart.properties(usermeta={"embedOptions": {"renderer": "svg"}}) if svg else chart
