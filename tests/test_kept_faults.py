"""The fault corpus of what a run keeps beside its weights (issue 36): the not-a-digit check, the
calibration, the robustness report, the exposure images and the saved predictions, each damaged
under a valid weights hash as a careless or hostile user could. Every case asserts the one line a
user reads, that the run folder is byte for byte as before where nothing should change, and that a
damaged report is made again where the lab makes it. FIFOs and huge files are made in temporary
folders (os.mkfifo, a sparse truncate); nothing here touches a real device."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from core.analysis import calibration, robustness
from core.notadigit import detector, exposure
from core.store.folder import CALIBRATION, OOD, PREDICTIONS, ROBUSTNESS, STATUS, RunError
from core.store.runs import load_predictions, load_run
from tests.helpers import DATA, REPO, require_mnist, run_cli

SHIPPED = REPO / "checkpoints"
LENET = next(p.name for p in SHIPPED.iterdir() if p.name.endswith("-lenet-reference"))
HANG_GUARD_S = 120  # a read that waits on a FIFO would wait forever: fail instead


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def store(tmp_path) -> Path:
    """A checkpoints folder of one's own holding a copy of the lenet reference run."""
    root = tmp_path / "checkpoints"
    shutil.copytree(SHIPPED / LENET, root / LENET)
    return root


def sparse(path: Path, size: int) -> None:
    """Make `path` claim `size` bytes without holding them (a file truncated upwards)."""
    path.unlink(missing_ok=True)
    with open(path, "wb") as handle:
        handle.truncate(size)


# --- the not-a-digit check ---------------------------------------------------------------------

def rewrite_detector(path: Path, tensors=None, **meta) -> None:
    """ood.safetensors again with some tensors or metadata fields replaced (the hash stays valid)."""
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    metadata = json.loads(data[8:8 + size])["__metadata__"]
    found = dict(load_tensors(data))
    found.update(tensors or {})
    metadata.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()})  # text: as given
    path.write_bytes(save_tensors(found, metadata=metadata))


@pytest.mark.timeout(HANG_GUARD_S)
@pytest.mark.parametrize("make, said", [
    (lambda p: (p.unlink(), os.mkfifo(p)), "ood.safetensors is not a regular file"),
    (lambda p: sparse(p, 30 << 30), "ood.safetensors is too large for what it should hold (32,212,254,720 bytes"),
    (lambda p: (p.unlink(), p.symlink_to("/dev/zero")), "ood.safetensors is not a regular file"),
    (lambda p: p.write_bytes(p.read_bytes()[:5000]), "ood.safetensors is no whole safetensors file"),
], ids=["fifo", "30-GB", "link-to-dev-zero", "truncated"])
def test_a_kept_check_that_is_no_file_of_its_kind_is_damaged_not_waited_on(store, make, said):
    path = store / LENET / OOD
    make(path)
    before = {p.name: p.lstat().st_size for p in (store / LENET).iterdir()}
    found, why = detector.read_kept(LENET, store)
    assert found is None and why.startswith(said), why
    assert {p.name: p.lstat().st_size for p in (store / LENET).iterdir()} == before


def exposure_width() -> int:
    return int(load_tensors((SHIPPED / LENET / OOD).read_bytes())["head_mean"].shape[0])


@pytest.mark.parametrize("tensors, meta, said", [
    (lambda d: {"head0_w0": torch.zeros(d + 1, 64, dtype=torch.float16)}, {},
     "its head0_w0 has shape (541, 64), not (540, 64) as this run's architecture needs"),
    (lambda d: {"head_mean": torch.zeros(d - 1), "head_scale": torch.ones(d - 1)}, {},
     "its head_mean has shape (539,), not (540,)"),
    (lambda d: {"head_scale": torch.zeros(d)}, {},
     "its feature scales are not all positive (the check would be silently off)"),
    (lambda d: {"head_mean": torch.full((d,), float("nan"))}, {}, "its fitted statistics are not finite"),
    (lambda d: {}, {"fitted_on": '"x"'}, "it is damaged (fitted_on: 'x' is not of type 'object')"),
    (lambda d: {}, {"fitted_on": "x"}, "it is damaged (fitted_on: 'x' is not JSON)"),
    (lambda d: {}, {"fitted_on": {}}, "it is damaged (fitted_on: 'train_images' is a required property)"),
    (lambda d: {}, {"evaluation": [1, 2]}, "it is damaged (evaluation: [1, 2] is not valid under any"),
    (lambda d: {}, {"evaluation": {"non_digits": 5, "test_digits": 10, "detectors": {"exposure": {"threshold": "high"}}}},
     "it is damaged (evaluation/detectors/exposure/threshold: 'high' is not of type 'number')"),
    (lambda d: {}, {"threshold": "nan"}, "it is damaged (threshold: nan is not a finite number)"),
    (lambda d: {}, {"detector": "magic"}, "it is damaged (detector: 'magic' is not one of"),
], ids=["w0-shape", "mean-shape", "scale-zero", "nan", "fitted-on-text", "fitted-on-not-json", "fitted-on-empty", "evaluation-list",
        "evaluation-figure-text", "threshold-nan", "unknown-detector"])
def test_a_kept_check_damaged_under_a_valid_hash_is_refused_in_one_line(store, tensors, meta, said):
    """The file's weights hash still matches, so only a check of every field and shape (against
    what lenet computes: 540 numbers per image) can tell it was edited."""
    rewrite_detector(store / LENET / OOD, tensors(exposure_width()), **meta)
    before = snapshot(store)
    found, why = detector.read_kept(LENET, store)
    assert found is None and why.startswith(said), why
    assert "\n" not in why
    assert snapshot(store) == before


def test_the_shipped_checks_all_read_as_whole():
    """The oracle for the cases above: every shipped run's own check passes the same reading."""
    for run in SHIPPED.iterdir():
        if (run / OOD).exists():
            found, why = detector.read_kept(run.name, SHIPPED)
            assert found is not None and why is None, (run.name, why)


@pytest.mark.slow
def test_a_damaged_check_is_said_and_fitted_again(store, quick_head):
    require_mnist()
    rewrite_detector(store / LENET / OOD, {"head_scale": torch.zeros(exposure_width())})
    said: list[str] = []
    fitted = detector.detector_for(LENET, store, DATA, report=said.append)
    assert said[0] == (f"the kept detector of run {LENET!r} cannot be used: its feature scales are not all "
                       "positive (the check would be silently off); fitting it again")
    kept, why = detector.read_kept(LENET, store)
    assert why is None and kept.threshold == fitted.threshold
    assert bool((kept.state["head_scale"] > 0).all())


# --- calibration --------------------------------------------------------------------------------

def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))  # Python's json writes NaN and Infinity, as a careless editor might


@pytest.mark.parametrize("change, said", [
    (lambda d: d.update(temperature=1e-300), "temperature: 1e-300 is less than the minimum of 0.04995"),
    (lambda d: d.update(temperature=1e300), "temperature: 1e+300 is greater than the maximum of 20.02"),
    (lambda d: d.update(temperature=True), "temperature: True is not of type 'number'"),
    (lambda d: d.update(fitted_on="x"), "fitted_on: 'x' is not of type 'object'"),
    (lambda d: d.update(fitted_on={}), "fitted_on: 'split' is a required property"),
    (lambda d: d.update(nll_before="low"), "nll_before: 'low' is not of type 'number'"),
    (lambda d: d.update(ece=-3), "ece: -3 is less than the minimum of 0"),
    (lambda d: d.update(ece_calibrated=float("nan")), "ece_calibrated: nan is not a finite number"),
    (lambda d: d.pop("bins"), "the report: 'bins' is a required property"),
], ids=["tiny-T", "huge-T", "T-true", "fitted-on-text", "fitted-on-empty", "nll-text", "ece-negative",
        "ece-nan", "no-bins"])
def test_a_calibration_no_fit_could_make_is_damaged(store, change, said):
    edit_json(store / LENET / CALIBRATION, change)
    before = snapshot(store)
    found, why = calibration.kept(LENET, store)
    assert found is None and why.startswith(f"calibration.json is damaged ({said}"), why
    assert calibration.temperature_of(LENET, store) is None  # predict --calibrated takes no damaged temperature
    assert snapshot(store) == before


@pytest.mark.timeout(HANG_GUARD_S)
def test_a_calibration_that_is_a_fifo_is_damaged(store):
    path = store / LENET / CALIBRATION
    path.unlink()
    os.mkfifo(path)
    assert calibration.kept(LENET, store) == (None, "calibration.json is not a regular file")


@pytest.mark.slow
def test_a_damaged_calibration_is_said_and_fitted_again(store):
    """The oracle: the fit made again equals the shipped one (the same validation split, the same search)."""
    require_mnist()
    shipped = calibration.kept(LENET, SHIPPED)[0]
    edit_json(store / LENET / CALIBRATION, lambda d: d.update(temperature=1e-300))
    code, out, err = run_cli("--checkpoints", str(store), "--data", str(DATA), "calibration", LENET)
    assert code == 0, err
    assert err.splitlines()[0] == ("the kept calibration of run 'lenet reference' cannot be used: calibration.json is "
                                   "damaged (temperature: 1e-300 is less than the minimum of 0.04995); fitting it again")
    again = calibration.kept(LENET, store)[0]
    assert again.temperature == pytest.approx(shipped.temperature, rel=1e-4)
    assert f"temperature {again.temperature:.4f}" in out


# --- robustness ---------------------------------------------------------------------------------

@pytest.mark.parametrize("change, said", [
    (lambda d: d.pop("checks"), "the report: 'checks' is a required property"),
    (lambda d: d.pop("corruptions"), "the report: 'corruptions' is a required property"),
    (lambda d: d.update(corruptions={}), "corruptions: {} is not of type 'array'"),
    (lambda d: d.update(attacks="fgsm"), "attacks: 'fgsm' is not of type 'array'"),
    (lambda d: d["attacks"][2].update(accuracy=None), "attacks/2/accuracy: None is not of type 'number'"),
    (lambda d: d["attacks"][3].update(accuracy="high"), "attacks/3/accuracy: 'high' is not of type 'number'"),
    (lambda d: d.update(clean_accuracy=float("nan")), "clean_accuracy: nan is not a finite number"),
    (lambda d: d["corruptions"][0].update(accuracy=250), "corruptions/0/accuracy: 250 is greater than the maximum of 100"),
    (lambda d: d["corruptions"][1].update(accuracy=-50), "corruptions/1/accuracy: -50 is less than the minimum of 0"),
    (lambda d: d.update(mean_corruption_error=float("inf")), "mean_corruption_error: inf is greater than the maximum"),
    (lambda d: d["attacks"][2].pop("steps"), "attacks/2: 'steps' is a required property"),
    (lambda d: d.update(mean_corruption_error=1.5), "its mean corruption error 1.5 is not the mean of its corruptions'"),
], ids=["no-checks", "no-corruptions", "corruptions-dict", "attacks-text", "accuracy-null", "accuracy-text",
        "clean-nan", "corruption-250", "corruption-minus-50", "mce-inf", "pgd-without-steps", "mce-not-the-mean"])
def test_a_robustness_report_its_measurement_could_not_write_is_damaged(store, change, said):
    edit_json(store / LENET / ROBUSTNESS, change)
    before = snapshot(store)
    found, why = robustness.kept(LENET, store)
    assert found is None and why.startswith(f"robustness.json is damaged ({said}"), why
    assert robustness.cached(LENET, store) is None
    assert snapshot(store) == before


def test_the_shipped_reports_all_read_as_whole():
    """The oracle for the cases above: every shipped report and calibration passes the same reading."""
    for run in SHIPPED.iterdir():
        if (run / ROBUSTNESS).exists():
            assert robustness.kept(run.name, SHIPPED)[1] is None, run.name
        if (run / CALIBRATION).exists():
            assert calibration.kept(run.name, SHIPPED)[1] is None, run.name


# --- saved predictions --------------------------------------------------------------------------

@pytest.mark.timeout(HANG_GUARD_S)
def test_predictions_that_claim_to_be_huge_or_are_a_fifo_are_refused(store):
    path = store / LENET / PREDICTIONS
    sparse(path, 30 << 30)
    with pytest.raises(RunError, match=r"predictions\.safetensors is too large for what it should hold"):
        load_predictions(LENET, store)
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(RunError, match=r"predictions\.safetensors is not a regular file"):
        load_predictions(LENET, store)


# --- the exposure images ------------------------------------------------------------------------

def npy_header(shape) -> bytes:
    """The bytes of a .npy file's header that claims `shape` of float32 (no data after it)."""
    import io
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return np.lib.format.MAGIC_PREFIX + b"\x01\x00" + buffer.getvalue()


@pytest.mark.timeout(HANG_GUARD_S)
def test_a_kept_exposure_set_is_read_only_when_it_is_one(tmp_path):
    """A FIFO, a header claiming 175 GiB, a truncated or out-of-range file: each is drawn again
    (None here), none waited on or allocated; a whole one is read back as written."""
    expected = 12
    path = tmp_path / "exposure.npy"
    os.mkfifo(path)
    assert exposure._read_kept(path, expected) is None
    path.unlink()
    path.write_bytes(npy_header((60_000_000, 28, 28)))
    assert exposure._read_kept(path, expected) is None
    path.write_bytes(npy_header((expected, 28, 28)) + b"\0" * 100)
    assert exposure._read_kept(path, expected) is None
    images = np.random.default_rng(0).random((expected, 28, 28), dtype=np.float32)
    np.save(path, images * 2)
    assert exposure._read_kept(path, expected) is None
    np.save(path, images)
    assert np.array_equal(exposure._read_kept(path, expected), images)


@pytest.mark.slow
@pytest.mark.timeout(HANG_GUARD_S)
def test_cancel_ends_a_job_drawing_its_exposure_images_at_once(tmp_path):
    """SIGTERM (the dashboard's Cancel) to a job whose exposure cache is a FIFO: it neither waits
    on the FIFO nor runs on through the drawing (some 15 s): it ends 'cancelled' and frees the slot."""
    mnist = require_mnist()
    data = tmp_path / "data"
    (data / "MNIST").mkdir(parents=True)
    (data / "MNIST" / "raw").symlink_to(mnist / "MNIST" / "raw")
    cache = data / "exposure" / f"exposure-{exposure.PER_KIND}-{exposure.SEED}-{exposure._drawing_key()}.npy"
    cache.parent.mkdir()
    os.mkfifo(cache)
    store = tmp_path / "checkpoints"
    job = subprocess.Popen([sys.executable, "-m", "core", "--checkpoints", str(store), "--data", str(data), "train",
                            "--arch", "mlp", "--epochs", "1", "--train-limit", "500", "--oe-weight", "0.5",
                            "--device", "cpu", "--quiet"], cwd=REPO, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        while not list(store.glob("*/dataset.json")):  # the data is loaded: the exposure images come next
            assert job.poll() is None, job.communicate()
            time.sleep(0.05)
        job.send_signal(signal.SIGTERM)
        out, err = job.communicate(timeout=HANG_GUARD_S)
    finally:
        job.kill()
    run_id = out.strip().splitlines()[-1]
    assert job.returncode == 3, err
    assert load_run(run_id, store).status == "cancelled"
    assert json.loads((store / run_id / STATUS).read_text())["message"] == "stopped by the user"
    assert cache.is_fifo()  # the drawing, which ends by writing the set there, never finished
