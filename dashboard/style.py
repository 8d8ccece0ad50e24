"""The dashboard's few CSS rules, in one place, injected once per page run by dashboard/app.py.

Streamlit's own layout does almost everything (columns stack under 640 px, `width="stretch"`
charts and tables take their container's width, tables scroll inside themselves). What it does
not do, and why each rule is here:

- A chart drawn at a fixed width wider than the screen (a Vega-Lite chart with `width=` set, or a
  grid of many columns) would widen the page, and the whole page would scroll sideways on a phone:
  each chart scrolls inside its own box instead.
- Long words (run ids, file paths in captions) could do the same: they may break anywhere.
- On a phone (under 640 px) the main block's top padding (6rem, room for a toolbar) pushes
  everything down; Sketch's pad must fit above the fold, so it shrinks there.
"""
from __future__ import annotations

import streamlit as st

CSS = """<style>
[data-testid="stVegaLiteChart"], [data-testid="stArrowVegaLiteChart"] { max-width: 100%; overflow-x: auto; }
[data-testid="stMarkdownContainer"], [data-testid="stCaptionContainer"] { overflow-wrap: anywhere; }
@media (max-width: 640px) {
  [data-testid="stMainBlockContainer"] { padding-top: 3.5rem; }
}
</style>"""


def inject() -> None:
    """Add the rules to the page (an st.html element: no space taken; st.html puts a <style>-only
    body in the page's head area rather than the flow)."""
    st.html(CSS)
