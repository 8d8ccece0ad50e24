"""Calibration: ECE against hand-built cases, the fitted temperature against a planted one, and a
real run's fit against its own validation images computed here."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from core.analysis import calibration
from core.analysis.calibration import CalibrationError, calibrate, cached, ece, fit_temperature, reliability, scaled
from core.analysis.predict import Predictor
from core.config import TrainConfig
from core.data.images import normalize_uint8
from core.data.mnist import load_mnist, split_indices
from core.store.folder import CALIBRATION, WEIGHTS
from core.store.runs import load_model, load_predictions
from core.store.writer import RunWriter
from tests.helpers import require_mnist, run_cli


def confident(confidence: float, digit: int) -> np.ndarray:
    row = np.full(10, (1 - confidence) / 9)
    row[digit] = confidence
    return row


def test_ece_of_all_correct_at_full_confidence_is_zero():
    labels = np.arange(10).repeat(5)
    assert ece(np.eye(10)[labels], labels) == pytest.approx(0.0, abs=1e-7)


def test_ece_of_a_known_two_bin_case():
    """Two images at 0.9 (one right: accuracy 0.5) and two at 0.3 (both right): gaps 0.4 and 0.7,
    each bin half the images: ECE 0.55. The reliability rows say the same."""
    probs = np.stack([confident(0.9, 0), confident(0.9, 0), confident(0.3, 2), confident(0.3, 3)])
    labels = np.array([0, 1, 2, 3])
    assert ece(probs, labels) == pytest.approx(0.55, abs=1e-6)
    rows = reliability(probs, labels)
    assert rows["count"].tolist() == [2, 2]
    assert rows["confidence"].tolist() == pytest.approx([0.3, 0.9])
    assert rows["accuracy"].tolist() == pytest.approx([1.0, 0.5])
    assert (rows["lower"] < rows["confidence"]).all() and (rows["confidence"] <= rows["upper"]).all()


def test_the_fitted_temperature_recovers_a_planted_one():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(20_000, 10, generator=generator) * 4
    for planted in (0.5, 2.5):
        labels = torch.multinomial((logits / planted).softmax(1), 1, generator=generator).squeeze(1)
        assert fit_temperature(logits, labels) == pytest.approx(planted, rel=0.05)


def test_scaling_saved_probabilities_is_scaling_the_logits():
    logits = torch.randn(50, 10, generator=torch.Generator().manual_seed(1)) * 3
    probs = logits.double().softmax(1).numpy()
    for temperature in (0.4, 1.0, 3.0):
        np.testing.assert_allclose(scaled(probs, temperature), (logits.double() / temperature).softmax(1).numpy(),
                                   rtol=1e-9, atol=1e-12)


@pytest.fixture
def run(trained_runs, tmp_path):
    root = trained_runs.copy_to(tmp_path / "runs")
    return root, trained_runs.ids["mlp"]


def validation_logits(root, run_id):
    """The run's validation images rebuilt here from MNIST and the seed (oracle for the split)."""
    mnist = load_mnist(require_mnist())
    config = json.loads((root / run_id / "config.json").read_text())
    _, val_idx = split_indices(len(mnist.train_images), config["val_size"], config["seed"])
    model = load_model(run_id, root).eval()
    with torch.inference_mode():
        logits = model(normalize_uint8(mnist.train_images[val_idx]))
    return logits.double(), mnist.train_labels[val_idx].long()


def nll(logits, labels, t):
    return float(torch.nn.functional.cross_entropy(logits / t, labels))


def test_a_runs_temperature_minimises_the_nll_of_its_own_validation_images(run):
    root, run_id = run
    result = calibrate(run_id, root, require_mnist())
    logits, labels = validation_logits(root, run_id)
    assert result.fitted_on["split"] == "validation" and result.fitted_on["images"] == len(labels) == 5000
    best = nll(logits, labels, result.temperature)
    for other in (0.8, 0.95, 1.05, 1.25):
        assert best <= nll(logits, labels, result.temperature * other) + 1e-9
    assert result.nll_before == pytest.approx(nll(logits, labels, 1.0), rel=1e-4)
    saved = load_predictions(run_id, root)
    assert result.ece == pytest.approx(ece(saved["probabilities"], saved["labels"]))
    assert result.ece_calibrated == pytest.approx(ece(scaled(saved["probabilities"], result.temperature),
                                                      saved["labels"]))
    # kept, read back, and stale once the weights change
    assert cached(run_id, root) == result
    assert calibrate(run_id, root, require_mnist()) == result
    weights = root / run_id / WEIGHTS
    weights.write_bytes(weights.read_bytes() + b" ")
    assert cached(run_id, root) is None


def test_predict_calibrated_divides_the_logits_by_the_temperature(run, tmp_path):
    root, run_id = run
    with pytest.raises(CalibrationError, match="python -m core calibration"):
        Predictor.from_run(run_id, root, calibrated=True)
    result = calibrate(run_id, root, require_mnist())
    image = load_mnist(require_mnist()).test_images[:3].numpy() / 255.0
    plain = Predictor.from_run(run_id, root)
    calibrated = Predictor.from_run(run_id, root, calibrated=True)
    with torch.inference_mode():
        logits = plain.model(normalize_uint8(torch.from_numpy((image * 255).round().astype(np.uint8))))
    np.testing.assert_allclose(calibrated.probabilities(image), (logits / result.temperature).softmax(1).numpy(),
                               atol=1e-6)
    assert not plain.calibrated and calibrated.calibrated


def test_the_cli_prints_the_fields_the_issue_asks(run):
    root, run_id = run
    code, out, err = run_cli("--checkpoints", str(root), "--data", str(require_mnist()), "calibration", run_id, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert {"ece", "ece_calibrated", "temperature", "fitted_on"} <= set(data)
    assert data["fitted_on"]["split"] == "validation" and data["fitted_on"]["images"] == 5000
    assert data == json.loads((root / run_id / CALIBRATION).read_text())


def folder_state(path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


def test_bad_input_is_one_line_and_writes_nothing(run, tmp_path):
    root, run_id = run
    # a CSV run whose file is gone: its validation split cannot be rebuilt
    csv_run = root / "csv-run"
    csv_run.mkdir()
    for name in os.listdir(root / run_id):
        if (root / run_id / name).is_file() and name != "lock":
            (csv_run / name).write_bytes((root / run_id / name).read_bytes())
    config = json.loads((csv_run / "config.json").read_text())
    (csv_run / "config.json").write_text(json.dumps({**config, "csv": str(tmp_path / "gone.csv")}))
    before = folder_state(csv_run)
    code, out, err = run_cli("--checkpoints", str(root), "--data", str(require_mnist()), "calibration", "csv-run")
    assert code == 2 and "validation split" in err and "gone.csv" in err and len(err.strip().splitlines()) == 1
    assert folder_state(csv_run) == before
    # no saved predictions; still running
    bare = RunWriter.create(TrainConfig(arch="mlp", name="bare").to_dict(), root=root)
    try:
        bare.start()
        with pytest.raises(CalibrationError, match="still running"):
            calibrate(bare.run_id, root, require_mnist())
        bare.finish()
        with pytest.raises(CalibrationError, match="no saved test predictions"):
            calibrate(bare.run_id, root, require_mnist())
    finally:
        bare.release()
    assert not (root / bare.run_id / CALIBRATION).exists()


def test_an_ensemble_of_members_with_different_splits_is_refused(run, trained_runs):
    from core.analysis.ensemble import create_ensemble
    root, _ = run
    ensemble = create_ensemble([trained_runs.ids["mlp"], trained_runs.ids["lenet"]], root=root)
    result = calibrate(ensemble, root, require_mnist())  # both members: seed 0, 5,000 held out
    assert result.fitted_on["images"] == 5000
    config = json.loads((root / trained_runs.ids["lenet"] / "config.json").read_text())
    (root / trained_runs.ids["lenet"] / "config.json").write_text(json.dumps({**config, "seed": 7}))
    with pytest.raises(CalibrationError, match="different validation images"):
        calibrate(ensemble, root, require_mnist(), refit=True)
    assert calibration.cached(ensemble, root) == result  # the kept fit is untouched
