"""The run store survives damage (issue 10): one damaged run folder beside real runs is listed
as damaged, with the reason, and every other run is listed and usable as before, by the CLI
(`runs`, `predict`) and on every page. A FIFO where a run file should be never blocks a reader."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import REPO, run_cli

# One worker takes the whole file under `make test`'s pytest-xdist: the checked runs (a fitted
# not-a-digit check) are built once.
pytestmark = pytest.mark.xdist_group("test_store")

DAMAGED = "20990101-000000-damaged"
CLI_TIMEOUT = 120  # s: a reader blocked on a FIFO fails the test instead of hanging it
# As root, permission bits are not checked: drop the capabilities that bypass them.
AS_USER = (["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
           if os.geteuid() == 0 else [])


def _edit_json(folder: Path, name: str, **changes) -> None:
    data = json.loads((folder / name).read_text())
    data.update(changes)
    (folder / name).write_text(json.dumps(data))


def _fifo(folder: Path, name: str) -> None:
    (folder / name).unlink(missing_ok=True)
    os.mkfifo(folder / name)


def _running_with_fifo_lock(folder: Path) -> None:
    _edit_json(folder, "status.json", status="running")
    _fifo(folder, "lock")


def _text_val_acc(folder: Path) -> None:
    lines = (folder / "history.csv").read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[1].split(",")
    cells[header.index("val_acc")] = "abc"
    (folder / "history.csv").write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")


DAMAGE = {  # case -> how the copy of a real run is damaged
    "format-null": lambda f: _edit_json(f, "config.json", format=None),
    "format-text": lambda f: _edit_json(f, "config.json", format="1"),
    "arch-list": lambda f: _edit_json(f, "config.json", arch=["mlp"]),
    "epochs-text": lambda f: _edit_json(f, "config.json", epochs="three", lr="fast"),
    "created-number": lambda f: _edit_json(f, "status.json", created=5),
    "val-acc-text": _text_val_acc,
    "fifo-status": lambda f: _fifo(f, "status.json"),
    "fifo-config": lambda f: _fifo(f, "config.json"),
    "fifo-history": lambda f: _fifo(f, "history.csv"),
    "fifo-metrics": lambda f: _fifo(f, "metrics.json"),
    "fifo-lock": _running_with_fifo_lock,
    "unreadable": lambda f: f.chmod(0),
}


def _damaged_copy(trained_runs, dest: Path, cases) -> dict[str, str]:
    """A copy of the trained runs plus one damaged copy of the mlp run per case: case -> run id."""
    root = trained_runs.copy_to(dest)
    ids = {}
    for case in cases:
        run_id = f"{DAMAGED}-{case}"
        shutil.copytree(root / trained_runs.ids["mlp"], root / run_id)
        DAMAGE[case](root / run_id)
        ids[case] = run_id
    return ids


def _unblock(root: Path) -> None:
    """Open every FIFO's writing end once, so a reader a regression left blocked returns."""
    for path in root.rglob("*"):
        if path.is_fifo():
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass  # no reader waiting


def _restore(root: Path) -> None:
    for path in root.iterdir():
        if path.is_dir():
            path.chmod(0o755)  # so tmp_path can be removed


def _digit(tmp_path: Path) -> Path:
    from core.data.mnist import load_mnist
    image = load_mnist(REPO / "data").test_images[0].numpy()
    path = tmp_path / "digit.png"
    Image.fromarray(image.astype(np.uint8)).save(path)
    return path


def _cli(*argv, as_user: bool = False) -> subprocess.CompletedProcess:
    """The command line's main() in this process; a real `python -m core` run as a user without
    root's read-anything capability where `as_user` (root would read the unreadable run)."""
    if as_user:
        return subprocess.run([*AS_USER, sys.executable, "-m", "core", *argv], cwd=REPO, capture_output=True,
                              text=True, timeout=CLI_TIMEOUT)
    code, out, err = run_cli(*argv)
    return subprocess.CompletedProcess(argv, code, out, err)


@pytest.fixture(scope="module")
def checked_runs(trained_runs, tmp_path_factory):
    """The tiny mlp run beside a copy of the shipped lenet reference run, whose not-a-digit check is
    fitted and current, as a run has it after its first `predict`: every case's copy carries it,
    instead of a check fitted for the cases (for seconds) or in each of them (half a minute)."""
    from core.store.reference import reference_ids
    from core.store.runs import load_run
    shipped = REPO / "checkpoints"
    lenet = next(i for i in reference_ids(shipped) if load_run(i, shipped).arch == "lenet")
    root = trained_runs.copy_to(tmp_path_factory.mktemp("checked") / "checkpoints")
    shutil.rmtree(root / trained_runs.ids["lenet"])
    shutil.copytree(shipped / lenet, root / lenet)
    from core.notadigit import detector as ood
    assert ood.read_kept(lenet, root)[0] is not None  # predict reads it, fits nothing
    return dataclasses.replace(trained_runs, root=root, ids={"mlp": trained_runs.ids["mlp"], "lenet": lenet})


@pytest.mark.parametrize("case", list(DAMAGE))
@pytest.mark.slow
def test_cli_lists_a_damaged_run_and_predicts_with_the_others(checked_runs, tmp_path, case):
    root = tmp_path / "checkpoints"
    damaged = _damaged_copy(checked_runs, root, [case])[case]
    as_user = case == "unreadable"
    try:
        listing = _cli("--checkpoints", str(root), "runs", as_user=as_user)
        assert listing.returncode == 0, listing.stderr
        assert "Traceback" not in listing.stderr
        lines = {line.split()[0]: line for line in listing.stdout.splitlines()[1:] if line.strip()}
        assert set(checked_runs.ids.values()) | {damaged} == set(lines)
        assert "!" in lines[damaged], lines[damaged]  # listed with the reason
        for run_id in checked_runs.ids.values():
            assert "!" not in lines[run_id] and "finished" in lines[run_id]
        predicted = _cli("--checkpoints", str(root), "predict", checked_runs.ids["lenet"],
                         str(_digit(tmp_path)), as_user=as_user)
        assert predicted.returncode == 0, predicted.stderr
    finally:
        _unblock(root)
        _restore(root)


@pytest.mark.slow
def test_cli_says_why_a_run_is_unreadable(trained_runs, tmp_path):
    root = tmp_path / "checkpoints"
    damaged = _damaged_copy(trained_runs, root, ["unreadable"])["unreadable"]
    try:
        listing = _cli("--checkpoints", str(root), "runs", as_user=True)
        line = next(line for line in listing.stdout.splitlines() if line.startswith(damaged))
        assert "damaged" in line and "not readable" in line and "writable" not in line, line
        predicted = _cli("--checkpoints", str(root), "predict", damaged, str(_digit(tmp_path)),
                         as_user=True)
        assert predicted.returncode != 0 and "Traceback" not in predicted.stderr, predicted.stderr
        assert "not readable" in predicted.stderr
    finally:
        _restore(root)


@pytest.mark.slow
def test_predict_refuses_an_arch_that_is_not_a_name_in_one_line(trained_runs, tmp_path):
    root = tmp_path / "checkpoints"
    damaged = _damaged_copy(trained_runs, root, ["arch-list"])["arch-list"]
    predicted = _cli("--checkpoints", str(root), "predict", damaged, str(_digit(tmp_path)))
    assert predicted.returncode != 0
    assert "Traceback" not in predicted.stderr, predicted.stderr
    message = predicted.stderr.strip()
    assert len(message.splitlines()) == 1 and "arch" in message, message


@pytest.mark.timeout(120, method="signal")  # a reader blocked on a FIFO fails, not hangs
def test_load_run_turns_every_damage_into_a_warning(trained_runs, tmp_path):
    """The library's view: each damaged run is read with a warning that names the problem, and
    its fields have the types the rest of the code relies on."""
    from core.store.runs import Run, list_runs
    root = tmp_path / "checkpoints"
    ids = _damaged_copy(trained_runs, root, [c for c in DAMAGE if c != "unreadable"])
    try:
        runs = {r.run_id: r for r in list_runs(root)}
        for case, run_id in ids.items():
            run: Run = runs[run_id]
            assert run.warnings, case
            assert isinstance(run.arch, str) and isinstance(run.config.get("epochs", 0), int), case
            assert run.val_acc is None or isinstance(run.val_acc, float), case
            assert all(isinstance(v, str) for k, v in run.status_info.items() if k in ("created", "updated"))
        assert "format" in "; ".join(runs[ids["format-null"]].warnings)
        assert "val_acc" in "; ".join(runs[ids["val-acc-text"]].warnings)
        assert "not a regular file" in "; ".join(runs[ids["fifo-status"]].warnings)
        assert runs[ids["arch-list"]].arch == "?"
        for run_id in trained_runs.ids.values():
            assert runs[run_id].warnings == [] and runs[run_id].status == "finished"
    finally:
        _unblock(root)


# --- pages ------------------------------------------------------------------------------------

PAGES = ("train", "compare", "evaluate", "mistakes", "sketch", "data", "sweep")
PAGE_TIMEOUT = 60  # s per script run


@pytest.fixture(scope="module")
def damaged_store(trained_runs, tmp_path_factory):
    root = tmp_path_factory.mktemp("store") / "checkpoints"
    ids = _damaged_copy(trained_runs, root, [c for c in DAMAGE if c != "unreadable"])
    yield root, ids
    _unblock(root)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_beside_damaged_runs(lab_env, damaged_store, page):
    from tests.test_app import open_page
    root, ids = damaged_store
    lab_env(root)
    try:
        at = open_page(page)
    finally:
        _unblock(root)
    assert not at.exception, [e.value for e in at.exception]
    if page != "data":  # the Data page does not read runs
        warnings = "\n".join(w.value for w in at.warning)
        for run_id in ids.values():
            assert run_id in warnings, (run_id, warnings)


_PAGES_AS_USER = """
import json, sys
from streamlit.testing.v1 import AppTest
out = {}
for page in sys.argv[1:]:
    at = AppTest.from_file("dashboard/app.py", default_timeout=60).run()
    at.switch_page(f"views/{page}.py").run()
    out[page] = {"exceptions": [str(e.value) for e in at.exception],
                 "warnings": [w.value for w in at.warning]}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_every_page_renders_beside_an_unreadable_run(trained_runs, tmp_path, mnist_root):
    root = tmp_path / "checkpoints"
    damaged = _damaged_copy(trained_runs, root, ["unreadable"])["unreadable"]
    env = dict(os.environ, MNIST_LAB_CHECKPOINTS=str(root), MNIST_LAB_DATA=str(mnist_root),
               MNIST_LAB_HANDWRITING=str(tmp_path / "handwriting"))
    try:
        done = subprocess.run([*AS_USER, sys.executable, "-c", _PAGES_AS_USER, *PAGES], cwd=REPO,
                              capture_output=True, text=True, timeout=600, env=env)
    finally:
        _restore(root)
    assert done.returncode == 0, done.stderr[-3000:]
    pages = json.loads(done.stdout.strip().splitlines()[-1])
    for page, seen in pages.items():
        assert not seen["exceptions"], (page, seen["exceptions"])
        if page != "data":
            assert any(damaged in w and "not readable" in w for w in seen["warnings"]), (page, seen)


def test_a_run_that_names_no_architecture_is_never_the_best_of_one(trained_runs, tmp_path):
    """Sketch and bench load the best run of each architecture: one whose arch is unusable
    (dropped by load_run, shown as '?') cannot be rebuilt, so it is never chosen."""
    from core.store.runs import list_runs
    from core.store.tables import best_run_per_arch
    root = tmp_path / "checkpoints"
    _damaged_copy(trained_runs, root, ["arch-list"])
    best = best_run_per_arch(list_runs(root))
    assert sorted(r.run_id for r in best) == sorted(trained_runs.ids.values())
