"""Data: MNIST as training sees it (train / validation / test), class counts, each class's mean
image, and a Kaggle-format CSV import shown as images (or its errors)."""
from __future__ import annotations

import altair as alt
import numpy as np
import streamlit as st

from core.config import TrainConfig
from core.data import view as dataview
from core.data.csvfile import CSVFormatError, read_digits_csv
from core.data.mnist import raw_dir
from dashboard import access
from dashboard.notices import require_mnist
from dashboard.state import mnist
from dashboard.widgets import digit_grid

PER_PAGE = 30  # seed 004 looked at the first 30 images first
SPLIT_COLOURS = alt.Scale(domain=list(dataview.SPLITS), range=["#4c78a8", "#f58518", "#54a24b"])


@st.cache_data(max_entries=4, show_spinner="Averaging images…")
def mean_images(raw: str, val_size: int, seed: int) -> np.ndarray:
    arrays = mnist()
    positions = dataview.split_positions("train", len(arrays["train_labels"]), val_size, seed)
    return dataview.mean_images(arrays["train_images"][positions], arrays["train_labels"][positions])


@st.cache_data(max_entries=4, show_spinner="Reading the CSV…")
def read_csv(content: bytes):
    return read_digits_csv(content)


def split_view(arrays: dict, split: str):
    """(images of the split's file, positions in it, labels) without copying the images."""
    positions = dataview.split_positions(split, len(arrays["train_labels"]))
    if positions is None:
        return arrays["test_images"], np.arange(len(arrays["test_labels"])), arrays["test_labels"]
    return arrays["train_images"], positions, arrays["train_labels"][positions]


def samples(arrays: dict) -> None:
    st.subheader("Samples", divider="gray")
    c = st.columns([1, 1, 1, 2], vertical_alignment="bottom")
    split = c[0].selectbox("Split", dataview.SPLITS, key="data_split")
    digit = c[1].selectbox("Class", ["all", *range(10)], key="data_class")
    images, positions, labels = split_view(arrays, split)
    chosen_digit = None if digit == "all" else int(digit)
    available = len(labels) if chosen_digit is None else int((labels == chosen_digit).sum())
    pages = max(1, -(-available // PER_PAGE))
    page = c[2].number_input("Page", min_value=1, max_value=pages, step=1, key="data_page")
    page = min(page, pages)
    c[3].caption(f"{available:,} images · page {page} of {pages:,} · validation: the "
                 f"{TrainConfig.val_size:,} training images that runs hold out (seed {dataview.SPLIT_SEED})")
    chosen = dataview.select_samples(labels, chosen_digit, (page - 1) * PER_PAGE, PER_PAGE)
    file_index = positions[chosen]
    digit_grid(images[file_index], [f"{labels[i]} · #{j}" for i, j in zip(chosen, file_index)],
               size=84)


def counts(arrays: dict) -> None:
    st.subheader("Class counts", divider="gray")
    labels = {split: split_view(arrays, split)[2] for split in dataview.SPLITS}
    frame = dataview.class_counts(labels)
    chart_col, table_col = st.columns([2, 1], gap="large")
    chart = alt.Chart(frame).mark_bar().encode(
        x=alt.X("digit:O", title="digit", axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("split:N", sort=list(dataview.SPLITS)),
        y=alt.Y("count:Q", title="images"),
        color=alt.Color("split:N", scale=SPLIT_COLOURS, sort=list(dataview.SPLITS),
                        legend=alt.Legend(orient="top", title=None)),
        tooltip=["split:N", "digit:O", alt.Tooltip("count:Q", format=",")],
    ).properties(height=300)
    chart_col.altair_chart(chart, width="stretch")
    table_col.dataframe(dataview.counts_table(frame), width="stretch", height=38 + 35 * 11,
                        key="data_counts")


def means(arrays: dict) -> None:
    st.subheader("Mean image of each class", divider="gray")
    st.caption("The average of every training-split image of a digit: how much the writing varies.")
    averages = mean_images(str(raw_dir(None).resolve()), TrainConfig.val_size, dataview.SPLIT_SEED)
    scaled = averages / np.maximum(averages.max(axis=(1, 2), keepdims=True), 1e-6)  # full contrast
    digit_grid(scaled, [str(d) for d in range(10)], size=84)


def csv_import() -> None:
    st.subheader("Import a CSV", divider="gray")
    st.caption("Kaggle digit-recognizer format: a header, an optional `label` column and 784 columns "
               "`pixel0`…`pixel783` (values 0..255, row by row).")
    if not access.is_owner():  # no uploader at all: a visitor's session never holds a file
        st.caption(":material/lock: Importing a CSV is the lab's owner's: sign in under Owner sign-in in the sidebar.")
        return
    upload = st.file_uploader("CSV file (Kaggle digit-recognizer format)", type=["csv"], key="data_csv")
    if upload is None:
        return
    try:
        table = read_csv(upload.getvalue())
    except CSVFormatError as exc:
        st.error(f"**{upload.name}** is not in the digits format: {exc}", icon=":material/error:")
        return
    n = len(table)
    labelled = table.has_labels
    st.success(f"**{upload.name}**: {n:,} digit{'s' if n != 1 else ''}, "
               f"{'with' if labelled else 'without'} labels.", icon=":material/check_circle:")
    pages = max(1, -(-n // PER_PAGE))
    page = st.number_input("CSV page", min_value=1, max_value=pages, step=1, key="data_csv_page")
    rows = np.arange((min(page, pages) - 1) * PER_PAGE, min(n, min(page, pages) * PER_PAGE))
    images = table.images[rows].numpy()
    captions = ([f"row {r + 1} · {int(table.labels[r])}" for r in rows] if labelled
                else [f"row {r + 1}" for r in rows])
    digit_grid(images, captions, size=84)


def page() -> None:
    """The data page, as Streamlit runs it (dashboard/app.py routes here)."""
    st.title("Data")
    st.caption("MNIST as the models see it: 60,000 training images (55,000 train + 5,000 validation) "
               "and 10,000 test images, 28x28, white on black.")
    if require_mnist("Browsing MNIST"):
        arrays = mnist()
        if arrays is not None:
            samples(arrays)
            counts(arrays)
            means(arrays)
    csv_import()


if __name__ == "__main__":  # Streamlit runs a page as __main__; tests import it
    page()
