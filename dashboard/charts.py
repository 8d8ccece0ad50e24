"""Charts the pages share (Altair): a run's training curves, a model's class probabilities."""
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


def probability_chart(probabilities: np.ndarray, height: int = 180) -> alt.Chart:
    """Bars of the ten class probabilities, the predicted class highlighted."""
    frame = pd.DataFrame({"digit": [str(d) for d in range(10)], "probability": probabilities.astype(float)})
    top = str(int(np.argmax(probabilities)))
    return alt.Chart(frame).mark_bar(cornerRadiusEnd=3).encode(
        x=alt.X("digit:N", title=None, sort=None, axis=alt.Axis(labelAngle=0)),
        y=alt.Y("probability:Q", title=None, scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
        color=alt.condition(alt.datum.digit == top, alt.value("#f58518"), alt.value("#4c78a8")),
        tooltip=[alt.Tooltip("digit:N"), alt.Tooltip("probability:Q", format=".2%")],
    ).properties(height=height)
