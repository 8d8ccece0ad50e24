"""Sweeps on a real Ray cluster on this machine's loopback (core.training.raysweep): a head and two
worker nodes (ray.cluster_utils.Cluster), a sweep sent to it through the command line, a store
that one node cannot see, a worker node killed in the middle of a trial. The fixture shuts
every Ray process down and checks that none is left."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import REPO, cli_result, require_mnist, run_cli

pytestmark = pytest.mark.ray  # a real Ray cluster, or servers, on loopback

# The fastest architecture, a few hundred images: the sweep is about Ray, not about accuracy.
TINY = ["--arch", "mlp", "--epochs", "1", "--train-limit", "500", "--device", "cpu", "--quiet"]
RAY_PROCESSES = ("raylet", "gcs_server", "ray::", "ray/dashboard", "default_worker.py", "log_monitor.py")


def ray_pids() -> set[int]:
    """Pids of the Ray daemons and workers on this machine."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if any(name in cmdline for name in RAY_PROCESSES):
                pids.add(int(entry.name))
    return pids


@pytest.fixture(scope="module")
def cluster():
    """A head (no CPU for trials, so they land on the workers) and two 1-CPU worker nodes.
    A node that stops answering is declared dead within about 2 s (default: 30 s)."""
    from ray.cluster_utils import Cluster
    before = ray_pids()
    head = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "_system_config": {
        "health_check_period_ms": 500, "health_check_failure_threshold": 4}})
    try:
        head.add_node(num_cpus=1)
        head.add_node(num_cpus=1)
        head.wait_for_nodes()
        yield head
    finally:
        head.shutdown()
        deadline = time.monotonic() + 30
        while (left := ray_pids() - before) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not left, f"Ray processes left running: {sorted(left)}"


def sweep(store: Path, *args: str, env: dict | None = None, timeout: float = 150) -> subprocess.CompletedProcess:
    """`python -m core --checkpoints STORE sweep ARGS` in its own process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "core", "--checkpoints", str(store), "--data", str(require_mnist()),
                           "sweep", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, **(env or {})})


def sweep_runs(store: Path) -> pd.DataFrame:
    from core.store.runs import list_runs
    from core.training.grids import sweep_ids, sweep_table
    runs = list_runs(store)
    assert len(sweep_ids(runs)) == 1
    return sweep_table(runs, sweep_ids(runs)[0])


@pytest.mark.timeout(240)
def test_a_sweep_runs_across_the_cluster_and_shows_on_the_sweep_page(cluster, tmp_path, monkeypatch):
    store = tmp_path / "shared-store"
    done = sweep(store, "--lr", "0.05,0.1", "--batch-size", "32,64", *TINY, "--ray", "auto",
                 env={"RAY_ADDRESS": cluster.address})
    assert done.returncode == 0, done.stderr
    runs = sweep_runs(store)
    # one finished run per grid point, and nothing else in the store
    assert sorted(zip(runs["lr"], runs["batch_size"])) == [(0.05, 32), (0.05, 64), (0.1, 32), (0.1, 64)]
    assert list(runs["status"]) == ["finished"] * 4 and runs["val_acc"].notna().all()
    assert len([p for p in store.iterdir() if not p.name.startswith(".")]) == 4
    # the trials ran as Ray tasks on the two worker nodes (the head has no CPU to give)
    logs = [(store / run_id / "train.log").read_text() for run_id in runs["run_id"]]
    nodes = {line.split("attempt on node ")[1].split()[0] for log in logs for line in log.splitlines()
             if "attempt on node " in line}
    workers = {node.node_id[:12] for node in cluster.worker_nodes}
    assert nodes <= workers and len(nodes) == 2, (nodes, workers)
    assert "0.05" in done.stdout and "64" in done.stdout  # the grid is printed, as without --ray

    # the Sweep page shows them, and says where they ran
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("MNIST_LAB_CHECKPOINTS", str(store))
    monkeypatch.setenv("MNIST_LAB_DATA", str(require_mnist()))
    at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=60).run()
    at.switch_page("views/sweep.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="sweep_pick").value.startswith("sweep-")
    page = "\n".join(str(c.value) for c in at.caption)
    assert "4 finished · 4 runs" in page and "on the Ray cluster at" in page
    assert set(at.selectbox(key="sweep_cell").options) == {
        f"lr {lr:g} · batch {bs} · finished" for lr, bs in zip(runs["lr"], runs["batch_size"])}


@pytest.mark.timeout(240)
def test_a_worker_node_killed_mid_trial_is_retried_elsewhere_and_resumes(cluster, tmp_path):
    """Two trials of 3 epochs, one per worker. When one has finished an epoch, its node is
    killed; Ray reruns the trial on the other node, which resumes after the finished epochs."""
    store = tmp_path / "shared-store"
    code, out, err, victim, kept_rows = drive_and_kill_a_node(
        cluster, store, "sweep", "--lr", "0.05,0.1", "--batch-size", "32", "--arch", "lenet", "--epochs", "3",
        "--train-limit", "3000", "--device", "cpu", "--quiet")
    assert code == 0, err
    runs = sweep_runs(store)
    assert len(runs) == 2 and list(runs["status"]) == ["finished"] * 2  # none lost, none duplicated
    assert sorted(runs["lr"]) == [0.05, 0.1]
    assert len([p for p in store.iterdir() if not p.name.startswith(".")]) == 2
    history = pd.read_csv(store / victim / "history.csv")
    assert list(history["epoch"]) == [1, 2, 3]
    # resumed, not restarted: the epochs finished before the kill are the very rows kept
    pd.testing.assert_frame_equal(history.iloc[:len(kept_rows)], kept_rows)
    attempts = [line for line in (store / victim / "train.log").read_text().splitlines() if "attempt on node" in line]
    assert len(attempts) == 2, attempts
    assert "starting" in attempts[0] and f"resuming after epoch {len(kept_rows)}" in attempts[1]
    first, second = (line.split("attempt on node ")[1].split()[0] for line in attempts)
    assert first != second  # on another node


def open_sweep_page(store: Path, monkeypatch):
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("MNIST_LAB_CHECKPOINTS", str(store))
    monkeypatch.setenv("MNIST_LAB_DATA", str(require_mnist()))
    at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=90).run()
    at.switch_page("views/sweep.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def wait_for(condition, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout:.0f} s for {what}"
        time.sleep(0.2)


@pytest.mark.timeout(240)
def test_the_sweep_page_sends_a_sweep_to_a_cluster_and_cancel_stops_its_trials(cluster, tmp_path, monkeypatch):
    from core.training import jobs
    from core.training import raylaunch
    from core.store.runs import list_runs
    from dashboard.text import md_text  # the page shows addresses and messages made safe for Markdown
    store = tmp_path / "shared-store"
    store.mkdir()
    at = open_sweep_page(store, monkeypatch)
    at.selectbox(key="sweep_arch").set_value("lenet")
    at.number_input(key="sweep_epochs").set_value(40)  # far longer than the test waits
    at.number_input(key="sweep_limit").set_value(3000)
    at.selectbox(key="sweep_device").set_value("cpu")
    at.text_input(key="sweep_lrs").set_value("0.05")
    at.text_input(key="sweep_batches").set_value("32, 64")
    at.text_input(key="sweep_ray").set_value("127.0.0.1:1")
    next(b for b in at.button if b.label == "Launch sweep").click().run()
    assert [e.value for e in at.error] == [md_text("no Ray cluster answers at 127.0.0.1:1: Connection refused; "
                                                   "start one with `ray start --head`")]
    assert list_runs(store) == []

    at.text_input(key="sweep_ray").set_value(cluster.address)
    next(b for b in at.button if b.label == "Launch sweep").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (sent,) = [s.value for s in at.success]
    assert sent.startswith("Sent 2 runs as `sweep-") and md_text(cluster.address) in sent
    sweep_id = at.selectbox(key="sweep_pick").value
    assert raylaunch.cluster_sweep(sweep_id, store)["active"]
    wait_for(lambda: [r.status for r in list_runs(store)] == ["running", "running"], "both trials to run")

    # the dashboard's Cancel of one run stops that trial (its worker is signalled); it is not retried
    one, other = (r.run_id for r in list_runs(store))
    assert jobs.cancel(one, store)
    wait_for(lambda: {r.run_id: r.status for r in list_runs(store)}[one] == "cancelled", "the run to cancel")
    # the Sweep page's Cancel sweep cancels the Ray tasks that are left, and the driver ends
    at.run()
    assert "on the Ray cluster at" in "\n".join(str(c.value) for c in at.caption)
    next(b for b in at.button if b.label == "Cancel sweep").click().run()
    assert not at.exception, [e.value for e in at.exception]
    wait_for(lambda: not raylaunch.cluster_sweep(sweep_id, store)["active"], "the driver to end")
    runs = {r.run_id: r for r in list_runs(store)}
    assert [r.status for r in runs.values()] == ["cancelled", "cancelled"]
    assert all(r.epochs_done < 40 for r in runs.values())
    for run_id in (one, other):
        assert (store / run_id / "train.log").read_text().count("attempt on node") == 1
    (driver_log,) = [log for log in map(Path.read_text, (store / ".ray").glob("launch-*.log")) if sweep_id in log]
    assert driver_log.count(": cancelled") == 2 and "failed" not in driver_log  # each trial saved, none crashed


def kill_node(cluster, node) -> None:
    """Kill a node as a machine dies: its raylet and, at the same moment, every process it
    started (a worker left alone would train on for seconds before it noticed)."""
    raylet = node.all_processes["raylet"][0].process.pid
    family = descendants(raylet)
    cluster.remove_node(node, allow_graceful=False)  # the node is dead to Ray first...
    for pid in family:  # ...then its trial dies too, so Ray reruns it on another node
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def descendants(pid: int) -> list[int]:
    """Pids of the processes below `pid`, from /proc."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def drive_and_kill_a_node(cluster, store: Path, *args: str) -> tuple[int, str, str, str, pd.DataFrame]:
    """`python -m core --checkpoints STORE ARGS --ray <the cluster>` as a user runs it; once one of its
    trials has finished an epoch, that trial's node is killed. Returns the exit code, stdout, stderr,
    the killed trial's run id and its history rows as they were; two worker nodes are left again."""
    driver = subprocess.Popen(
        [sys.executable, "-m", "core", "--checkpoints", str(store), "--data", str(require_mnist()), *args,
         "--ray", cluster.address], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        victim, kept_rows = _kill_a_node_after_its_first_epoch(cluster, store)
        out, err = driver.communicate(timeout=180)
    finally:
        driver.kill()
        if len(cluster.worker_nodes) < 2:
            cluster.add_node(num_cpus=1)  # two workers again, for the tests after this one
    return driver.returncode, out, err, victim, kept_rows


def _kill_a_node_after_its_first_epoch(cluster, store: Path) -> tuple[str, pd.DataFrame]:
    """Wait for a trial to finish an epoch, then kill its worker node at once. Return the
    run's id and its history rows as they were."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for history in store.glob("*/history.csv"):
            rows = pd.read_csv(history) if history.stat().st_size else pd.DataFrame()
            if len(rows) >= 1:
                log = (history.parent / "train.log").read_text()
                node_id = log.split("attempt on node ")[1].split()[0]
                node = next(n for n in cluster.worker_nodes if n.node_id.startswith(node_id))
                kill_node(cluster, node)
                rows = pd.read_csv(history)  # what it had when its node went
                assert len(rows) < 3, "the trial finished before its node could be killed"
                return history.parent.name, rows
        time.sleep(0.05)
    raise AssertionError("no trial finished an epoch within 2 minutes")


@pytest.mark.timeout(240)
def test_a_study_runs_its_trials_side_by_side_on_the_cluster_and_a_killed_worker_costs_one_epoch(cluster, tmp_path):
    """`search --ray`: two trials on two 1-CPU workers, side by side. When a trial has finished an
    epoch its node is killed; Ray reruns it on the other node, which adopts its run and resumes
    after the finished epochs. The study ends with two finished trials, one run each."""
    store = tmp_path / "shared-store"
    code, out, err, victim, kept_rows = drive_and_kill_a_node(
        cluster, store, "search", "--arch", "lenet", "--param", "lr=0.02:0.2:log", "--trials", "2", "--epochs", "3",
        "--train-limit", "2000", "--pruner", "none", "--device", "cpu", "--quiet", "--study", "onray", "--json")
    assert code == 0, err
    assert "up to 2 trials at once" in err
    import json
    result = json.loads(out)
    assert [t["state"] for t in result["trials"]] == ["finished"] * 2 and len(result["trials"]) == 2
    runs = sorted(p.name for p in store.iterdir() if not p.name.startswith("."))
    assert sorted(t["run_id"] for t in result["trials"]) == runs  # none lost, none made twice
    history = pd.read_csv(store / victim / "history.csv")
    assert list(history["epoch"]) == [1, 2, 3]
    pd.testing.assert_frame_equal(history.iloc[:len(kept_rows)], kept_rows)  # resumed, not restarted
    attempts = [line for line in (store / victim / "train.log").read_text().splitlines() if "attempt on node" in line]
    assert len(attempts) == 2 and f"resuming after epoch {len(kept_rows)}" in attempts[1], attempts
    nodes = {line.split("attempt on node ")[1].split()[0] for run in runs
             for line in (store / run / "train.log").read_text().splitlines() if "attempt on node" in line}
    assert len(nodes) >= 2  # the trials ran on both workers
    finals = {run: pd.read_csv(store / run / "history.csv")["val_acc"].iloc[-1] for run in runs}
    assert result["best"]["run_id"] == max(finals, key=finals.get)


@pytest.mark.parametrize("address, message", [
    ("127.0.0.1:1", "error: no Ray cluster answers at 127.0.0.1:1"),
    ("nonsense", "error: 'nonsense' is not a Ray cluster address: give HOST:PORT"),
])
def test_a_study_sent_to_an_address_that_is_not_ray_is_one_line_and_creates_nothing(tmp_path, address, message):
    store = tmp_path / "store"
    code, _, err = run_cli("--checkpoints", str(store), "--data", str(require_mnist()), "search", "--param",
                           "lr=0.01:0.1", "--trials", "2", *TINY, "--ray", address)
    assert code == 1 and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not store.exists() or not any(store.iterdir())


def test_a_store_a_node_cannot_see_is_refused(cluster, tmp_path):
    """A fourth node whose filesystem view lacks the store (its own mount namespace, with an
    empty tmpfs over the store's parent) makes the sweep refuse it before any run exists."""
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("no mount namespaces here (unshare -rm) to give a node its own filesystem")
    hidden = tmp_path / "local-disk"
    store = hidden / "store"
    store.mkdir(parents=True)
    ray_bin = Path(sys.executable).parent / "ray"
    node = subprocess.Popen(
        ["unshare", "-rm", "sh", "-c", f'mount -t tmpfs none "{hidden}" && exec "{ray_bin}" start '
         f'--address={cluster.address} --num-cpus=0 --block'],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for_alive_nodes(cluster.address, 1 + len(cluster.worker_nodes) + 1)
        done = sweep(store, "--lr", "0.1", "--batch-size", "64", *TINY, "--ray", cluster.address)
    finally:
        os.killpg(node.pid, 15)  # `ray start --block` stops the node's processes as it leaves
        node.wait(timeout=30)
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert f"the run store {store} is not shared by every node" in done.stderr
    assert "cannot read it" in done.stderr and "--checkpoints" in done.stderr
    assert [p.name for p in store.iterdir() if not p.name.startswith(".")] == []  # no run was created


def _wait_for_alive_nodes(address: str, count: int, timeout: float = 30) -> None:
    """Wait until the cluster has `count` live nodes, asked by a client in its own process
    (this test process never joins a cluster)."""
    probe = ("import ray, time, sys\nray.init(address=sys.argv[1], logging_level='ERROR')\n"
             "alive = lambda: sum(n['Alive'] for n in ray.nodes())\n"
             f"deadline = time.time() + {timeout}\n"
             "while alive() < int(sys.argv[2]) and time.time() < deadline: time.sleep(0.3)\n"
             "sys.exit(0 if alive() >= int(sys.argv[2]) else 1)\n")
    assert subprocess.run([sys.executable, "-c", probe, address, str(count)], capture_output=True,
                          timeout=timeout + 30).returncode == 0, f"the cluster did not reach {count} live nodes"


@pytest.mark.parametrize("address, message", [
    ("127.0.0.1:1", "error: no Ray cluster answers at 127.0.0.1:1"),
    ("nonsense", "error: 'nonsense' is not a Ray cluster address: give HOST:PORT"),
    ("ray://10.0.0.5:10001", "Ray Client addresses (ray://) are not supported"),
])
def test_a_bad_cluster_address_is_one_line_and_creates_nothing(tmp_path, address, message):
    store = tmp_path / "store"
    # the CLI's main() in this process: the address is refused before any Ray would start
    done = cli_result("--checkpoints", str(store), "--data", str(require_mnist()), "sweep", "--lr", "0.1",
                      "--batch-size", "64", *TINY, "--ray", address)
    assert done.returncode == 1 and message in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert not any(p for p in store.glob("*") if not p.name.startswith("."))


def test_the_address_check_knows_a_ray_cluster_and_refuses_its_other_ports(cluster):
    """check_address asks the head's GCS for its cluster id: the head passes, by IPv4 and by IPv6
    in brackets; the raylet's gRPC port (a Ray port, but no GCS) is refused in one line."""
    from core.training.rayaddress import ClusterError, check_address
    assert check_address(cluster.address) == cluster.address
    assert check_address(f" {cluster.address} ") == cluster.address
    port = cluster.address.rpartition(":")[2]
    try:
        socket.create_connection(("::1", int(port)), timeout=5).close()
    except OSError:
        pass  # the GCS is not on the IPv6 loopback here
    else:
        assert check_address(f"[::1]:{port}") == f"[::1]:{port}"
    raylet = f"127.0.0.1:{cluster.head_node.node_manager_port}"
    with pytest.raises(ClusterError) as refused:
        check_address(raylet)
    assert str(refused.value) == (f"something answers at {raylet} but it is not a Ray cluster (it speaks gRPC, but "
                                  "has no Ray GCS service); give the head's address as `ray start --head` prints it "
                                  "(port 6379 by default)")


@pytest.mark.timeout(180)
def test_a_driver_that_does_not_take_the_sweep_in_time_is_ended(cluster, tmp_path):
    """The Sweep page's launch_driver used to give up waiting and leave its driver running, with
    no Cancel (the driver had no sweep yet). Now the driver is ended (SIGTERM, then SIGKILL) and
    nothing of it is left: no process, no run."""
    from core.training import rayaddress, raylaunch
    from core.config import TrainConfig
    from tests.test_ray_address import drivers_of
    store = tmp_path / "shared-store"
    base = TrainConfig(arch="mlp", epochs=1, train_limit=500, device="cpu", lr=0.1, batch_size=64)
    start = time.monotonic()
    with pytest.raises(rayaddress.ClusterError) as stopped:
        raylaunch.launch_driver(base, [0.1], [64], cluster.address, root=store, data_root=require_mnist(), wait_s=2)
    message = str(stopped.value)
    assert message.startswith(f"the cluster at {cluster.address} did not take the sweep within 2 s, so its driver "
                              "was stopped (SIGTERM") or "(SIGKILL" in message, message
    assert "; no run was created (its output: " in message
    assert time.monotonic() - start < 2 + rayaddress.CONNECT_S + rayaddress.PROBE_S + raylaunch.STOP_GRACE_S + 5
    assert drivers_of(store) == []
    assert [p.name for p in store.iterdir() if not p.name.startswith(".")] == []
    assert not list((store / ".ray").glob("sweep-*"))  # no driver lock: the page had nothing to cancel


def test_a_sweep_without_ray_does_not_import_it(tmp_path):
    """Without --ray the sweep trains here as before, and Ray is never loaded."""
    script = ("import sys\nfrom core.cli import main\n"
              f"code = main(['--checkpoints', {str(tmp_path)!r}, '--data', {str(require_mnist())!r}, 'sweep', "
              "'--lr', '0.1', '--batch-size', '64', " + ", ".join(map(repr, TINY)) + "])\n"
              "assert code == 0, code\nassert 'ray' not in sys.modules, 'ray was imported'\n"
              "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr
    assert not (tmp_path / ".ray").exists()
