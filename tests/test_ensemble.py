"""Ensembles without training (core.analysis.ensemble): the oracle (the mean of the members' saved
probabilities), the model that averages the members' own, refusals that leave nothing behind,
the CLI, and the Evaluate and Sketch pages."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from core.analysis.ensemble import EnsembleError, combine, create_ensemble
from core.fsio import atomic_write_bytes
from core.store.folder import PREDICTIONS
from core.store.runs import list_run_ids, load_model, load_predictions, load_run
from core.store.writer import tensors_bytes
from tests.helpers import cli_result
from tests.test_app import frame_with, open_page, texts


@pytest.fixture
def runs(trained_runs, tmp_path):
    """A private copy of the tiny mlp and lenet runs: (root, [mlp id, lenet id])."""
    root = trained_runs.copy_to(tmp_path / "runs")
    return root, [trained_runs.ids["mlp"], trained_runs.ids["lenet"]]


def test_ensemble_predictions_are_the_mean_of_the_members(runs):
    root, members = runs
    run_id = create_ensemble(members, root=root)
    run = load_run(run_id, root)
    assert run.status == "finished" and not run.warnings
    assert run.config["kind"] == "ensemble" and run.config["members"] == members
    assert run.arch == "ensemble" and run.name.startswith("ensemble: ")

    saved = [load_predictions(m, root) for m in members]
    expected = np.mean([p["probabilities"] for p in saved], axis=0)
    got = load_predictions(run_id, root)
    np.testing.assert_allclose(got["probabilities"], expected, rtol=1e-6, atol=1e-7)
    assert np.array_equal(got["labels"], saved[0]["labels"])
    assert np.array_equal(got["predicted"], expected.argmax(1))
    correct = int((expected.argmax(1) == saved[0]["labels"]).sum())
    assert run.test_acc == correct * 100 / len(expected)
    cm = np.array(run.metrics["confusion_matrix"])
    assert cm.sum() == len(expected) and np.trace(cm) == correct
    assert len(run.metrics["recall"]) == 10
    assert run.val_acc is None and "val_accuracy" not in run.metrics  # nothing was validated
    members_acc = run.metrics["member_test_accuracy"]
    assert members_acc == {m: load_run(m, root).test_acc for m in members}


def test_ensemble_model_averages_the_members_probabilities(runs, mnist_root):
    from core.data.mnist import load_mnist
    from core.analysis.predict import Predictor
    from core.data.images import normalize
    root, members = runs
    run_id = create_ensemble(members, name="mlp and lenet", root=root)
    images = load_mnist(mnist_root).test_images[:200].numpy().astype(np.float32) / 255
    x = normalize(images)
    with torch.inference_mode():
        expected = torch.stack([load_model(m, root)(x).softmax(1) for m in members]).mean(0)
        got = load_model(run_id, root)(x).softmax(1)
    assert torch.allclose(got, expected, atol=1e-6)
    predictor = Predictor.from_run(run_id, root)  # what Sketch and `core predict` use
    assert predictor.arch == "ensemble"
    np.testing.assert_allclose(predictor.probabilities(images), expected.numpy(), atol=1e-6)
    # the saved test predictions are the same model's on the first test images
    saved = load_predictions(run_id, root)["probabilities"][:200]
    np.testing.assert_allclose(saved, expected.numpy(), atol=1e-4)


def test_an_ensemble_can_be_a_member(runs):
    root, members = runs
    first = create_ensemble(members, root=root)
    second = create_ensemble([first, members[0]], root=root)
    x = torch.randn(4, 1, 28, 28)
    with torch.inference_mode():
        inner = load_model(first, root)(x).softmax(1)
        expected = (inner + load_model(members[0], root)(x).softmax(1)) / 2
        assert torch.allclose(load_model(second, root)(x).softmax(1), expected, atol=1e-6)


def test_members_tested_on_different_images_are_refused(runs):
    root, members = runs
    path = root / members[1] / PREDICTIONS
    saved = load_predictions(members[1], root)
    labels = saved["labels"].copy()
    labels[:5] = (labels[:5] + 1) % 10
    atomic_write_bytes(path, tensors_bytes({"labels": torch.from_numpy(labels),
                                            "predicted": torch.from_numpy(saved["predicted"]),
                                            "probabilities": torch.from_numpy(saved["probabilities"])}))
    before = list_run_ids(root)
    with pytest.raises(EnsembleError, match="tested on different images") as caught:
        create_ensemble(members, root=root)
    assert members[0] in str(caught.value) and members[1] in str(caught.value)
    assert list_run_ids(root) == before


def test_a_member_without_predictions_is_refused(runs):
    root, members = runs
    (root / members[0] / PREDICTIONS).unlink()
    before = list_run_ids(root)
    with pytest.raises(EnsembleError, match=f"{members[0]}.*no saved test predictions"):
        create_ensemble(members, root=root)
    assert list_run_ids(root) == before


@pytest.mark.parametrize("case", ["one run", "twice", "missing", "bad name"])
def test_bad_member_lists_are_refused(runs, case):
    root, members = runs
    args = {"one run": ([members[0]], None), "twice": ([members[0], members[0]], None),
            "missing": ([members[0], "20990101-000000-nope"], None), "bad name": (members, "x" * 81)}[case]
    before = list_run_ids(root)
    with pytest.raises(EnsembleError):
        create_ensemble(args[0], name=args[1], root=root)
    assert list_run_ids(root) == before


def test_a_failed_write_leaves_no_run_folder(runs, monkeypatch):
    from core.store.writer import RunWriter
    root, members = runs
    before = list_run_ids(root)

    def full_disk(self, *args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(RunWriter, "write_metrics", full_disk)
    with pytest.raises(Exception, match="full"):
        create_ensemble(members, root=root)
    assert list_run_ids(root) == before
    assert not [p for p in root.iterdir() if p.name not in before]


@pytest.mark.slow
def test_cli_ensemble_prints_the_run_id_and_refuses_bad_input_in_one_line(runs):
    root, members = runs

    def cli(*argv):
        return cli_result("--checkpoints", str(root), "ensemble", *argv)
    done = cli(*members, "--name", "cli ensemble")
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip()
    assert load_run(run_id, root).name == "cli ensemble"
    (root / members[1] / PREDICTIONS).unlink()
    refused = cli(members[0], members[1])
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "no saved test predictions" in refused.stderr
    assert cli(members[0]).returncode == 2

@pytest.mark.slow
@pytest.mark.usefixtures("quick_head")  # predict fits the ensemble's not-a-digit check first
def test_cli_predict_with_an_ensemble(runs, tmp_path, mnist_root):
    from PIL import Image

    from core.data.mnist import load_mnist
    from core.analysis.predict import Predictor
    root, members = runs
    run_id = create_ensemble(members, root=root)
    image = tmp_path / "digit.png"
    Image.fromarray(load_mnist(mnist_root).test_images[0].numpy()).save(image)
    done = cli_result("--checkpoints", str(root), "predict", "--json", run_id, str(image))
    assert done.returncode == 0, done.stderr
    import json
    got = json.loads(done.stdout)
    expected = Predictor.from_run(run_id, root).predict_file(image)
    assert got["digit"] == int(expected.argmax())
    np.testing.assert_allclose(got["probabilities"], expected, atol=1e-5)


# --- the dashboard --------------------------------------------------------------------------

@pytest.mark.slow
def test_evaluate_combines_runs_and_saves_the_ensemble(lab_env, runs):
    root, members = runs
    lab_env(root)
    at = open_page("evaluate")
    assert any(e.label == "Combine runs into an ensemble" for e in at.expander)
    at.multiselect(key="eval_ens_members").set_value(members).run()
    assert not at.exception, [e.value for e in at.exception]
    expected = combine(members, root)
    shown = frame_with(at, "mistakes")
    assert shown["test accuracy"].tolist() == [*expected.member_accuracies().values(), expected.accuracy]
    assert f"Ensemble test accuracy {expected.accuracy:.2f}%" in texts(at)
    before = set(list_run_ids(root))
    at.text_input(key="eval_ens_name").set_value("my ensemble")
    at.button(key="eval_ens_save").click().run()
    assert not at.exception, [e.value for e in at.exception]
    (new_id,) = set(list_run_ids(root)) - before
    assert any(new_id in s.value for s in at.success)
    assert at.selectbox(key="eval_run").value == new_id  # the page now shows the ensemble
    assert f"Test accuracy {expected.accuracy:.2f}%" in texts(at)
    for page in ("compare", "mistakes", "train", "sweep"):
        assert not open_page(page).exception, page


def test_evaluate_says_why_runs_cannot_be_combined(lab_env, runs):
    root, members = runs
    path = root / members[1] / PREDICTIONS
    saved = load_predictions(members[1], root)
    atomic_write_bytes(path, tensors_bytes({k: torch.from_numpy(v[:100]) for k, v in saved.items()}))
    lab_env(root)
    at = open_page("evaluate")
    at.multiselect(key="eval_ens_members").set_value(members).run()
    assert not at.exception
    assert any("tested on different images" in e.value for e in at.error)
    assert not [b for b in at.button if b.key == "eval_ens_save"]


def test_sketch_can_pick_the_ensemble_and_shows_its_card(lab_env, runs, drawn, mnist_root):
    from core.data.mnist import load_mnist
    from core.analysis.predict import Predictor
    from core.data.images import to_mnist
    from dashboard.views.sketch import decode_drawing
    from tests.test_app import cards, pad_drawing
    root, members = runs
    run_id = create_ensemble(members, name="sketch ensemble", root=root)
    lab_env(root)
    at = open_page("sketch")
    picker = at.multiselect(key="sketch_models")
    assert run_id in picker.options or any("sketch ensemble" in o for o in picker.options)
    picker.set_value([run_id, *members]).run()
    drawn.value = pad_drawing(load_mnist(mnist_root).test_images[0].numpy())
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    probs = Predictor.from_run(run_id, root).probabilities(to_mnist(decode_drawing(drawn.value)))[0]
    assert cards(at)["sketch ensemble"] == (int(probs.argmax()), round(100 * float(probs.max()), 1))
