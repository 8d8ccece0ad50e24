"""What a page says instead of, or above, its content: a caught error (report), MNIST missing
(require_mnist, with its Fetch button), nothing to show yet, damaged run folders.

Errors: a LabError (core.errors) is the user's to read and becomes a message; anything else is a
bug or a fault of the machine and is shown with its traceback (st.exception).
"""
from __future__ import annotations

from typing import Sequence

import streamlit as st

from core.data import mnist as data_mod
from core.errors import LabError
from core.store.folder import store_problem
from core.store.runs import Run
from dashboard import access
from dashboard.state import cached_mnist
from dashboard.text import md_text


def report(exc: Exception, context: str = "", *, error: bool = False) -> None:
    """Show an error caught on a page. A LabError's message was written for the user: it becomes
    a warning (an error with error=True), after `context` (Markdown; the message is shown as
    text, md_text: it may quote a run's name or a value from a run folder). Anything else is a
    bug or a fault of the machine, not the user's to fix: it is shown with its traceback
    (st.exception)."""
    if isinstance(exc, LabError):
        text = f"{context}: {md_text(exc)}" if context else md_text(exc)
        if error:
            st.error(text, icon=":material/error:")
        else:
            st.warning(text, icon=":material/warning:")
    else:
        if context:
            st.caption(context)
        st.exception(exc)


def require_mnist(purpose: str = "This page") -> bool:
    """True if MNIST is on disk; otherwise say so and offer a "Fetch MNIST" button."""
    if data_mod.is_available(None):
        return True
    with st.container(border=True):
        st.warning(f"**MNIST is not on this machine yet.** {purpose} needs it "
                   f"(expected in `{data_mod.raw_dir(None)}`).", icon=":material/cloud_download:")
        st.caption("Fetching copies the four original files (about 55 MB) and checks their MD5 sums. "
                   "From a terminal: `python -m core fetch`.")
        if st.button("Fetch MNIST", type="primary", icon=":material/download:", key="fetch_mnist",
                     disabled=access.locked(), help=access.LOCKED_HELP if access.locked() else None) \
                and access.allowed("fetch MNIST"):
            with st.status("Fetching MNIST…", expanded=True) as status:
                try:
                    data_mod.fetch(None, report=status.write)
                except data_mod.DataError as exc:
                    status.update(label="Could not fetch MNIST", state="error")
                    st.error(str(exc))
                    return False
                status.update(label="MNIST is ready", state="complete")
            cached_mnist.clear()
            st.rerun()
    return False


def no_runs_notice(what_next: str, link_to_train: bool = True) -> None:
    """Say what to do when there is nothing to show yet, or why nothing can be: something other
    than a folder where the checkpoints folder should be."""
    problem = store_problem(None)
    if problem:
        st.error(md_text(problem), icon=":material/error:")
    else:
        st.info(what_next, icon=":material/lightbulb:")
    if link_to_train:
        st.page_link("views/train.py", label="Go to Train", icon=":material/model_training:")


def show_run_warnings(runs: Sequence[Run]) -> None:
    """One warning listing every run whose folder is damaged, half-written or old."""
    damaged = [(r, r.warnings) for r in runs if r.warnings]
    if not damaged:
        return
    lines = "\n".join(f"- `{r.run_id}`: {'; '.join(map(md_text, p))}" for r, p in damaged[:20])
    more = f"\n- … and {len(damaged) - 20} more" if len(damaged) > 20 else ""
    st.warning(f"**{len(damaged)} run folder{'s' if len(damaged) != 1 else ''} "
               f"{'have' if len(damaged) != 1 else 'has'} problems** (shown as far as readable):\n"
               f"{lines}{more}", icon=":material/warning:")

