"""The real server, spoken to as a browser tab speaks to it (scripts/stclient.py: Streamlit's own
messages over its websocket): a visitor's replayed Start click starts nothing, while the owner's,
after signing in over the same wire, starts a training; and a tab that draws faster than the
server answers gets its latest drawing's cards."""
from __future__ import annotations

import asyncio

import pytest

from scripts import harness
from scripts.stclient import FINISHED, Session
from tests.test_access import PASSWORD, children, disk
from tests.test_run_names import hostile_copy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = hostile_copy(tmp_path_factory.mktemp("wire-runs"), name="my lenet")
    server = harness.start_server(root, log=tmp_path_factory.mktemp("wire-log") / "server.log", stop_jobs=True,
                                  owner_password=PASSWORD)
    yield server
    server.stop()


async def start_clicked(url: str, sign_in: str | None) -> Session:
    tab = await Session.open(url, "train")
    if sign_in is not None:
        tab.stage(tab.widget("access_password"), string_value=sign_in)  # typed; sent with the form's button
        await tab.set(tab.widget_named("button", "Sign in"), trigger_value=True)
    tab.stage(tab.widget("train_limit"), int_value=500)  # a small job: it is cancelled at once anyway
    start = tab.widget_named("button", "Start training")
    await tab.set(start, trigger_value=True)
    return tab


def test_a_replayed_start_click_trains_only_for_the_owner(lab):
    from core.store.runs import list_runs
    from core.training import jobs

    async def scenario():
        before, running = disk(lab.checkpoints), children(lab.process.pid)
        visitor = await start_clicked(lab.url, None)
        assert visitor.widget_named("button", "Start training").proto.disabled  # as drawn for a visitor
        await asyncio.sleep(2)
        assert disk(lab.checkpoints) == before and children(lab.process.pid) == running
        wrong = await start_clicked(lab.url, "not the password")
        await asyncio.sleep(1)
        assert disk(lab.checkpoints) == before and children(lab.process.pid) == running
        owner = await start_clicked(lab.url, PASSWORD)  # the control: the same click, signed in
        assert not owner.widget_named("button", "Start training").proto.disabled
        for tab in (visitor, wrong, owner):
            await tab.close()
    asyncio.run(scenario())
    started = [r for r in list_runs(lab.checkpoints) if r.status in ("queued", "running")]
    assert len(started) == 1 and started[0].arch == "lenet" and started[0].config["train_limit"] == 500
    jobs.cancel(started[0].run_id, lab.checkpoints)


def test_a_tab_drawing_faster_than_the_server_answers_gets_its_latest_drawings_cards(lab):
    from scripts.load_sketch import cards, drawings
    images = drawings(6)

    async def scenario():
        calm = await Session.open(lab.url, "sketch")
        pad = next(w for w in calm.widgets.values() if w.kind == "bidi_component")
        await calm.draw(pad, images[0])  # the models load
        await calm.draw(pad, images[-1])
        oracle = cards(calm)  # the last drawing alone, answered before anything else is sent
        await calm.close()

        hurried = await Session.open(lab.url, "sketch")
        pad = next(w for w in hurried.widgets.values() if w.kind == "bidi_component")
        sent = [await hurried.draw(pad, image, wait=False) for image in images]  # no wait between them
        await hurried.wait(sent[-1], timeout=60)
        latest = cards(hurried)
        await hurried.close()
        return oracle, latest, sent
    oracle, latest, sent = asyncio.run(scenario())
    assert oracle and len(oracle) >= 2  # one card per default model
    assert latest == oracle
    assert sent[-1].status in FINISHED
    assert all(run.finished is not None for run in sent)  # none is left hanging: answered or finished early
    # sent within a millisecond or so, while each run takes tens: the stale ones were dropped, not computed
    assert sum(run.status in FINISHED for run in sent) < len(sent)
