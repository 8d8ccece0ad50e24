"""Owner and visitors: who may spend the lab's compute and change its runs.

With no owner password (core/owner.py) the lab is one trusted person's, as it always was, and it
listens on this machine only (`guard` stops every page otherwise). With a password, every session
is a visitor until it signs in, in the sidebar: a visitor browses every page, sketches, sees
saliency and the inside views and downloads what is already computed, but cannot start, cancel,
resume, rename, delete, upload, fit, compute a report or make the server reach another host.

The check is made where each action happens, on the server: every such action calls `allowed`
first, whatever its button looked like, since a client can send any widget's value (a disabled
button's click too). Buttons are also shown disabled to visitors (`locked`, `LOCKED_HELP`), so
nobody has to press one to find out.

Failed sign-ins are slowed down per client address: each failure answers only after a wait that
doubles (1, 2, 4 ... up to 30 s), and tries during the wait are turned away unchecked. The
password field is emptied, on the server too, as soon as it is checked; it is never shown or
logged.
"""
from __future__ import annotations

import os
import threading
import time

import streamlit as st

from core import owner
from core.errors import LabError

SIGNED_IN = "_access_signed_in"  # a session_state key no widget has: only a correct password sets it
FIRST_WAIT, LONGEST_WAIT = 1.0, 30.0  # seconds after a failed sign-in: doubling from the first to the longest
LOCKED_HELP = "Only the lab's owner can do this: sign in under Owner sign-in in the sidebar."

_failures: dict[str, tuple[int, float]] = {}  # client address -> (failures in a row, answer not before)
_failures_lock = threading.Lock()


def password_source() -> str | None:
    """core.owner.source(), or "damaged": a password file that cannot be read trusts nobody."""
    try:
        return owner.source()
    except LabError:
        return "damaged"


def is_owner() -> bool:
    where = password_source()
    if where is None:
        return True  # no password: the one person at this machine (guard() keeps it to loopback)
    return where != "damaged" and st.session_state.get(SIGNED_IN) is True


def locked() -> bool:
    """For a button's `disabled`: True for a visitor."""
    return not is_owner()


def allowed(action: str) -> bool:
    """The server's check before an owner's action (`action`: "start a training", ...). A visitor
    is told, once, and nothing happens."""
    if is_owner():
        return True
    st.toast(f"Only the lab's owner can {action}: sign in under Owner sign-in in the sidebar.", icon=":material/lock:")
    return False


def guard() -> None:
    """Stop every page of a lab opened beyond this machine with no owner password (started without
    `make run`, which refuses first). A password file damaged while the lab runs leaves every
    session a visitor (the sidebar says why), never the owner."""
    where = password_source()
    if where is not None:
        leave_a_core()
    if where == "damaged":
        return
    try:
        owner.check_listen(st.get_option("server.address") or "")
    except LabError as exc:
        st.error(f"MNIST Lab is closed: {exc}; or keep it to this machine (`make run`, or `streamlit run "
                 f"dashboard/app.py --server.address 127.0.0.1`).", icon=":material/lock:")
        st.stop()


def leave_a_core() -> None:
    """A lab with visitors keeps a core for them: the jobs it starts (trainings, sweeps, searches)
    compute on the others. Measured with 30 sessions drawing on a 2-core machine: the owner's lenet
    epochs took 2.13x and 2.30x as long as alone on torch's two threads, 1.31x (1.29-1.58) on one
    (docs/teaching.md). An OMP_NUM_THREADS the owner set is kept."""
    cores = os.cpu_count() or 1
    if cores > 1 and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(cores - 1)  # read by each job's torch as it starts


def _client() -> str:
    ip = st.context.ip_address
    return ip if isinstance(ip, str) else "unknown"


def _wait_left(client: str) -> float:
    with _failures_lock:
        _, until = _failures.get(client, (0, 0.0))
    return max(0.0, until - time.monotonic())


def _failed(client: str) -> float:
    """Count a failure; the wait before answering it (and before the next try is checked)."""
    with _failures_lock:
        count = _failures.get(client, (0, 0.0))[0] + 1
        wait = min(FIRST_WAIT * 2 ** (count - 1), LONGEST_WAIT)
        _failures[client] = (count, time.monotonic() + wait)
    return wait


def sign_in(password: str) -> str | None:
    """Check a sign-in for this session: None when signed in, else what to tell the visitor."""
    client = _client()
    if (left := _wait_left(client)) > 0:
        return f"Too many wrong passwords from here: try again in {left:.0f} s."
    if owner.verify(password):
        with _failures_lock:
            _failures.pop(client, None)
        st.session_state[SIGNED_IN] = True
        return None
    time.sleep(_failed(client))
    return "That is not the owner's password."


def sidebar() -> None:
    """Who you are here, and the owner's sign-in (or sign-out)."""
    where = password_source()
    if where is None:
        return  # one trusted person: nothing to sign into
    with st.sidebar:
        if where == "damaged":
            st.caption(":material/lock: The owner's password file is damaged: nobody can sign in until "
                       "`python -m core owner --set` sets it again.")
            return
        if is_owner():
            st.caption(":material/verified_user: Signed in as the lab's owner.")
            if st.button("Sign out", icon=":material/logout:", key="access_sign_out"):
                st.session_state.pop(SIGNED_IN, None)
                st.rerun()
            return
        st.caption(":material/visibility: **Visiting.** Browse, sketch and look inside every model; training, "
                   "deleting and uploading are the owner's.")
        with st.expander("Owner sign-in", icon=":material/key:"):
            with st.form("access_sign_in", border=False):
                st.text_input("Owner password", type="password", key="access_password", autocomplete="current-password")
                st.form_submit_button("Sign in", icon=":material/login:", on_click=_submitted)
            if problem := st.session_state.pop("_access_problem", None):
                st.error(problem, icon=":material/lock:")


def _submitted() -> None:
    """The sign-in form's callback, before the page is drawn: the field is emptied here, on the
    server too, so the password is kept nowhere once checked."""
    password = st.session_state.get("access_password") or ""
    st.session_state["access_password"] = ""
    problem = sign_in(password)
    if problem is not None:
        st.session_state["_access_problem"] = problem
