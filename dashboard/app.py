"""MNIST Lab dashboard: `streamlit run dashboard/app.py` (or `make run`).

This file only routes: every page is a thin view in dashboard/views/ over the `core` library.
(The folder is not called pages/: Streamlit would treat that as its older multipage layout.)
The app root, `/`, is the first page (views/home.py: what the lab is and what to try); every
other page has its own URL path.
`core` and `dashboard` are imported as installed packages (`make install` installs this
project editable), so the app starts from any working directory.
"""
from __future__ import annotations

import streamlit as st

from dashboard import access, style

HOME = ("views/home.py", "Start here", "", ":material/home:")  # the first page, at "/"
PAGES = [  # (file, title, url path, icon): the pages after it, each at its own path
    ("views/train.py", "Train", "train", ":material/model_training:"),
    ("views/compare.py", "Compare", "compare", ":material/stacked_line_chart:"),
    ("views/evaluate.py", "Evaluate", "evaluate", ":material/grid_on:"),
    ("views/mistakes.py", "Mistakes", "mistakes", ":material/error_outline:"),
    ("views/label_issues.py", "Label issues", "label-issues", ":material/label_off:"),
    ("views/embedding.py", "Embedding map", "embedding", ":material/scatter_plot:"),
    ("views/robustness.py", "Robustness", "robustness", ":material/shield:"),
    ("views/sketch.py", "Sketch", "sketch", ":material/draw:"),
    ("views/inside.py", "Inside the network", "inside", ":material/layers:"),
    ("views/data.py", "Data", "data", ":material/dataset:"),
    ("views/sweep.py", "Sweep", "sweep", ":material/grid_view:"),
    ("views/search.py", "Search", "search", ":material/travel_explore:"),
]


def main() -> None:
    st.set_page_config(page_title="MNIST Lab", page_icon=":material/draw:", layout="wide")
    home = st.Page(HOME[0], title=HOME[1], icon=HOME[3], default=True)  # at "/"
    style.inject()  # the few CSS rules Streamlit's layout lacks (phones, too-wide charts): dashboard/style.py
    access.guard()  # opened beyond this machine with no owner password: every page says how to set one
    pages = [st.Page(path, title=title, url_path=url, icon=icon) for path, title, url, icon in PAGES]
    page = st.navigation([home, *pages], expanded=True)  # every page listed: none folded under "View more"
    with st.sidebar:
        st.caption(":material/draw: **MNIST Lab** · train, compare and probe digit classifiers")
    access.sidebar()  # the owner's sign-in, before the page: a page may stop its script early
    page.run()


if __name__ == "__main__":  # Streamlit runs the app as __main__; tests import PAGES from here
    main()
