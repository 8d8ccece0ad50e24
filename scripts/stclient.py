"""A Streamlit session without a browser: Streamlit's own protobuf messages over its websocket.

What a browser tab does, minus the drawing of the page: it connects to /_stcore/stream, asks for a
page (a BackMsg `rerun_script` naming its URL path), reads the ForwardMsgs the script sends
(deltas: the elements, each widget with its id), and sends widget values back (a BackMsg with the
widget states; a widget inside a fragment reruns that fragment alone, as the browser does). Used by
the load driver (scripts/load_sketch.py) and by the tests that replay a visitor's session against
a real server (tests/test_access_server.py).

Why this and not Locust: Locust's users are synchronous (gevent) and it has no websocket user of
its own; thirty sessions that each hold a websocket and wait for their script's end are a few
asyncio tasks here, in one process that takes little of the 2 CPU cores the server needs.
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState

FINISHED = {ForwardMsg.FINISHED_SUCCESSFULLY, ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY}
SUPERSEDED = ForwardMsg.FINISHED_EARLY_FOR_RERUN
TRIGGERS = ("trigger_value", "json_trigger_value", "string_trigger_value")


class SessionError(Exception):
    """The server closed the session, answered with an exception, or did not answer in time."""


@dataclass
class Widget:
    id: str
    kind: str            # the element's type: "button", "bidi_component", "text_input", ...
    fragment_id: str     # "" outside a fragment
    proto: object
    seen: int = 0        # when it was last drawn: a widget whose id changed (its label, its help) leaves the old one


@dataclass
class Run:
    """One script run: when it was asked for, when it finished and how."""
    sent: float
    finished: float | None = None
    status: int | None = None
    exceptions: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float | None:
        return None if self.finished is None else self.finished - self.sent


class Session:
    """One tab: `await Session.open(url, "sketch")`, then `await session.set(...)` per interaction."""

    def __init__(self, websocket):
        self._ws = websocket
        self.widgets: dict[str, Widget] = {}       # by widget id
        self.texts: dict[tuple, str] = {}          # delta path -> the markdown/html text shown there
        self.page_hash = ""
        self.pages: dict[str, str] = {}            # url path -> page script hash
        self.runs: list[Run] = []
        self._states: dict[str, WidgetState] = {}  # every widget value this tab has sent, by id
        self._finished = asyncio.Event()
        self._reader = asyncio.create_task(self._read())
        self.closed: str | None = None
        self._seen = 0

    @classmethod
    async def open(cls, url: str, page: str = "", timeout: float = 60.0) -> "Session":
        from websockets.asyncio.client import connect
        ws_url = url.replace("http://", "ws://").rstrip("/") + "/_stcore/stream"
        websocket = await connect(ws_url, subprotocols=["streamlit"], max_size=None, open_timeout=timeout)
        session = cls(websocket)
        await session.goto(page, timeout=timeout)
        return session

    async def close(self) -> None:
        await self._ws.close()
        self._reader.cancel()

    # --- what the tab sends -------------------------------------------------------------------

    async def goto(self, page: str, timeout: float = 60.0) -> Run:
        """Open the page at URL path `page` ("" is the first page), as a click in the sidebar does."""
        self.widgets.clear()
        self.texts.clear()
        self._states.clear()
        return await self._rerun(page_name=page, page_hash=self.pages.get(page, ""), timeout=timeout)

    def widget(self, key: str) -> Widget:
        """The widget made with `key` (ids end with it: "$$ID-<hash>-<key>")."""
        found = [w for w in self.widgets.values() if w.id.endswith(f"-{key}")]
        if not found:
            raise SessionError(f"no widget with key {key!r} on this page")
        return max(found, key=lambda w: w.seen)

    def widget_named(self, kind: str, label: str) -> Widget:
        found = [w for w in self.widgets.values() if w.kind == kind and getattr(w.proto, "label", None) == label]
        if not found:
            raise SessionError(f"no {kind} labelled {label!r} on this page")
        return max(found, key=lambda w: w.seen)

    def stage(self, widget: Widget, **value) -> None:
        """A value typed into a form's field: sent with the next message (the form's button's)."""
        state = WidgetState(id=widget.id)
        for name, v in value.items():
            setattr(state, name, v)
        self._states[widget.id] = state

    async def set(self, widget: Widget, wait: bool = True, timeout: float = 60.0, **value) -> Run:
        """Send `widget`'s new value (one WidgetState field: trigger_value=True, json_value=...,
        string_value=...): the fragment it is in reruns, or the page. `wait=False` returns once
        sent (a run superseded by the next one finishes early: `Run.status`)."""
        state = WidgetState(id=widget.id)
        for name, v in value.items():
            setattr(state, name, v)
        return await self._rerun(page_name="", page_hash=self.page_hash, states={widget.id: state},
                                 fragment_id=widget.fragment_id, wait=wait, timeout=timeout)

    async def draw(self, pad: Widget, data_url: str | None, wait: bool = True, timeout: float = 60.0) -> Run:
        """What the Sketch pad sends when the pen lifts: its drawing as a PNG data URL."""
        return await self.set(pad, wait=wait, timeout=timeout, json_value=json.dumps({"drawing": data_url}))

    async def _rerun(self, *, page_name: str, page_hash: str, states: dict | None = None, fragment_id: str = "",
                     wait: bool = True, timeout: float = 60.0) -> Run:
        if self.closed:
            raise SessionError(f"the session is closed: {self.closed}")
        msg = BackMsg()
        client = msg.rerun_script
        client.page_name = page_name
        client.page_script_hash = page_hash
        client.fragment_id = fragment_id
        states = states or {}
        self._states.update({wid: s for wid, s in states.items() if s.WhichOneof("value") not in TRIGGERS})
        client.widget_states.widgets.extend({**self._states, **states}.values())  # a click is sent once
        run = Run(sent=time.perf_counter())
        self.runs.append(run)
        self._finished.clear()
        await self._ws.send(msg.SerializeToString())
        if wait:
            await self.wait(run, timeout)
        return run

    async def wait(self, run: Run, timeout: float = 60.0) -> Run:
        deadline = time.perf_counter() + timeout
        while run.finished is None:
            if self.closed:
                raise SessionError(f"the session closed: {self.closed}")
            left = deadline - time.perf_counter()
            if left <= 0:
                raise SessionError(f"no answer in {timeout:.0f} s")
            try:
                await asyncio.wait_for(self._finished.wait(), left)
            except TimeoutError:
                continue
            self._finished.clear()
        if run.exceptions:
            raise SessionError("the page raised: " + "; ".join(run.exceptions))
        return run

    # --- what the server sends ----------------------------------------------------------------

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed
        try:
            async for data in self._ws:
                msg = ForwardMsg()
                msg.ParseFromString(data)
                self._handle(msg)
        except ConnectionClosed as exc:
            self.closed = f"closed by the server ({exc.rcvd.code if exc.rcvd else 'no close frame'})"
        except Exception as exc:  # noqa: BLE001 - a broken message ends the session, said as such
            self.closed = f"unreadable message: {exc!r}"
        finally:
            self.closed = self.closed or "closed"
            self._finished.set()

    def _ended(self, status: int) -> None:
        """A run ended. Streamlit stops a run when the tab sends new values (FINISHED_EARLY_FOR_RERUN:
        the oldest request waiting was superseded) and runs once more with the newest values of all
        that came meanwhile: a run that ends normally answers the newest request, and every request
        still waiting before it was superseded (dropped, never computed)."""
        now = time.perf_counter()
        pending = [r for r in self.runs if r.finished is None]
        if not pending:
            return
        if status == SUPERSEDED:
            pending[0].finished, pending[0].status = now, status
            return
        for run in pending[:-1]:
            run.finished, run.status = now, SUPERSEDED
        pending[-1].finished, pending[-1].status = now, status
        if status == ForwardMsg.FINISHED_WITH_COMPILE_ERROR:
            pending[-1].exceptions.append("the script did not compile")

    def _current(self) -> Run | None:
        pending = [r for r in self.runs if r.finished is None]
        return pending[0] if pending else None

    def _handle(self, msg: ForwardMsg) -> None:
        kind = msg.WhichOneof("type")
        if kind == "new_session":
            self.page_hash = msg.new_session.page_script_hash
            self.pages.update({p.url_pathname: p.page_script_hash for p in msg.new_session.app_pages})
        elif kind == "navigation":
            self.page_hash = msg.navigation.page_script_hash or self.page_hash
            self.pages.update({p.url_pathname: p.page_script_hash for p in msg.navigation.app_pages})
        elif kind == "delta":
            self._delta(msg)
        elif kind == "script_finished":
            self._ended(msg.script_finished)
            self._finished.set()

    def _delta(self, msg: ForwardMsg) -> None:
        delta = msg.delta
        if delta.WhichOneof("type") != "new_element":
            return
        element = delta.new_element
        kind = element.WhichOneof("type")
        if kind is None:
            return
        inner = getattr(element, kind)
        path = tuple(msg.metadata.delta_path)
        if kind == "exception":
            run = self._current()
            if run is not None:
                run.exceptions.append(f"{inner.type}: {inner.message}")
            return
        if kind in ("markdown", "html"):
            self.texts[path] = inner.body
        wid = getattr(inner, "id", "")
        if isinstance(wid, str) and wid.startswith("$$ID-"):
            self._seen += 1
            self.widgets[wid] = Widget(wid, kind, delta.fragment_id, inner, self._seen)
