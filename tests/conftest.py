"""Shared fixtures: the real MNIST files, a few tiny real runs, and an environment that points
the dashboard at temporary folders."""
from __future__ import annotations

import os

# `make test` runs the suite in two pytest-xdist workers, one per core. Each worker, and every
# process it starts (a CLI training, the dashboard's server), then computes on one thread: two
# workers of two threads each would fight over the two cores. Set before numpy and torch are
# first imported (OpenBLAS and torch read it once, on import): above every import below.
if os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") != "1":
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# No owner password from the developer's shell or ~/.config reaches a test: a test that wants an
# owner sets one (tests/test_access.py).
os.environ.pop("MNIST_LAB_OWNER_PASSWORD", None)
os.environ["MNIST_LAB_OWNER_FILE"] = os.path.join(os.sep, "nonexistent", "mnist-lab-owner-password")

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import DATA, quick_head_patch


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Tests that share one costly thing stay on one worker (`--dist loadgroup`): the browser tests
    share one dashboard server and one Chromium, and the Ray tests must not start clusters side by
    side on the same loopback ports.

    pytest-xdist 3.8 groups a test by the "@group" suffix it writes to `item._nodeid`, which pytest 9
    no longer reads (a node's id is `item._id`): every xdist_group mark was ignored, these and a
    file's own alike, and a group's tests, each worker with its own costly fixture (a Ray cluster,
    a dashboard and Chromium), were spread over both workers. The suffix is put on here, last
    among the hooks, where it is not on already."""
    for item in items:
        for mark in ("browser", "ray"):
            if item.get_closest_marker(mark):
                item.add_marker(pytest.mark.xdist_group(mark))
    if not getattr(config.option, "loadgroup", False):  # set in pytest-xdist's workers under --dist loadgroup
        return
    from _pytest.nodeid import NodeId
    for item in items:
        groups = sorted({str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
                         for mark in item.iter_markers("xdist_group")})
        if groups and "@" not in item.nodeid.rpartition("]")[2]:
            item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(groups)}")


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The repository's data/ folder, which must hold the real MNIST files."""
    from core.data.mnist import is_available
    if not is_available(DATA):
        pytest.fail(f"MNIST is not in {DATA}: run `python -m core fetch` first (CI fetches it before the tests)")
    return DATA


@dataclass(frozen=True)
class TrainedRuns:
    root: Path               # checkpoints folder holding the runs
    ids: dict[str, str]      # architecture -> run id

    def copy_to(self, dest: Path) -> Path:
        """A private copy, for tests that change or damage runs."""
        shutil.copytree(self.root, dest, ignore=shutil.ignore_patterns(".locks"))
        return dest


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory, mnist_root) -> TrainedRuns:
    """Two really trained tiny runs (mlp and lenet, a few seconds each on a CPU)."""
    from core.config import TrainConfig
    from tests.helpers import train_new
    root = tmp_path_factory.mktemp("checkpoints")
    ids = {}
    for arch, epochs, limit in (("mlp", 2, 2000), ("lenet", 1, 1000)):
        config = TrainConfig(arch=arch, epochs=epochs, train_limit=limit, device="cpu", seed=0,
                             name=f"tiny {arch}")
        run_id, status = train_new(config, root, data_root=mnist_root)
        assert status == "finished"
        ids[arch] = run_id
    return TrainedRuns(root, ids)


@pytest.fixture
def lab_env(monkeypatch, tmp_path, mnist_root):
    """Point the app at the real MNIST, an empty handwriting folder and (by default) an empty
    checkpoints folder; call the returned function to use another checkpoints folder."""
    monkeypatch.setenv("MNIST_LAB_DATA", str(mnist_root))
    monkeypatch.setenv("MNIST_LAB_HANDWRITING", str(tmp_path / "handwriting"))
    monkeypatch.delenv("MNIST_LAB_OWNER_PASSWORD", raising=False)  # no owner: the one trusted person, as before
    monkeypatch.setenv("MNIST_LAB_OWNER_FILE", str(tmp_path / "owner-password"))
    empty = tmp_path / "checkpoints"
    empty.mkdir()
    monkeypatch.setenv("MNIST_LAB_CHECKPOINTS", str(empty))

    def use(checkpoints: Path) -> Path:
        monkeypatch.setenv("MNIST_LAB_CHECKPOINTS", str(checkpoints))
        return checkpoints
    use.empty = empty
    return use


@pytest.fixture
def drawn(monkeypatch):
    """The Sketch pad replaced by one that has `drawn.value` on it (a data URL; None: empty)."""
    import types

    import streamlit as st
    import streamlit.components.v2 as v2
    state = types.SimpleNamespace(value=None)
    monkeypatch.setattr(v2, "component", lambda name, **kwargs: (
        lambda **options: types.SimpleNamespace(drawing=state.value)))
    st.cache_resource.clear()  # the page registers its pad once per process
    yield state
    st.cache_resource.clear()


@pytest.fixture
def quick_head(monkeypatch):
    """Fit the not-a-digit head on the quick budget in this test (tests.helpers.quick_head_patch)."""
    quick_head_patch(monkeypatch)
