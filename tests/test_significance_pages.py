"""Issue 21 on the pages (AppTest): Compare says whether runs differ, Evaluate shows calibration,
Sketch can show calibrated confidences. Oracles: counts and p-values taken here from the saved
predictions and the binomial distribution, ECE binned here with numpy, probabilities from the
model asked here."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from scipy.stats import binom, ttest_ind

from core.analysis.calibration import calibrate
from core.analysis.compare import p_text
from core.analysis.predict import Predictor
from core.config import TrainConfig
from core.store.folder import CALIBRATION
from core.store.reference import reference_ids
from core.store.runs import load_predictions, load_run
from core.store.writer import RunWriter
from tests.helpers import REPO, shown
from tests.test_app import cards, frame_with, open_page, pad_drawing

SHIPPED = REPO / "checkpoints"
RECIPES = [i for i in reference_ids(SHIPPED) if not load_run(i, SHIPPED).config.get("sweep")]


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    root = tmp_path_factory.mktemp("shipped")
    for run_id in RECIPES:
        shutil.copytree(SHIPPED / run_id, root / run_id)
    return root


def right(run_id, root) -> np.ndarray:
    saved = load_predictions(run_id, root)
    return saved["predicted"] == saved["labels"]


def mcnemar_p(a: np.ndarray, b: np.ndarray) -> float:
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    return min(1.0, 2 * binom.cdf(min(a_only, b_only), a_only + b_only, 0.5))


def all_text(at) -> str:
    parts = [str(e.value) for kind in ("markdown", "caption", "info", "success", "warning") for e in getattr(at, kind)]
    return shown("\n".join(parts))


def test_compare_tests_every_pair_of_the_reference_runs_and_reads_one_pair(lab_env, shipped):
    lab_env(shipped)
    at = open_page("compare")
    at.multiselect(key="compare_runs").set_value(RECIPES).run()  # every recipe's reference run
    hits = {i: right(i, shipped) for i in RECIPES}
    pairs = [(a, b) for k, a in enumerate(RECIPES) for b in RECIPES[k + 1:]]
    raw = {pair: mcnemar_p(hits[pair[0]], hits[pair[1]]) for pair in pairs}
    running, differ = 0.0, 0  # Holm by hand
    for rank, pair in enumerate(sorted(raw, key=raw.get)):
        running = max(running, min(1.0, raw[pair] * (len(pairs) - rank)))
        differ += running < 0.05
    assert f"{differ} of {len(pairs)} pairs differ at the 5% level" in all_text(at)

    labnet, resnet = (next(i for i in RECIPES if load_run(i, shipped).arch == a) for a in ("labnet", "resnet"))
    at.multiselect(key="compare_runs").set_value([labnet, resnet]).run()
    assert not at.exception, [e.value for e in at.exception]
    a, b = hits[labnet], hits[resnet]
    table = frame_with(at, "resnet reference right")
    assert table.to_numpy().tolist() == [[int((a & b).sum()), int((a & ~b).sum())],
                                         [int((~a & b).sum()), int((~a & ~b).sum())]]
    text = all_text(at)
    assert (f"labnet reference is right on {int((a & ~b).sum())} images resnet reference gets wrong, "
            f"resnet reference on {int((~a & b).sum())} that labnet reference gets wrong: "
            f"p = {mcnemar_p(a, b):.2f}, no evidence of a difference at the 5% level.") in text
    table = frame_with(at, "test_ci").set_index("run_id")
    assert table.loc[labnet, "test_ci"] == "99.56–99.78%"


def test_runs_tested_on_other_images_are_refused_in_one_line(lab_env, shipped, tmp_path):
    root = lab_env(tmp_path / "runs")
    first = RECIPES[0]
    shutil.copytree(shipped / first, root / first)
    saved = load_predictions(first, shipped)
    writer = RunWriter.create(TrainConfig(arch="mlp", name="other images").to_dict(), root=root)
    import torch
    writer.save_predictions(torch.from_numpy(saved["labels"][::-1].copy()),
                            torch.from_numpy(saved["probabilities"].astype(np.float32)))
    writer.finish()
    writer.release()
    at = open_page("compare")
    at.multiselect(key="compare_runs").set_value([first, writer.run_id]).run()
    assert not at.exception, [e.value for e in at.exception]
    (warning,) = [w.value for w in at.warning if "different images" in w.value]
    assert "cannot be compared image by image" in shown(warning)


def test_two_seed_groups_are_compared_by_welch(lab_env, tmp_path):
    root = lab_env(tmp_path / "runs")
    scores = {"fast": [98.1, 98.4, 98.2], "slow": [98.9, 99.0, 98.8]}
    for group, accuracies in scores.items():
        for seed, accuracy in enumerate(accuracies):
            writer = RunWriter.create(TrainConfig(arch="mlp", seed=seed, group=group,
                                                  name=f"{group} {seed}").to_dict(), root=root)
            writer.write_metrics({"test_accuracy": accuracy})
            writer.finish()
            writer.release()
    at = open_page("compare")
    at.selectbox(key="sig_group_a").set_value("fast").run()
    p = ttest_ind(scores["fast"], scores["slow"], equal_var=False).pvalue
    assert f"Welch's t-test {p_text(p)}, a real difference at the 5% level" in all_text(at)


def ece_by_hand(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    confidence = probs.max(1)
    hit = probs.argmax(1) == labels
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            total += inside.mean() * abs(confidence[inside].mean() - hit[inside].mean())
    return total


@pytest.mark.slow  # a second or more
def test_evaluate_shows_calibration_and_fits_a_temperature_on_request(lab_env, trained_runs, tmp_path):
    root = lab_env(trained_runs.copy_to(tmp_path / "runs"))
    run_id = trained_runs.ids["mlp"]
    at = open_page("evaluate")
    at.selectbox(key="eval_run").set_value(run_id).run()
    saved = load_predictions(run_id, root)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["ECE of the test probabilities"] == f"{ece_by_hand(saved['probabilities'], saved['labels']):.4f}"
    assert "Temperature" not in metrics
    at.button(key="eval_calibrate").click().run()
    assert not at.exception, [e.value for e in at.exception]
    kept = json.loads((root / run_id / CALIBRATION).read_text())
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Temperature"] == f"{kept['temperature']:.3f}"
    assert metrics["ECE after temperature scaling"] == f"{kept['ece_calibrated']:.4f}"
    at.run()  # a second visit shows the kept fit, no button
    assert not [b for b in at.button if b.key == "eval_calibrate"]


def test_sketch_shows_calibrated_confidences_where_a_run_has_a_fit(lab_env, trained_runs, tmp_path, drawn,
                                                                   mnist_root):
    from core.data.images import to_mnist
    from core.data.mnist import load_mnist
    from dashboard.views.sketch import decode_drawing
    root = lab_env(trained_runs.copy_to(tmp_path / "runs"))
    mlp, lenet = trained_runs.ids["mlp"], trained_runs.ids["lenet"]
    calibrate(mlp, root, mnist_root)
    drawn.value = pad_drawing(load_mnist(mnist_root).test_images[0].numpy())
    at = open_page("sketch")
    at.toggle(key="sketch_calibrated").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    digit = to_mnist(decode_drawing(drawn.value))
    bodies = " ".join(element.proto.body for element in at.get("html"))
    scaled = Predictor.from_run(mlp, root, calibrated=True)
    probs = scaled.probabilities(digit)[0]
    assert f"{100 * probs.max():.1f}% sure (calibrated, T = {scaled.temperature:.2f})" in bodies
    plain = Predictor.from_run(lenet, root).probabilities(digit)[0]
    assert f"{100 * plain.max():.1f}% sure (no calibration fitted yet)" in bodies
    at.toggle(key="sketch_calibrated").set_value(False).run()
    own = Predictor.from_run(mlp, root).probabilities(digit)[0]
    assert cards(at)["tiny mlp"] == (int(own.argmax()), round(100 * float(own.max()), 1))
