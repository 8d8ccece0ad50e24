"""Charts the pages share (Altair): a run's training curves, reliability diagrams, a matrix of pairwise p-values."""
from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st


def show_history(curves: pd.DataFrame, height: int = 220) -> None:
    """One run's loss and accuracy (core.store.tables.live_curves), train and validation, side by side."""
    colours = alt.Scale(domain=["train", "validation"], range=["#4c78a8", "#f58518"])
    integer_epochs = bool((curves["epoch"] % 1 == 0).all())
    for column, metric in zip(st.columns(2), ("loss", "accuracy")):
        frame = curves[curves["metric"] == metric]
        chart = alt.Chart(frame).mark_line(point=True, strokeWidth=2).encode(
            x=alt.X("epoch:Q", title="epoch",
                    axis=alt.Axis(tickMinStep=1, format="d" if integer_epochs else ".1~f")),
            y=alt.Y("value:Q", title=metric if metric == "loss" else "accuracy (%)",
                    scale=alt.Scale(zero=False), axis=alt.Axis(format=".3~f" if metric == "loss" else ".1~f")),
            color=alt.Color("split:N", title=None, scale=colours, legend=alt.Legend(orient="top")),
            tooltip=[alt.Tooltip("split:N"), alt.Tooltip("epoch:Q", format=".2f"),
                     alt.Tooltip("value:Q", title=metric, format=".4f")],
        ).properties(height=height)
        column.altair_chart(chart, width="stretch")


def reliability_chart(curves: dict[str, pd.DataFrame], height: int = 300) -> alt.Chart:
    """Accuracy against mean confidence per confidence bin (core.analysis.calibration.reliability),
    one line per name in `curves`, the point's size its image count; the diagonal is calibration."""
    frame = pd.concat([rows.assign(probabilities=name) for name, rows in curves.items()], ignore_index=True)
    diagonal = alt.Chart(pd.DataFrame({"x": [0.0, 1.0], "y": [0.0, 1.0]})).mark_line(
        strokeDash=[4, 4], color="#888").encode(x="x:Q", y="y:Q")
    scale = alt.Scale(domain=[0, 1])
    lines = alt.Chart(frame).mark_line(point=True, strokeWidth=2).encode(
        x=alt.X("confidence:Q", title="mean confidence in the bin", scale=scale, axis=alt.Axis(format="%")),
        y=alt.Y("accuracy:Q", title="accuracy in the bin", scale=scale, axis=alt.Axis(format="%")),
        color=alt.Color("probabilities:N", title=None, legend=alt.Legend(orient="top")),
        tooltip=[alt.Tooltip("probabilities:N"), alt.Tooltip("lower:Q", title="bin from", format=".3f"),
                 alt.Tooltip("upper:Q", title="bin to", format=".3f"), alt.Tooltip("count:Q", title="images"),
                 alt.Tooltip("confidence:Q", format=".4f"), alt.Tooltip("accuracy:Q", format=".4f")])
    sizes = lines.mark_circle(opacity=0.35).encode(size=alt.Size("count:Q", title="images", legend=None,
                                                                  scale=alt.Scale(range=[20, 600])))
    return alt.layer(diagonal, lines, sizes).properties(height=height)


def p_value_matrix(p_values: pd.DataFrame, names: dict[str, str], alpha: float, height: int = 360) -> alt.Chart:
    """A square of pairwise p-values (run ids as index and columns), labelled with `names`; a pair
    under `alpha` is marked as a difference."""
    frame = p_values.rename(index=names, columns=names).rename_axis("row").reset_index().melt(
        id_vars="row", var_name="column", value_name="p")
    order = [names[i] for i in p_values.index]
    frame["verdict"] = np.where(frame["p"].isna(), "", np.where(frame["p"] < alpha, "different", "no evidence"))
    frame["text"] = [("" if np.isnan(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")) for p in frame["p"]]
    base = alt.Chart(frame).encode(
        x=alt.X("column:N", title=None, sort=order, axis=alt.Axis(labelAngle=-30, labelLimit=160)),
        y=alt.Y("row:N", title=None, sort=order, axis=alt.Axis(labelLimit=160)))
    cells = base.mark_rect().encode(
        color=alt.Color("verdict:N", title=f"at the {alpha:.0%} level",
                        scale=alt.Scale(domain=["different", "no evidence", ""], range=["#f58518", "#c6dbef", "#f4f4f4"]),
                        legend=alt.Legend(orient="top", values=["different", "no evidence"])),
        tooltip=[alt.Tooltip("row:N", title="run"), alt.Tooltip("column:N", title="against"),
                 alt.Tooltip("p:Q", title="p (Holm)", format=".4f")])
    text = base.mark_text(fontSize=12).encode(text="text:N")
    return alt.layer(cells, text).properties(height=height)
