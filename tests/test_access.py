"""Owner and visitors (issue 40): the password kept only as a hash, the address check, the sign-in,
and every owner's action replayed from a visitor's session, which must change nothing on disk,
start no process and reach no host, while the same replay from the owner's session does act.

A replay here sets the widget values an owner's click sends and runs the real app in-process
(streamlit.testing). Twice: once as drawn (the visitor's buttons disabled, whose forged clicks
Streamlit itself discards), and once with every button drawn enabled, as if the page forgot to
lock one: then the click reaches the action, and the action's own check must refuse it."""
from __future__ import annotations

import hashlib
import os
import socket
import stat
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, cli_result, require_mnist
from tests.test_app import open_page, texts

PASSWORD = "correct horse battery"
LOCKED = "Only the lab's owner can"


@pytest.fixture
def owned(lab_env, monkeypatch):
    """The lab with an owner (for this start: the environment's password); every session a visitor."""
    monkeypatch.setenv("MNIST_LAB_OWNER_PASSWORD", PASSWORD)
    # the lab sets it for the jobs it starts (access.leave_a_core): put back whatever was there
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    return lab_env


def disk(*folders: Path) -> dict[str, str]:
    """Every file under `folders` by path, with a hash of its bytes: any write shows."""
    found = {}
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file() and ".locks" not in path.parts:
                found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def children(parent: int | None = None) -> set[int]:
    """The processes `parent` (default: this one) has started and that still run (a training job, a
    study's driver)."""
    parent = os.getpid() if parent is None else parent
    mine = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent and fields[0] != "Z":
                mine.add(int(entry.name))
    return mine


def sign_in(at, password: str = PASSWORD):
    at.text_input(key="access_password").set_value(password)
    next(b for b in at.button if b.label == "Sign in").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def button(at, label: str | None = None, key: str | None = None):
    return next(b for b in at.button if (key is None or b.key == key) and (label is None or b.label == label))


def press(widget):
    """Send a button's click whatever the server drew: AppTest, like a browser, will not click a
    disabled button, but a client that is not a browser sends any widget's value it likes
    (Streamlit 1.67 discards a disabled widget's forged value)."""
    widget.proto.disabled = False
    return widget.click()


def refused(at, action: str) -> None:
    assert [t.value for t in at.toast] == [f"{LOCKED} {action}: sign in under Owner sign-in in the sidebar."]
    assert not at.exception, [e.value for e in at.exception]


# --- the password ------------------------------------------------------------------------------

def test_set_keeps_only_an_argon2_hash_readable_by_its_user(tmp_path, monkeypatch):
    from argon2 import PasswordHasher

    from core import owner
    monkeypatch.setenv("MNIST_LAB_OWNER_FILE", str(tmp_path / "conf" / "owner-password"))
    done = cli_result("owner", "--set", input=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    kept = tmp_path / "conf" / "owner-password"
    text = kept.read_text()
    assert PASSWORD not in text and text.startswith("$argon2id$")
    assert PasswordHasher().verify(text.strip(), PASSWORD)  # the library's own check of what was kept
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert owner.verify(PASSWORD) and not owner.verify(PASSWORD + " ") and not owner.verify("")
    assert [p.name for p in kept.parent.iterdir()] == ["owner-password"]  # no temporary file left
    assert "set, kept in" in cli_result("owner").stdout
    assert cli_result("owner", "--clear").returncode == 0 and not kept.exists()
    assert "not set" in cli_result("owner").stdout


def test_a_short_password_and_a_damaged_file_are_refused_in_one_line(tmp_path, monkeypatch):
    from core import owner
    path = tmp_path / "owner-password"
    monkeypatch.setenv("MNIST_LAB_OWNER_FILE", str(path))
    done = cli_result("owner", "--set", input="short\n")
    assert (done.returncode, done.stderr) == (2, "error: the password is shorter than 8 characters: choose a longer "
                                                 "password\n")
    assert not path.exists()
    path.write_text("$argon2id$v=19$m=65536,t=3,p=4$cut-off")
    done = cli_result("owner")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "is damaged" in done.stderr
    assert not owner.verify(PASSWORD)  # damaged: nobody is the owner (refused, not trusted)
    with pytest.raises(owner.OwnerError):
        owner.source()


@pytest.mark.parametrize("address, listens", [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                               ("0.0.0.0", False), ("", False), ("192.168.1.20", False)])
def test_only_loopback_opens_without_a_password(address, listens, monkeypatch):
    import ipaddress

    from core import owner
    assert owner.is_loopback(address) is listens
    if address not in ("", "localhost"):  # the standard library's own answer
        assert ipaddress.ip_address(address).is_loopback is listens
    done = cli_result("owner", "--check-listen", address)
    assert done.returncode == (0 if listens else 2)
    if not listens:
        assert done.stderr.count("\n") == 1 and "python -m core owner --set" in done.stderr
    monkeypatch.setenv("MNIST_LAB_OWNER_PASSWORD", PASSWORD)
    assert cli_result("owner", "--check-listen", address).returncode == 0


@pytest.mark.slow  # make and a Python process (a second or two)
def test_make_run_on_every_interface_without_a_password_refuses_to_start():
    import subprocess
    import sys
    venv = Path(sys.executable).parent.parent
    done = subprocess.run(["make", "-s", "run", "ADDRESS=0.0.0.0", f"VENV={venv}", f"PORT={free_port()}"], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "MNIST_LAB_DATA":
                                                                            str(require_mnist())})
    assert done.returncode != 0
    ours = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert ours == ["error: the lab would listen on 0.0.0.0, where anyone who can reach this machine could train, "
                    "delete and upload as you: set an owner password first: `python -m core owner --set` (kept), or "
                    "MNIST_LAB_OWNER_PASSWORD=... for this start only"]
    assert "streamlit" not in done.stdout.lower()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_app_started_on_every_interface_without_a_password_shows_only_how_to_set_one(lab_env):
    from streamlit import config
    was = config.get_option("server.address")
    config.set_option("server.address", "0.0.0.0")
    try:
        at = open_page("train")
    finally:
        config.set_option("server.address", was)
    assert [e.value for e in at.error] == ["MNIST Lab is closed: the lab would listen on 0.0.0.0, where anyone who "
                                           "can reach this machine could train, delete and upload as you: set an "
                                           "owner password first: `python -m core owner --set` (kept), or "
                                           "MNIST_LAB_OWNER_PASSWORD=... for this start only; or keep it to this "
                                           "machine (`make run`, or `streamlit run dashboard/app.py --server.address "
                                           "127.0.0.1`)."]
    assert not at.button and not at.title


# --- signing in --------------------------------------------------------------------------------

def test_no_password_keeps_the_lab_one_persons(lab_env):
    at = open_page("train")
    assert not [b for b in at.button if b.label == "Sign in"]
    assert not button(at, "Start training").disabled


def test_a_visitor_signs_in_slowly_when_wrong_and_the_password_is_never_shown(owned, monkeypatch):
    from dashboard import access
    access._failures.clear()
    monkeypatch.setattr(access, "FIRST_WAIT", 0.25)  # the lab's 1 s, shortened: the doubling is what is tested
    at = open_page("train")
    assert "Visiting." in "".join(c.value for c in at.sidebar.caption)
    assert button(at, "Start training").disabled
    waits = []
    for wrong in ("not the password", "not it either"):
        started = time.monotonic()
        sign_in(at, wrong)
        waits.append(time.monotonic() - started)
        assert [e.value for e in at.error] == ["That is not the owner's password."]
        assert at.session_state["access_password"] == ""  # emptied on the server as soon as checked
        assert button(at, "Start training").disabled
    assert waits[0] >= access.FIRST_WAIT and waits[1] >= 2 * access.FIRST_WAIT  # each answer waited, longer
    # another tab from the same address, while a wrong try waits for its answer: turned away unchecked
    import threading
    other = open_page("train")
    slow = threading.Thread(target=sign_in, args=(open_page("train"), "wrong again"))
    slow.start()
    deadline = time.monotonic() + 30
    while max((n for n, _ in access._failures.values()), default=0) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)  # until the slow try is counted, and waits (4 x FIRST_WAIT) for its answer
    sign_in(other, PASSWORD)
    slow.join()
    assert [e.value for e in other.error][0].startswith("Too many wrong passwords from here: try again in")
    assert button(other, "Start training").disabled
    sign_in(at, PASSWORD)  # its wait is over: checked, and right
    assert not at.error
    assert "Signed in as the lab's owner." in "".join(c.value for c in at.sidebar.caption)
    assert not button(at, "Start training").disabled
    for shown in (texts(at), str([e.value for e in at.sidebar.caption]), str({key: at.session_state[key] for key in at.session_state})):
        assert PASSWORD not in shown and "not the password" not in shown and "not it either" not in shown
    button(at, "Sign out").click().run()
    assert button(at, "Start training").disabled


def test_a_damaged_password_file_trusts_nobody(lab_env, tmp_path, monkeypatch):
    (tmp_path / "owner-password").write_text("not a hash\n")
    at = open_page("train")
    assert button(at, "Start training").disabled
    assert "password file is damaged" in "".join(c.value for c in at.sidebar.caption)


# --- every owner's action, replayed from a visitor's session -----------------------------------

@pytest.fixture
def store(owned, trained_runs, tmp_path):
    root = owned(trained_runs.copy_to(tmp_path / "runs"))
    (tmp_path / "handwriting").mkdir()
    return root


def replayed(store: Path, tmp_path: Path, action: str, page: str, prepare, *, owner: bool = False,
             checked: bool = False):
    """Open `page` (as a visitor, or signed in as the owner), let `prepare(at)` set the widgets and
    click; what changed on disk and which processes were started. `checked`: the visitor's click
    reached the action (its buttons were drawn enabled), which must say it refused."""
    at = open_page(page)
    if owner:
        sign_in(at)
    before, running = disk(store, tmp_path / "handwriting"), children()
    prepare(at)
    assert not at.exception, [e.value for e in at.exception]
    if checked:
        refused(at, action)
    return at, before != disk(store, tmp_path / "handwriting"), children() - running


@pytest.fixture(params=["as drawn", "drawn enabled"])
def drawing(request, monkeypatch):
    """How the visitor's buttons are drawn: disabled (as the pages draw them), or enabled."""
    if request.param == "drawn enabled":
        from dashboard import access
        monkeypatch.setattr(access, "locked", lambda: False)
    return request.param


def click(label=None, key=None, widgets: dict | None = None):
    def prepare(at):
        for (kind, widget_key), value in (widgets or {}).items():
            getattr(at, kind)(key=widget_key).set_value(value)
            if kind != "text_input":  # a text field in a form is sent with its button
                at.run()
        press(button(at, label, key)).run()
    return prepare


VISITOR_REPLAYS = {  # action (as the toast says it) -> (page, the owner's widget values and click)
    "rename a run": ("compare", lambda ids: click("Rename", widgets={
        ("selectbox", "compare_manage_run"): ids["mlp"], ("text_input", f"compare_name_{ids['mlp']}"): "mine"})),
    "delete a run": ("compare", lambda ids: lambda at: (at.session_state.__setitem__("compare_delete", ids["mlp"]),
                                                        at.selectbox(key="compare_manage_run").set_value(ids["mlp"]).run(),
                                                        press(button(at, "Yes, delete it")).run())),
    "compute an embedding map": ("embedding", lambda ids: click(key="emb_compute")),
    "save a run": ("evaluate", lambda ids: click(key="eval_ens_save", widgets={
        ("multiselect", "eval_ens_members"): [ids["mlp"], ids["lenet"]]})),
    "fit a temperature": ("evaluate", lambda ids: click(key="eval_calibrate")),
    "measure robustness": ("robustness", lambda ids: click(key=f"rob_measure_{ids['lenet']}",
                                                           widgets={("multiselect", "rob_runs"): [ids["lenet"]]})),
    "compute a run's training features": ("inside", lambda ids: click(key="inside_find_button", widgets={
        ("selectbox", "inside_run"): ids["lenet"], ("segmented_control", "inside_source"): "A test image"})),
    "start a study": ("search", lambda ids: click(key="search_start")),
    "fit the not-a-digit check": ("sketch", lambda ids: click(key="sketch_fit_ood")),
    "start a training": ("train", lambda ids: click("Start training")),
}


@pytest.mark.slow  # every page, once each (a few seconds in all)
@pytest.mark.parametrize("action, drawing", [("start a training", "as drawn"),
                                             *((action, "drawn enabled") for action in VISITOR_REPLAYS)],
                         indirect=["drawing"])
def test_a_visitors_replay_of_an_owners_action_changes_nothing_and_starts_nothing(action, drawing, store,
                                                                                   trained_runs, tmp_path):
    """Drawn enabled for every action: the click reaches the action, whose own check refuses it.
    As drawn once: the visitor's button is disabled, and Streamlit discards its forged click."""
    page, prepare = VISITOR_REPLAYS[action]
    _, changed, started = replayed(store, tmp_path, action, page, prepare(trained_runs.ids),
                                   checked=drawing == "drawn enabled")
    assert not changed and not started


@pytest.mark.slow  # the positive controls: the same replays do act for the owner
def test_the_owners_same_replay_acts(store, trained_runs, tmp_path):
    from core.store.runs import list_run_ids, load_run
    ids = trained_runs.ids
    _, changed, _ = replayed(store, tmp_path, "rename a run", "compare", VISITOR_REPLAYS["rename a run"][1](ids),
                             owner=True)
    assert changed and load_run(ids["mlp"], store).name == "mine"
    _, changed, _ = replayed(store, tmp_path, "save a run", "evaluate", VISITOR_REPLAYS["save a run"][1](ids),
                             owner=True)
    assert changed and len(list_run_ids(store)) == 3
    _, changed, _ = replayed(store, tmp_path, "delete a run", "compare", VISITOR_REPLAYS["delete a run"][1](ids),
                             owner=True)
    assert changed and ids["mlp"] not in list_run_ids(store)


@pytest.mark.slow  # one real training job, started and cancelled
def test_a_visitor_cannot_cancel_the_owners_training_and_the_owner_can(store, tmp_path, monkeypatch):
    from core.store.runs import list_runs
    from core.training import jobs
    owner_at = open_page("train")
    sign_in(owner_at)
    owner_at.selectbox(key="train_arch").set_value("mlp").run()
    for knob in owner_at.number_input:
        if knob.key and knob.key.endswith("epochs"):
            knob.set_value(50)
    started = children()
    button(owner_at, "Start training").click().run()
    (new,) = [r for r in list_runs(store) if r.status in ("queued", "running")]
    (job,) = children() - started
    environ = dict(item.split("=", 1) for item in Path(f"/proc/{job}/environ").read_text().split("\0") if "=" in item)
    assert environ["OMP_NUM_THREADS"] == str(max(1, os.cpu_count() - 1))  # a core kept for the visitors
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and next(r for r in list_runs(store) if r.run_id == new.run_id).status != \
            "running":
        time.sleep(0.2)
    try:
        visitor = open_page("train")
        cancel = next(b for b in visitor.button if b.label == "Cancel")
        assert cancel.disabled
        press(cancel).run()
        from dashboard import access
        monkeypatch.setattr(access, "locked", lambda: False)  # drawn enabled: the action's own check refuses
        visitor.run()
        next(b for b in visitor.button if b.label == "Cancel").click().run()
        refused(visitor, "cancel a job")
        time.sleep(1)
        assert next(r for r in list_runs(store) if r.run_id == new.run_id).status in ("queued", "running")
    finally:
        jobs.cancel(new.run_id, store)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and next(r for r in list_runs(store) if r.run_id == new.run_id).status in (
            "queued", "running"):
        time.sleep(0.2)
    assert next(r for r in list_runs(store) if r.run_id == new.run_id).status == "cancelled"


def test_a_visitor_gets_no_csv_uploader(owned):
    at = open_page("data")
    assert not at.get("file_uploader")
    assert "Importing a CSV is the lab's owner's" in texts(at)
    sign_in(at)
    assert len(at.get("file_uploader")) == 1


@pytest.mark.slow  # a real TCP listener stands in for the host a visitor would make the server reach
def test_a_visitors_ray_address_is_never_contacted(owned, tmp_path, monkeypatch):
    import threading

    from dashboard import access
    monkeypatch.setattr(access, "locked", lambda: False)  # drawn enabled: the launch's own check must refuse
    dialled = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        address = f"127.0.0.1:{listener.getsockname()[1]}"

        def answer() -> None:  # count every connection, and close it at once: "not a Ray cluster", quickly
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                dialled.append(time.monotonic())
                conn.close()
        threading.Thread(target=answer, daemon=True).start()
        for as_owner in (False, True):
            at = open_page("sweep")
            if as_owner:
                sign_in(at)
            at.text_input(key="sweep_ray").set_value(address)
            button(at, "Launch sweep").click().run()
            if not as_owner:
                refused(at, "launch a sweep")
                time.sleep(0.3)
                assert dialled == []
        assert dialled, "the owner's launch is the control: it does reach the address"


@pytest.mark.parametrize("drawing", ["drawn enabled"], indirect=True)  # the actions' own checks
def test_a_visitors_handwriting_save_and_delete_write_nothing(owned, drawing, trained_runs, drawn, tmp_path):
    import numpy as np

    from core.data import handwriting
    from core.data.mnist import load_mnist
    owned(trained_runs.root)
    mnist = load_mnist(require_mnist())
    handwriting.add_drawing(mnist.test_images[0].numpy(), int(mnist.test_labels[0]))
    folder = tmp_path / "handwriting"
    before = disk(folder)
    from tests.test_app import pad_drawing
    drawn.value = pad_drawing(np.asarray(mnist.test_images[1]))
    at = open_page("sketch")
    at.selectbox(key="sketch_label").set_value(2).run()
    press(button(at, "Save to my handwriting")).run()
    refused(at, "save to the handwriting set")
    at.multiselect(key="sketch_delete").set_value([int(handwriting.load_set().ids[0])]).run()
    press(button(at, "Delete selected")).run()
    assert disk(folder) == before and len(handwriting.load_set()) == 1


@pytest.mark.slow  # one export (seconds)
def test_a_visitor_downloads_the_model_the_owner_exported_and_cannot_export_one(store, trained_runs):
    run_id = trained_runs.ids["lenet"]
    visitor = open_page("evaluate")
    visitor.selectbox(key="eval_run").set_value(run_id).run()
    assert not [b for b in visitor.button if b.key == "eval_export_button"] and not visitor.get("download_button")
    assert "exporting is the lab's owner's" in texts(visitor)
    owner = sign_in(open_page("evaluate"))
    owner.selectbox(key="eval_run").set_value(run_id).run()
    button(owner, key="eval_export_button").click().run()
    assert not owner.exception, [e.value for e in owner.exception]
    visitor.run()
    assert [b.label for b in visitor.get("download_button")] == ["Download as ONNX (with its model card)"]
