"""`sweep --ray ADDRESS` with an address that is not a Ray cluster (issue 19): every address is
checked before a driver starts (core.training.rayaddress.check_address), and each refusal is one line,
within seconds, with nothing created in the store. Real processes: a real `python -m http.server`
on loopback, the Sweep page's launch_driver, a real Ray head with token authentication; the CLI's
refusals run through its main() in this process. No Ray cluster is
needed here (tests/test_ray.py has those)."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, cli_result, require_mnist
from tests.test_ray import TINY, sweep

# A hang guard, not a speed claim: far above check_address's own bound (CONNECT_S + PROBE_S = 10 s) plus
# Python's start on a loaded machine, and below the 200 s that Ray's own retries took before the probe.
LIMIT_S = 120

pytestmark = [pytest.mark.ray,  # a real Ray cluster, or servers, on loopback
              pytest.mark.timeout(2 * LIMIT_S)]  # a hang guard for the in-process refusals



# What grpcio says of a web server (`python -m http.server`) asked for a gRPC call: it answers HTTP/1.
NOT_GRPC = ("it does not answer a gRPC call as a Ray cluster's head does: Failed parsing HTTP/2 (Expected SETTINGS "
            "frame as the first frame, got frame type 79)")


def free_port(host: str = "127.0.0.1", family: int = socket.AF_INET) -> int:
    """A port nothing listens on (bound, then let go)."""
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.fixture
def web_server(tmp_path):
    """A real `python -m http.server` on a free loopback port; yields its port."""
    port = free_port()
    (tmp_path / "www").mkdir()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "--directory", str(tmp_path / "www")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "http.server did not start"
                time.sleep(0.1)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=10)


def listing(store: Path) -> list[str] | None:
    """Every path under the store (None: no store at all)."""
    return sorted(str(p.relative_to(store)) for p in store.rglob("*")) if store.exists() else None


def a_store(tmp_path: Path) -> Path:
    """A store that already holds something (an earlier run's folder), to see that nothing is added."""
    store = tmp_path / "store"
    (store / "20260101-000000-mlp").mkdir(parents=True)
    (store / "20260101-000000-mlp" / "config.json").write_text("{}\n")
    return store


def refused(store: Path, address: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The CLI's sweep at `address`, through the same main() the entry points call, in this process
    (the interpreter's start saved: the refusal comes before any driver or Ray would start); `env`
    set meanwhile. A hang is the module's timeout's to catch (LIMIT_S)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in (env or {}).items():
            patch.setenv(name, value)
        return cli_result("--checkpoints", str(store), "--data", str(require_mnist()), "sweep", "--lr", "0.1",
                          "--batch-size", "64", *TINY, "--ray", address)


def one_error_line(done: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), done.stderr
    return done.stderr.strip()


def drivers_of(store: Path) -> list[int]:
    """Pids of the `python -m core ... sweep` processes working on `store` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(store).encode() in argv and b"sweep" in argv:
                found.append(int(entry.name))
    return found


def test_an_http_server_is_refused_in_seconds_with_one_line_and_nothing_created(tmp_path, web_server):
    """Issue 19: with `python -m http.server` at the address, the sweep retried Ray's
    "Failed to connect to GCS" for over 200 s. Now the address is asked for a Ray GCS's cluster
    id first and the web server is refused at once."""
    store = a_store(tmp_path)
    before = listing(store)
    done = refused(store, f"127.0.0.1:{web_server}")
    assert done.returncode == 1, done.stderr
    assert one_error_line(done) == (
        f"error: something answers at 127.0.0.1:{web_server} but it is not a Ray cluster ({NOT_GRPC}); give the "
        "head's address as `ray start --head` prints it (port 6379 by default)")
    assert listing(store) == before  # no run, no .ray folder, no driver log
    # a store that did not exist is not created either
    done = refused(tmp_path / "new-store", f"127.0.0.1:{web_server}")
    assert done.returncode == 1 and not (tmp_path / "new-store").exists()


def test_ray_address_garbage_with_ray_auto_names_the_variable(tmp_path):
    store = a_store(tmp_path)
    before = listing(store)
    done = refused(store, "auto", env={"RAY_ADDRESS": "garbage"})
    assert done.returncode == 1, done.stderr
    assert one_error_line(done) == (
        "error: --ray auto reads $RAY_ADDRESS, which holds 'garbage': not a Ray cluster address; set $RAY_ADDRESS "
        "to the head's HOST:PORT (e.g. 10.0.0.5:6379), or unset it to use the cluster started on this machine")
    assert "Invalid address format" not in done.stderr
    assert listing(store) == before


def test_an_ipv6_address_in_brackets_is_parsed_and_refused_truthfully(tmp_path):
    try:
        port = free_port("::1", socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    store = a_store(tmp_path)
    before = listing(store)
    done = refused(store, f"[::1]:{port}")
    assert done.returncode == 1, done.stderr
    line = one_error_line(done)
    assert line == f"error: no Ray cluster answers at [::1]:{port}: Connection refused; start one with `ray start --head`"
    assert "Name or service not known" not in line
    assert listing(store) == before
    # an IPv6 address without brackets is told how to write it
    done = refused(store, f"::1:{port}")
    assert done.returncode == 1 and f"(an IPv6 address goes in brackets: [::1]:{port})" in one_error_line(done)


@pytest.mark.parametrize("address", ["", "   "])
def test_an_empty_ray_address_is_refused_instead_of_training_here(tmp_path, address):
    """`--ray ""` trained on this machine without a word; it is a usage error (exit 2), as `--csv ''`."""
    store = a_store(tmp_path)
    before = listing(store)
    done = refused(store, address)
    assert done.returncode == 2, done.stderr
    assert one_error_line(done) == ("error: --ray needs an address (HOST:PORT or auto); leave the option out to "
                                    "train here")
    assert listing(store) == before  # no run trained here


def test_the_sweep_pages_launch_against_an_http_server_starts_no_driver(tmp_path, web_server):
    """The Sweep page's path (raylaunch.launch_driver) blocked 60 s, then left its driver running
    with no Cancel. The address is now checked before the driver would start: refused at once,
    no process left, nothing in the store."""
    from core.training import rayaddress, raylaunch
    from core.config import TrainConfig
    store = a_store(tmp_path)
    before = listing(store)
    base = TrainConfig(arch="mlp", epochs=1, train_limit=500, device="cpu", lr=0.1, batch_size=64)
    with pytest.raises(rayaddress.ClusterError, match=f"something answers at 127.0.0.1:{web_server} but it is not a "
                                                    r"Ray cluster \(it does not answer a gRPC call as a Ray cluster's head does: Failed parsing HTTP/2"):
        raylaunch.launch_driver(base, [0.1], [64], f"127.0.0.1:{web_server}", root=store, data_root=require_mnist())
    assert drivers_of(store) == []
    assert listing(store) == before


@pytest.mark.timeout(180)
def test_the_sweep_page_shows_the_refusal_in_one_line(tmp_path, web_server, monkeypatch):
    """On the page itself: the red box holds the one line, and no run, driver or log is left."""
    from streamlit.testing.v1 import AppTest

    from dashboard.text import md_text
    store = a_store(tmp_path)
    before = listing(store)
    monkeypatch.setenv("MNIST_LAB_CHECKPOINTS", str(store))
    monkeypatch.setenv("MNIST_LAB_DATA", str(require_mnist()))
    at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=90).run()
    at.switch_page("views/sweep.py").run()
    at.text_input(key="sweep_ray").set_value(f"127.0.0.1:{web_server}")
    next(b for b in at.button if b.label == "Launch sweep").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert [e.value for e in at.error] == [md_text(  # the line, made safe for Markdown
        f"something answers at 127.0.0.1:{web_server} but it is not a Ray cluster ({NOT_GRPC}); "
        "give the head's address as `ray start --head` prints it (port 6379 by default)")]
    assert drivers_of(store) == [] and listing(store) == before


def test_a_driver_that_ignores_sigterm_is_killed_after_the_grace(tmp_path):
    """raylaunch.end_driver, which the Sweep page uses on a driver that did not take its sweep: a
    driver stuck where it does not act on SIGTERM (inside ray.init) gets SIGKILL after the grace,
    and is reaped; its whole process group goes (a real process that ignores SIGTERM stands in
    for the stuck driver)."""
    from core.training import raylaunch
    stuck = subprocess.Popen([sys.executable, "-c", "import signal, sys, time\n"
                              "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\n"
                              "time.sleep(600)\n"], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert stuck.stdout.readline().strip() == "ready"
        start = time.monotonic()
        assert raylaunch.end_driver(stuck, grace=1) == "SIGKILL, 1 s after a SIGTERM it did not act on"
        assert time.monotonic() - start >= 1  # it waited the grace before the SIGKILL
        assert stuck.returncode == -9 and not Path(f"/proc/{stuck.pid}").exists()
        assert raylaunch.end_driver(stuck) == ""  # ended already: nothing is signalled
    finally:
        if stuck.poll() is None:
            stuck.kill()
            stuck.wait()
        stuck.stdout.close()


@pytest.mark.timeout(180)
def test_a_cluster_with_token_authentication_is_told_from_something_else(tmp_path):
    """A real Ray head with token authentication (RAY_AUTH_MODE=token) answers the check's call
    with UNAUTHENTICATED: without the token the message says so (not "not a Ray cluster"); with
    it, the check passes. Each check runs in its own process, as the CLI's would."""
    import os
    import secrets

    from tests.test_ray import ray_pids
    token = secrets.token_hex(16)
    before = ray_pids()
    head = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom ray.cluster_utils import Cluster\n"
         "head = Cluster(initialize_head=True, head_node_args={'num_cpus': 0, 'include_dashboard': False})\n"
         "print(head.address, flush=True)\nsys.stdin.readline()\nhead.shutdown()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True,
        env={**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token})
    plain = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}

    def check(env: dict) -> str:
        done = subprocess.run([sys.executable, "-c", "import sys\nfrom core.training.rayaddress import ClusterError, check_address\n"
                               "try:\n    print(check_address(sys.argv[1]))\nexcept ClusterError as exc:\n"
                               "    print(f'error: {exc}')\n", address], capture_output=True, text=True, cwd=REPO,
                              env=env, timeout=LIMIT_S)
        assert "Traceback" not in done.stderr, done.stderr
        return done.stdout.strip()
    try:
        address = head.stdout.readline().strip()
        assert address.count(":") == 1, address
        assert check(plain) == (
            f"error: the Ray cluster at {address} asks for an authentication token (InvalidAuthToken: "
            "Authentication token is missing or incorrect); set RAY_AUTH_MODE=token and the cluster's token "
            "(RAY_AUTH_TOKEN or ~/.ray/auth_token) here")
        assert check({**plain, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}) == address
    finally:
        head.stdin.write("\n")
        head.stdin.close()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, 9)
            head.wait()
        head.stdout.close()
        deadline = time.monotonic() + 30
        while (left := ray_pids() - before) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not left, f"Ray processes left running: {sorted(left)}"
