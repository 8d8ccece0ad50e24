"""`python -m core predict` on drawings of each kind, and CSV data through the CLI (seed 003)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from core.data.mnist import load_mnist
from core.store.runs import load_predictions, load_run
from tests.helpers import REPO, cli_result, require_mnist, write_digits_csv

SHIPPED = REPO / "checkpoints"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A copy of the shipped lenet reference run: trained, its test predictions saved and its
    not-a-digit check kept (so predict does not fit one; these tests read what it says, not how
    well it says it), and nothing to train or fit here."""
    from core.store.reference import reference_ids
    root = tmp_path_factory.mktemp("checkpoints")
    run_id = next(i for i in reference_ids(SHIPPED) if load_run(i, SHIPPED).arch == "lenet")
    shutil.copytree(SHIPPED / run_id, root / run_id)
    return root, run_id


def confident_test_digits(root, run_id, per_class: int = 1):
    """Test images the run classifies correctly with p > 0.98, one per class."""
    saved = load_predictions(run_id, root)
    picked = []
    for digit in range(10):
        ok = np.flatnonzero((saved["labels"] == digit) & (saved["predicted"] == digit)
                            & (saved["probabilities"].max(1) > 0.98))
        picked += ok[:per_class].tolist()
    return picked


def render(pixels: np.ndarray, kind: str) -> Image.Image:
    """A 28x28 MNIST digit as a 280x280 drawing of the given kind."""
    big = Image.fromarray(pixels).resize((280, 280), Image.BILINEAR)
    ink = np.asarray(big)
    if kind == "white-on-black":
        return Image.fromarray(ink, "L")
    if kind == "black-on-white":
        return Image.fromarray(255 - ink, "L").convert("RGB")
    rgba = np.zeros((280, 280, 4), np.uint8)  # black strokes on a transparent background
    rgba[..., 3] = ink
    return Image.fromarray(rgba, "RGBA")


def cli(*argv, process: bool = False):
    """The command line's main() in this process, or with `process` a real `python -m core`."""
    if not process:
        return cli_result(*argv)
    return subprocess.run([sys.executable, "-m", "core", *argv], cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_predict_reads_every_kind_of_drawing(run, tmp_path):
    root, run_id = run
    mnist = load_mnist(require_mnist())
    files, expected = [], []
    for index in confident_test_digits(root, run_id):
        for kind in ("white-on-black", "black-on-white", "transparent"):
            path = tmp_path / f"{index}-{kind}.png"
            render(mnist.test_images[index].numpy(), kind).save(path)
            files.append(str(path))
            expected.append(int(mnist.test_labels[index]))
    proc = cli("--checkpoints", str(root), "predict", run_id, *files, "--json")
    assert proc.returncode == 0, proc.stderr
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["file"] for r in results] == files
    for r in results:
        assert len(r["probabilities"]) == 10 and abs(sum(r["probabilities"]) - 1) < 1e-3
        assert r["digit"] == int(np.argmax(r["probabilities"]))
    digits = [r["digit"] for r in results]
    assert sum(d == e for d, e in zip(digits, expected)) >= 0.9 * len(expected), (digits, expected)
    # the three kinds of the same digit agree with each other
    for i in range(0, len(digits), 3):
        assert digits[i] == digits[i + 1] == digits[i + 2], files[i]


@pytest.mark.slow
def test_predict_plain_output_and_an_empty_drawing(run, tmp_path):
    root, run_id = run
    blank = tmp_path / "blank.png"
    Image.new("RGBA", (200, 200), (0, 0, 0, 0)).save(blank)
    proc = cli("--checkpoints", str(root), "predict", run_id, str(blank))
    assert proc.returncode == 1
    assert "empty" in proc.stderr.lower() and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_csv_is_trained_on_like_mnist_and_unlabelled_csv_is_predicted(run, tmp_path):
    root, run_id = run
    mnist = load_mnist(require_mnist())
    labelled = tmp_path / "train.csv"
    write_digits_csv(labelled, mnist.train_images[:3000], mnist.train_labels[:3000])
    proc = cli("--checkpoints", str(root), "--data", str(require_mnist()), "train", "--arch", "mlp",
               "--csv", str(labelled), "--epochs", "3", "--val-size", "500", "--quiet", "--name", "from-csv")
    assert proc.returncode == 0, proc.stderr
    csv_run = load_run(proc.stdout.split()[-1], root)
    assert csv_run.status == "finished" and csv_run.val_acc > 60  # chance is 10%
    assert csv_run.config["csv"] == str(labelled)

    unlabelled = tmp_path / "test.csv"
    write_digits_csv(unlabelled, mnist.test_images[:20])
    proc = cli("--checkpoints", str(root), "predict", run_id, str(unlabelled), "--json")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["row"] for r in rows] == list(range(1, 21))
    saved = load_predictions(run_id, root)["predicted"][:20]
    assert [r["digit"] for r in rows] == saved.tolist()  # the same model, the same answers

    # ...but it cannot be trained on
    proc = cli("--checkpoints", str(root), "--data", str(require_mnist()), "train", "--arch", "mlp",
               "--csv", str(unlabelled), "--epochs", "1")
    assert proc.returncode == 2 and "label" in proc.stderr and "Traceback" not in proc.stderr  # bad input


@pytest.mark.slow
def test_a_bad_csv_names_the_row_and_column(run, tmp_path):
    root, run_id = run
    bad = tmp_path / "bad.csv"
    header = "label," + ",".join(f"pixel{i}" for i in range(784))
    row = ["3"] + ["0"] * 784
    row[100] = "abc"
    bad.write_text(header + "\n" + ",".join(["1"] + ["0"] * 784) + "\n" + ",".join(row) + "\n")
    proc = cli("--checkpoints", str(root), "--data", str(require_mnist()), "train", "--arch", "mlp", "--csv", str(bad))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr  # bad input
    assert "row 2" in proc.stderr and "pixel99" in proc.stderr
