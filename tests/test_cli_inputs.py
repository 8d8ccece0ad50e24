"""Issue 10: bad input is refused before a run folder exists, in one line (exit 2 unless said).

Every CLI case runs the command line's main() with the user's arguments and checks the exit
status, the one-line message, that no traceback is printed, and which run folders are left. The
refusals run in this process (the same code without the interpreter's start); the cases that
train, or that a signal ends, start a real `python -m core`."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import REPO, require_mnist, run_cli, write_digits_csv

RAW = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def cli(tmp_path: Path, *argv: str, data=None, cwd=None, process: bool = False) -> subprocess.CompletedProcess:
    """The command's exit status and output; in this process unless `process`."""
    full = ["--checkpoints", str(tmp_path / "c"), "--data", str(data or require_mnist()), *argv]
    if process:
        return subprocess.run([sys.executable, "-m", "core", *full], cwd=cwd or REPO, capture_output=True, text=True)
    code, out, err = run_cli(*full, cwd=cwd)
    return subprocess.CompletedProcess(full, code, out, err)


def runs_left(tmp_path: Path) -> list[str]:
    c = tmp_path / "c"
    return sorted(p.name for p in c.iterdir() if p.is_dir() and not p.name.startswith(".")) if c.is_dir() else []


def refused(proc: subprocess.CompletedProcess, *fragments: str, code: int = 2) -> str:
    """The command failed with `code` and one `error:` line holding every fragment."""
    err = proc.stderr.strip()
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in err and len(err.splitlines()) == 1 and err.startswith("error:"), err
    for fragment in fragments:
        assert fragment in err, err
    return err


def digits_csv(path: Path, rows: int, labels: bool = True) -> Path:
    mnist = np.random.default_rng(0).integers(0, 256, size=(rows, 28, 28))
    write_digits_csv(path, mnist, np.arange(rows) % 10 if labels else None)
    return path


TINY = ("--arch", "mlp", "--epochs", "1", "--train-limit", "500", "--device", "cpu", "--quiet")


# --- 1. errors found before the folder exists ---------------------------------------------------

@pytest.mark.parametrize("command", ["train", "sweep"])
def test_a_bad_csv_leaves_no_run_folder(tmp_path, command):
    extra = ("--lr", "0.01", "--batch-size", "64") if command == "sweep" else ()
    bad = tmp_path / "bad.csv"
    bad.write_text("label,pixel0\n1,2\n")
    cases = {
        str(tmp_path / "missing.csv"): "There is no CSV file",
        str(digits_csv(tmp_path / "unlabelled.csv", 3, labels=False)): "has no 'label' column",
        str(bad): "The header has 2 columns",
    }
    for path, message in cases.items():
        refused(cli(tmp_path, command, *TINY, *extra, "--csv", path), message)
        assert runs_left(tmp_path) == []


@pytest.fixture(scope="module")
def altered_mnist(tmp_path_factory):
    """MNIST copies with one change each: a label, a pixel, a magic number."""
    raw_good = require_mnist() / "MNIST" / "raw"
    roots = {}
    for kind, (name, offset, value) in {"label": ("t10k-labels-idx1-ubyte", 8 + 5, None),
                                        "pixel": ("t10k-images-idx3-ubyte", 16 + 300, None),
                                        "magic": ("t10k-labels-idx1-ubyte", 3, 7)}.items():
        root = tmp_path_factory.mktemp(kind)
        raw = root / "MNIST" / "raw"
        raw.mkdir(parents=True)
        for other in RAW:
            if other != name:
                (raw / other).symlink_to(raw_good / other)
        data = bytearray((raw_good / name).read_bytes())
        data[offset] = value if value is not None else (data[offset] + 1) % 10
        (raw / name).write_bytes(bytes(data))
        roots[kind] = root
    return roots


@pytest.mark.parametrize("kind", ["label", "pixel"])
def test_altered_mnist_content_is_refused_before_any_folder(tmp_path, altered_mnist, kind):
    err = refused(cli(tmp_path, "train", *TINY, data=altered_mnist[kind]), "MD5", "python -m core fetch", code=1)
    assert "t10k-" in err
    assert runs_left(tmp_path) == []
    refused(cli(tmp_path, "sweep", *TINY, "--lr", "0.01", "--batch-size", "64", data=altered_mnist[kind]),
            "MD5", code=1)
    assert runs_left(tmp_path) == []


def test_a_bad_magic_number_is_worded_as_such(altered_mnist):
    from core.data.mnist import DataError, load_mnist
    with pytest.raises(DataError, match="magic number") as info:
        load_mnist(altered_mnist["magic"])
    assert "bytes, expected" not in str(info.value)


def test_a_truncated_file_names_its_size(tmp_path):
    from core.data.mnist import DataError, load_mnist
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in RAW:
        (raw / name).symlink_to(require_mnist() / "MNIST" / "raw" / name)
    (raw / RAW[3]).unlink()
    (raw / RAW[3]).write_bytes((require_mnist() / "MNIST" / "raw" / RAW[3]).read_bytes()[:1000])
    with pytest.raises(DataError, match=r"corrupt or partial \(1000 bytes, expected 10008\)"):
        load_mnist(tmp_path)


def test_verified_mnist_is_not_hashed_again(tmp_path, monkeypatch):
    from core.data import mnist as data
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in RAW:
        (raw / name).symlink_to(require_mnist() / "MNIST" / "raw" / name)
    data.verify_mnist(tmp_path)
    monkeypatch.setattr(data, "md5sum", lambda path: pytest.fail("hashed again"))
    data.verify_mnist(tmp_path)


@pytest.mark.slow
def test_resume_can_move_a_run_to_the_cpu(tmp_path):
    from core.config import TrainConfig
    from core.store.runs import load_run
    from core.training.loop import prepare_run
    writer = prepare_run(TrainConfig(arch="mlp", epochs=1, train_limit=500, device="cuda"), root=tmp_path / "c")
    writer.release()
    proc = cli(tmp_path, "train", "--resume", writer.run_id, "--device", "cpu", "--quiet", process=True)
    assert proc.returncode == 0, proc.stderr
    run = load_run(writer.run_id, tmp_path / "c")
    assert run.status == "finished" and run.config["device"] == "cpu"


# --- 3. smaller ---------------------------------------------------------------------------------

def test_resume_refuses_options_it_would_ignore(tmp_path):
    refused(cli(tmp_path, "train", "--resume", "some-run", "--epochs", "3", "--lr", "0.1"),
            "--resume", "--epochs", "--lr")
    refused(cli(tmp_path, "train", "--resume", "some-run", "--run-id", "some-run"), "--resume", "--run-id")


def test_run_id_on_a_finished_run_says_it_is_finished(tmp_path):
    from core.config import TrainConfig
    from core.training.loop import prepare_run
    writer = prepare_run(TrainConfig(arch="mlp", epochs=1, device="cpu"), root=tmp_path / "c")
    writer.finish()
    writer.release()
    err = refused(cli(tmp_path, "train", "--run-id", writer.run_id), "already finished", code=1)
    assert "--resume" not in err


def test_an_empty_csv_option_is_refused(tmp_path):
    refused(cli(tmp_path, "train", *TINY, "--csv", ""), "--csv")
    assert runs_left(tmp_path) == []


def test_a_one_row_csv_says_it_has_too_few_rows(tmp_path):
    err = refused(cli(tmp_path, "train", *TINY, "--csv", str(digits_csv(tmp_path / "one.csv", 1))), "too few rows")
    assert "between 1 and 0" not in err
    assert runs_left(tmp_path) == []


@pytest.mark.slow
def test_a_relative_csv_is_stored_absolute(tmp_path):
    from core.store.runs import load_run
    digits_csv(tmp_path / "digits.csv", 30)
    proc = cli(tmp_path, "train", *TINY, "--csv", "digits.csv", cwd=tmp_path, process=True)
    assert proc.returncode == 0, proc.stderr
    [run_id] = runs_left(tmp_path)
    assert load_run(run_id, tmp_path / "c").config["csv"] == str(tmp_path / "digits.csv")


@pytest.mark.parametrize("separator, shown", [(";", "';'"), ("\t", "tab")])
def test_another_separator_is_named_briefly(tmp_path, separator, shown):
    path = digits_csv(tmp_path / "digits.csv", 3)
    path.write_text(path.read_text().replace(",", separator))
    err = refused(cli(tmp_path, "train", *TINY, "--csv", str(path)), shown)
    assert len(err) < 300
    assert runs_left(tmp_path) == []


def test_csv_files_have_a_size_cap(tmp_path, monkeypatch):
    from core.data import csvfile as csvdata
    path = digits_csv(tmp_path / "digits.csv", 20)
    monkeypatch.setattr(csvdata, "MAX_CSV_BYTES", 1000)
    with pytest.raises(csvdata.CSVFormatError, match="larger than"):
        csvdata.read_digits_csv(path)
    with pytest.raises(csvdata.CSVFormatError, match="larger than"):
        csvdata.read_digits_csv(path.read_bytes())


@pytest.mark.slow
def test_cancelling_a_sweep_exits_3(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "core", "--checkpoints", str(tmp_path / "c"), "--data",
                             str(require_mnist()), "sweep", "--arch", "mlp", "--lr", "0.01,0.02",
                             "--batch-size", "16", "--epochs", "3", "--device", "cpu", "--quiet"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not any((tmp_path / "c" / r / "progress.json").exists()
                                             for r in runs_left(tmp_path)):
        time.sleep(0.2)
    assert proc.poll() is None, "the sweep ended before its first run started"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    assert "Traceback" not in err


def test_a_sweep_grid_has_a_cell_cap(tmp_path):
    from core.config import ConfigError, TrainConfig
    from core.training.grids import MAX_CELLS, prepare_sweep
    lrs = [0.001 * (i + 1) for i in range(MAX_CELLS + 1)]
    with pytest.raises(ConfigError, match=f"at most {MAX_CELLS}"):
        prepare_sweep(TrainConfig(arch="mlp"), lrs, [64], root=tmp_path / "c")
    assert runs_left(tmp_path) == []
    refused(cli(tmp_path, "sweep", *TINY, "--lr", ",".join(f"0.0{i}" for i in range(1, 10)) + ",0.1,0.2,0.3,0.4",
                "--batch-size", "64"), "at most 12")
    assert runs_left(tmp_path) == []


@pytest.mark.parametrize("option, value", [("--batch-size", "0"), ("--epochs", "0"),
                                           ("--sketch-repeats", "0"), ("--train-limit", "-5")])
def test_bench_validates_its_options_up_front(tmp_path, option, value):
    # refused up front, not after an epoch: the data folder holds no MNIST, so a command that got as
    # far as loading it would fail on the data instead of naming the option
    (tmp_path / "no-mnist").mkdir()
    refused(cli(tmp_path, "bench", "--device", "cpu", "--train-limit", "500", option, value,
                data=tmp_path / "no-mnist"), option, ">= 1")
