"""Small bad-input faults found by a sweep: each case against the real CLI or the real function, on
real files in tmp folders and shipped reference runs, asserting the one line the user reads."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
from PIL import Image

from core.analysis.compare import CompareError, pairwise
from core.analysis.predict import Predictor
from core.config import ConfigError, TrainConfig
from core.data.images import ImageError, to_mnist
from core.data.mnist import load_mnist
from core.store.folder import CALIBRATION
from core.store.runs import load_run
from tests.helpers import REPO, require_mnist, run_cli, shown, train_new
from tests.test_analysis_faults import AS_USER, MLP, SHIPPED, store_state

EMPTY_IMAGE = ("The image is empty: nothing in it stands out from its background (one colour all over, or marks "
               "too faint to be ink), so there is no digit to read.")


@pytest.fixture
def store(tmp_path):
    """A checkpoints folder holding a copy of the shipped mlp reference run (calibrated, with its
    not-a-digit detector)."""
    root = tmp_path / "runs"
    shutil.copytree(SHIPPED / MLP, root / MLP)
    return root


def digit_png(path, index: int = 0):
    """MNIST test image `index`, white on black, saved as a PNG."""
    Image.fromarray(load_mnist(require_mnist()).test_images[index].numpy()).save(path)
    return path


# --- 1. an image file with no ink --------------------------------------------------------------

def test_an_image_file_on_a_grey_or_dark_background_is_an_empty_image_not_a_drawing(store, tmp_path):
    rng = np.random.default_rng(0)
    files = {"grey.png": np.full((60, 60), 100, np.uint8), "dark.png": np.full((60, 60), 10, np.uint8),
             "faint.png": rng.integers(20, 30, (60, 60), dtype=np.uint8)}  # marks too faint to be ink
    paths = []
    for name, pixels in files.items():
        paths.append(str(tmp_path / name))
        Image.fromarray(pixels).save(paths[-1])
    paths.append(str(tmp_path / "dark-rgb.jpg"))
    Image.new("RGB", (60, 60), (30, 30, 30)).save(paths[-1])
    before = store_state(store)
    code, out, err = run_cli("--checkpoints", str(store), "predict", MLP, *paths)
    assert (code, out) == (1, "")
    assert err == "".join(f"{p}: error: {EMPTY_IMAGE}\n" for p in paths)
    assert store_state(store) == before
    # the Sketch pad's array is still a drawing, in the drawing's words
    with pytest.raises(ImageError) as caught:
        to_mnist(np.zeros((280, 280), np.uint8))
    assert str(caught.value) == "The drawing is empty: draw a digit first."


# --- 2. a FIFO or a folder as the image ------------------------------------------------------

@pytest.mark.timeout(60)  # a reader that waited on the FIFO for a writer would hang: this ends it as a failure
@pytest.mark.parametrize("suffix, what", [(".png", "an image file"), (".csv", "a CSV file")])
def test_a_fifo_or_a_folder_given_to_predict_says_what_it_is_and_never_blocks(store, tmp_path, suffix, what):
    fifo, folder = tmp_path / f"digit{suffix}", tmp_path / f"digits{suffix}"
    os.mkfifo(fifo)
    folder.mkdir()
    before = store_state(store)
    code, out, err = run_cli("--checkpoints", str(store), "predict", MLP, str(fifo), str(folder))
    assert (code, out) == (1, "")
    assert err == (f"{fifo}: error: '{fifo}' is a named pipe (FIFO), not {what}.\n"
                   f"{folder}: error: '{folder}' is a folder, not {what}.\n")
    assert store_state(store) == before


# --- 3. --calibrated on a run that did not finish --------------------------------------------

@pytest.mark.slow
def test_predict_calibrated_on_a_cancelled_run_says_it_did_not_finish_and_its_advice_works(tmp_path):
    root, data = tmp_path / "runs", require_mnist()
    stop = threading.Event()
    run_id, status = train_new(TrainConfig(arch="mlp", epochs=2, train_limit=1000, device="cpu", name="cut short"),
                               root, stop=stop, callback=lambda e: e.kind == "epoch" and stop.set())
    assert status == "cancelled"
    image = str(digit_png(tmp_path / "seven.png"))
    before = store_state(root)
    code, out, err = run_cli("--checkpoints", str(root), "--data", str(data), "predict", run_id, image, "--calibrated")
    assert (code, out) == (2, "")
    assert err == (f"error: run 'cut short' did not finish (cancelled), so it has no calibration to use: predict "
                   f"without --calibrated, or resume it (`python -m core train --resume {run_id}`) and then fit one "
                   f"with `python -m core calibration {run_id}`\n")
    assert store_state(root) == before
    # the advice works: resumed to its end, the run is calibrated, and its predictions are
    for argv in (("train", "--resume", run_id, "--quiet"), ("calibration", run_id)):
        code, out, err = run_cli("--checkpoints", str(root), "--data", str(data), *argv)
        assert code == 0, err
    assert Predictor.from_run(run_id, root, calibrated=True).calibrated


# --- 4. a calibration.json that cannot be read -----------------------------------------------

def refit_message(problem: str) -> str:
    return (f"error: the calibration of run 'mlp reference' cannot be used: {problem}; fit it again with "
            f"`python -m core calibration {MLP} --refit`\n")


def test_a_calibration_file_that_is_not_json_is_called_damaged_and_the_refit_it_advises_mends_it(store, tmp_path):
    assert load_run(MLP, store).name == "mlp reference"
    (store / MLP / CALIBRATION).write_bytes(b'{"temperature": 2.2')  # cut short
    image = str(digit_png(tmp_path / "seven.png"))
    before = store_state(store)
    code, out, err = run_cli("--checkpoints", str(store), "predict", MLP, image, "--calibrated")
    assert (code, out, err) == (2, "", refit_message("calibration.json is not valid JSON"))
    assert store_state(store) == before
    code, out, err = run_cli("--checkpoints", str(store), "--data", str(require_mnist()), "calibration", MLP,
                             "--refit")
    assert code == 0, err
    assert json.loads((store / MLP / CALIBRATION).read_text())["temperature"] > 0
    assert Predictor.from_run(MLP, store, calibrated=True).calibrated


def test_a_calibration_no_fit_could_make_is_named_by_predict(store, tmp_path):
    """Whole JSON with a temperature outside the fit's search range: damaged, said by its field."""
    path = store / MLP / CALIBRATION
    path.write_text(json.dumps({**json.loads(path.read_text()), "temperature": 1e300}))
    before = store_state(store)
    code, out, err = run_cli("--checkpoints", str(store), "predict", MLP, str(digit_png(tmp_path / "seven.png")),
                             "--calibrated")
    assert (code, out, err) == (2, "", refit_message(
        "calibration.json is damaged (temperature: 1e+300 is greater than the maximum of 20.02)"))
    assert store_state(store) == before


@pytest.mark.slow
def test_a_calibration_file_the_user_may_not_read_is_named_with_its_os_error(store, tmp_path):
    (store / MLP / CALIBRATION).chmod(0o000)
    image = str(digit_png(tmp_path / "seven.png"))
    before = store_state(store)
    proc = subprocess.run([*AS_USER, sys.executable, "-m", "core", "--checkpoints", str(store), "predict", MLP, image,
                           "--calibrated"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == refit_message("calibration.json is not readable (Permission denied)")
    assert store_state(store) == before


# --- 5. a checkpoints path that is a file ----------------------------------------------------

def test_a_checkpoints_path_that_is_a_file_is_named_by_runs(tmp_path, monkeypatch):
    blocker = tmp_path / "checkpoints"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MNIST_LAB_CHECKPOINTS", str(blocker))
    code, out, err = run_cli("runs")
    assert (code, out) == (1, "")
    assert err == (f"error: the checkpoints path {blocker} is a file, not a folder: set --checkpoints or "
                   "$MNIST_LAB_CHECKPOINTS to a folder, or move the file away\n")
    assert blocker.read_text() == "not a folder"


@pytest.mark.slow
def test_the_dashboard_names_a_checkpoints_path_that_is_a_file(lab_env, tmp_path):
    from tests.test_app import open_page, texts
    blocker = lab_env(tmp_path / "blocker")
    blocker.write_text("not a folder")
    for page in ("train", "compare"):
        at = open_page(page)
        assert [shown(e.value) for e in at.error] == [
            f"the checkpoints path {blocker} is a file, not a folder: set --checkpoints or $MNIST_LAB_CHECKPOINTS "
            "to a folder, or move the file away"], page
        assert "No runs" not in texts(at)


# --- 6. adversarial steps without an eps -----------------------------------------------------

def test_adversarial_steps_without_an_eps_are_refused_in_one_line(tmp_path):
    root = tmp_path / "runs"
    code, out, err = run_cli("--checkpoints", str(root), "--data", str(require_mnist()), "train", "--arch", "mlp",
                             "--adv-steps", "5")
    assert (code, out) == (2, "")
    assert err == ("error: adv_steps is 5 but adv_eps is 0 (off), so it would change nothing: give adv_eps too, "
                   "or leave adv_steps out\n")
    assert not root.exists()
    with pytest.raises(ConfigError, match=r"^adv_warmup is 0\.5 but adv_eps is 0 \(off\)"):
        TrainConfig(arch="mlp", adv_warmup=0.5)
    # the robust recipe's own attack settings stay, idle, when its eps is turned off; with an eps they act
    assert TrainConfig(arch="robust", adv_eps=0.0).adv_steps == 5
    assert TrainConfig(arch="mlp", adv_eps=0.1, adv_steps=5).adv_steps == 5


# --- 7. a CSV cell too large for a whole number ----------------------------------------------

def huge_cell_csv(path, label: bool):
    header = ["label"] * label + [f"pixel{i}" for i in range(784)]
    path.write_text(",".join(header) + "\n" + ",".join(["3"] * label + ["1e308"] + ["0"] * 783) + "\n")
    return path


@pytest.mark.slow
def test_a_huge_number_in_a_csv_cell_is_one_line_with_no_warning(store, tmp_path):
    rows = huge_cell_csv(tmp_path / "rows.csv", label=False)
    proc = subprocess.run([sys.executable, "-m", "core", "--checkpoints", str(store), "predict", MLP, str(rows)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == f"{rows}: error: row 1 (line 2), column 'pixel0': '1e308' is not a pixel value 0..255.\n"
    training = huge_cell_csv(tmp_path / "train.csv", label=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = run_cli("--checkpoints", str(tmp_path / "new-runs"), "--data", str(require_mnist()), "train",
                                 "--arch", "mlp", "--csv", str(training))
    assert [str(w.message) for w in caught] == []
    assert (code, out, err) == (2, "", "error: row 1 (line 2), column 'pixel0': '1e308' is not a pixel value 0..255.\n")
    assert not (tmp_path / "new-runs").exists()


# --- 8. one run under two names --------------------------------------------------------------

def test_compare_refuses_one_run_under_two_names(store):
    (store / "alias").symlink_to(MLP)
    before = store_state(store)
    for a, b in ((MLP, "alias"), ("alias", MLP)):
        code, out, err = run_cli("--checkpoints", str(store), "compare", a, b)
        assert (code, out) == (2, "")
        assert err == f"error: runs {a!r} and {b!r} are one run (the folder {MLP!r}) given twice: compare it with another run\n"
    with pytest.raises(CompareError, match="given twice"):
        pairwise([MLP, "alias"], store)
    assert store_state(store) == before


def test_an_ensemble_and_a_label_issue_ranking_refuse_one_run_under_two_names(store):
    """The same rule as compare's (core.store.runs.given_twice): a link in the store to a run's
    folder is that run, so it would be averaged twice."""
    (store / "alias").symlink_to(MLP)
    before = store_state(store)
    code, out, err = run_cli("--checkpoints", str(store), "ensemble", MLP, "alias")
    assert (code, out) == (2, "")
    assert err == (f"error: runs {MLP!r} and 'alias' are one run (a link in the store leads to its folder): "
                   "each run can take part once\n")
    code, out, err = run_cli("--checkpoints", str(store), "label-issues", "--runs", "alias", MLP)
    assert (code, out) == (2, "")
    assert err == (f"error: runs 'alias' and {MLP!r} are one run (a link in the store leads to its folder): "
                   "each run's probabilities are averaged once\n")
    assert store_state(store) == before
