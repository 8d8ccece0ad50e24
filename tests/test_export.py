"""Take a model with you (issue 24): every architecture and an ensemble exported to ONNX and run in ONNX
Runtime on the 10,000 MNIST test images as raw [0, 1] pixels must give exactly the run's saved digits,
and probabilities within 1e-4 of the lab's own PyTorch path (core.metrics.evaluate on the normalised
test set, a different route from the exported wrapper); the card says what the run's files say; bad
input is one line and leaves no file behind."""
from __future__ import annotations

import json
import shutil
import zipfile
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest

from core.analysis.ensemble import create_ensemble
from core.config import TrainConfig
from core.data.images import normalize_uint8
from core.data.mnist import load_mnist
from core.export import graph
from core.metrics import evaluate
from core.models import inference_layout, list_models
from core.store.runs import load_model, load_predictions, load_run
from tests.helpers import REPO, reference_runs, require_mnist, run_cli

SHIPPED = REPO / "checkpoints"
BY_ARCH = reference_runs(SHIPPED)
QUICK = ("robust",)                 # the fast tier's; every architecture runs in the slow tier
WHOLE_SET = ("mlp", "lenet", "robust")  # checked on all 10,000 test images (the deep ones on 2,000)


def pixels_and_labels():
    mnist = load_mnist(require_mnist())
    return mnist.test_images.float().div(255).unsqueeze(1).numpy(), mnist.test_images, mnist.test_labels


def assert_runs_as_the_lab_does(run_id: str, root, path, images_checked: int = 10_000) -> None:
    """The exported file against the run's saved digits and the lab's own PyTorch path, on the first
    `images_checked` test images (all 10,000 where the whole set is the point)."""
    pixels, images, labels = (a[:images_checked] for a in pixels_and_labels())
    exported = graph.run_exported(path, pixels)
    saved = load_predictions(run_id, root)
    assert exported.shape == (images_checked, 10) and exported.dtype == np.float32
    assert np.array_equal(exported.argmax(1), saved["predicted"][:images_checked])
    # the lab's own path for many images: normalised uint8 pixels, channels_last for a convolutional model
    model, x = inference_layout(load_model(run_id, root), normalize_uint8(images))
    _, _, ours = evaluate(model, x, labels)
    assert np.abs(exported - ours.numpy()).max() < 1e-4
    assert np.allclose(exported.sum(1), 1, atol=1e-5)


@pytest.mark.parametrize("arch", [pytest.param(a, marks=() if a in QUICK else pytest.mark.slow) for a in list_models()])
def test_every_architecture_runs_in_onnx_runtime_as_the_lab_runs_it(arch, tmp_path):
    if arch not in reference_runs(SHIPPED):  # just registered: its warning names it, nothing shipped to export
        return
    run_id = BY_ARCH[arch]
    done = graph.export(run_id, SHIPPED, "onnx", tmp_path / "model.onnx", verify=False)
    assert done.path.exists() and done.bytes == done.path.stat().st_size
    # the whole test set for the small architectures (the property's full-size check); the first
    # 2,000 images for the deep ones, which take seconds a thousand images in ONNX Runtime here
    assert_runs_as_the_lab_does(run_id, SHIPPED, done.path, 10_000 if arch in WHOLE_SET else 2_000)


@pytest.mark.slow  # a second or more
def test_an_ensemble_is_one_graph_that_averages_its_members(trained_runs, tmp_path):
    """Members trained here (their saved probabilities are float32; the shipped runs' are float16,
    whose rounding alone can flip a near-tie of an average)."""
    root = tmp_path / "runs"
    members = [trained_runs.ids["mlp"], trained_runs.ids["lenet"]]
    for run_id in members:
        shutil.copytree(trained_runs.root / run_id, root / run_id)
    ensemble = create_ensemble(members, root=root)
    done = graph.export(ensemble, root, "onnx", tmp_path / "ensemble.onnx", verify=False)
    assert_runs_as_the_lab_does(ensemble, root, done.path)
    # the oracle of the averaging itself: the members' own exported graphs, averaged by hand
    pixels, _, _ = pixels_and_labels()
    alone = [graph.run_exported(graph.export(m, root, "onnx", tmp_path / f"{m}.onnx", verify=False).path, pixels)
             for m in members]
    assert np.abs(graph.run_exported(done.path, pixels) - np.mean(alone, 0)).max() < 1e-5


def test_the_graph_takes_any_batch_size_and_says_what_it_expects(tmp_path):
    import onnx
    import onnxruntime
    done = graph.export(BY_ARCH["lenet"], SHIPPED, "onnx", tmp_path / "m.onnx", verify=False)
    session = onnxruntime.InferenceSession(str(done.path), providers=["CPUExecutionProvider"])
    (given,), (returned,) = session.get_inputs(), session.get_outputs()
    assert (given.name, given.type, given.shape[1:]) == ("pixels", "tensor(float)", [1, 28, 28])
    assert returned.name == "probabilities" and returned.shape[1:] == [10]
    for n in (1, 3, 257):
        assert session.run(None, {"pixels": np.zeros((n, 1, 28, 28), np.float32)})[0].shape == (n, 10)
    model = onnx.load(str(done.path))
    assert any(o.domain in ("", "ai.onnx") and o.version == graph.OPSET for o in model.opset_import)


@pytest.mark.slow  # a second or more
def test_the_card_says_what_the_runs_files_say(tmp_path):
    from statsmodels.stats.proportion import proportion_confint
    run_id = BY_ARCH["lenet"]
    done = graph.export(run_id, SHIPPED, "onnx", tmp_path / "lenet.onnx", verify=True, data_root=require_mnist())
    card = json.loads(done.card_json.read_text())
    run = load_run(run_id, SHIPPED)
    assert card["training"]["config"] == TrainConfig.from_dict(run.config).to_dict()   # every field
    assert all(card["training"]["config"][k] == v for k, v in run.config.items() if k != "format")
    preds = load_predictions(run_id, SHIPPED)
    right = int((preds["predicted"] == preds["labels"]).sum())
    low, high = proportion_confint(right, 10_000, method="wilson")
    assert card["performance"]["test_accuracy"] == right / 100
    assert card["performance"]["test_accuracy_ci95"] == pytest.approx([100 * low, 100 * high], abs=1e-9)
    assert card["verified"]["digits_as_saved"] == 10_000 and card["verified"]["max_probability_difference"] < 1e-4
    assert card["calibration"]["temperature"] == json.loads((SHIPPED / run_id / "calibration.json").read_text())["temperature"]
    assert card["robustness"]["pgd_at_largest_eps"]["epsilon"] == 0.3
    assert card["file"]["opset"] == graph.OPSET and "[0, 1]" in card["file"]["input"]
    text = done.card_md.read_text()
    for needed in ("# Model card", "(N, 1, 28, 28)", "95% interval", "15 of MNIST's test labels", run.config["optimizer"],
                   "Verified in onnxruntime"):
        assert needed in text, needed


def test_torchscript_too(tmp_path):
    run_id = BY_ARCH["lenet"]
    done = graph.export(run_id, SHIPPED, "torchscript", tmp_path / "lenet.pt", verify=False)
    pixels, _, _ = pixels_and_labels()
    found = graph.run_exported(done.path, pixels, "torchscript")
    assert np.array_equal(found.argmax(1), load_predictions(run_id, SHIPPED)["predicted"])


def test_the_dashboards_zip_holds_the_graph_and_both_cards():
    name, data, done = graph.bundle(BY_ARCH["mlp"], SHIPPED, data_root=require_mnist())
    with zipfile.ZipFile(BytesIO(data)) as archive:
        names = sorted(archive.namelist())
        model = archive.read(f"{BY_ARCH['mlp']}.onnx")
    assert name.endswith(".zip") and names == sorted([f"{BY_ARCH['mlp']}.onnx", f"{BY_ARCH['mlp']}.onnx.card.md",
                                                      f"{BY_ARCH['mlp']}.onnx.card.json"])
    import onnxruntime
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    pixels, _, _ = pixels_and_labels()
    assert np.array_equal(session.run(None, {"pixels": pixels[:500]})[0].argmax(1),
                          load_predictions(BY_ARCH["mlp"], SHIPPED)["predicted"][:500])


# --- bad input: one line, nothing left behind -------------------------------------------------------

def one_line_error(args, tmp_path) -> str:
    code, out, err = run_cli("--checkpoints", str(SHIPPED), "export", *args)
    assert code != 0 and out == ""
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == lines[-1:] and "Traceback" not in err, err   # progress lines, then one error line
    return errors[0]


def test_an_unknown_format_is_one_line(tmp_path):
    line = one_line_error([BY_ARCH["mlp"], "--format", "tflite", "-o", str(tmp_path / "m")], tmp_path)
    assert "tflite" in line and "onnx" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["missing/m.onnx", "file/m.onnx"])
def test_an_output_folder_that_does_not_exist_is_one_line(where, tmp_path):
    (tmp_path / "file").write_text("a file, not a folder")
    line = one_line_error([BY_ARCH["mlp"], "-o", str(tmp_path / where)], tmp_path)
    assert "does not exist" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_place_that_cannot_be_written_is_one_line(tmp_path):
    """/proc refuses new files even to root (a read-only folder would not stop root)."""
    line = one_line_error([BY_ARCH["mlp"], "--no-verify", "-o", "/proc/mnist-lab-model.onnx"], tmp_path)
    assert line.startswith("error: cannot write /proc/mnist-lab-model.onnx")
    assert not any(p.name.startswith((".mnist-lab-model", "mnist-lab-model")) for p in Path("/proc").iterdir())


def test_a_run_still_training_and_a_run_without_weights_are_one_line(tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(SHIPPED / BY_ARCH["mlp"], root / BY_ARCH["mlp"])
    (root / BY_ARCH["mlp"] / "reference.json").unlink()
    (root / BY_ARCH["mlp"] / "model.safetensors").unlink()
    code, out, err = run_cli("--checkpoints", str(root), "export", BY_ARCH["mlp"], "-o", str(tmp_path / "m.onnx"))
    assert code != 0 and "no saved weights" in err and err.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in err
    from core.training.loop import prepare_run
    writer = prepare_run(TrainConfig(arch="mlp", device="cpu"), root=root)   # queued, its lock held: in progress
    try:
        code, out, err = run_cli("--checkpoints", str(root), "export", writer.run_id, "-o", str(tmp_path / "m.onnx"))
    finally:
        writer.release()
    assert code != 0 and err.strip().splitlines() == [
        f"error: run {writer.run_id!r} is still queued: export it once it has finished"]
    assert not (tmp_path / "m.onnx").exists() and not list(tmp_path.glob("*.card.*"))


@pytest.mark.slow  # a second or more
def test_the_cli_writes_the_file_and_its_cards_and_verifies_them(tmp_path):
    code, out, err = run_cli("--checkpoints", str(SHIPPED), "--data", str(require_mnist()), "export",
                             BY_ARCH["lenet"], "-o", str(tmp_path / "lenet.onnx"), "--json")
    assert code == 0, err
    found = json.loads(out)
    assert found["card"]["verified"]["digits_as_saved"] == 10_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet.onnx", "lenet.onnx.card.json", "lenet.onnx.card.md"]
    assert found["bytes"] == (tmp_path / "lenet.onnx").stat().st_size


@pytest.mark.slow  # a second or more
def test_evaluate_offers_the_checked_onnx_file_and_its_card(lab_env, trained_runs, tmp_path):
    from tests.test_app import open_page
    root = lab_env(trained_runs.copy_to(tmp_path / "runs"))
    run_id = trained_runs.ids["lenet"]
    at = open_page("evaluate")
    at.selectbox(key="eval_run").set_value(run_id).run()
    at.button(key="eval_export_button").click().run()
    assert not at.exception, [e.value for e in at.exception]
    from dashboard.state import EXPORTS
    ready = next(v for k, v in EXPORTS.items() if k[1] == run_id)  # the one zip every session is offered
    with zipfile.ZipFile(BytesIO(ready["data"])) as archive:
        card = json.loads(archive.read(f"{run_id}.onnx.card.json"))
        model = archive.read(f"{run_id}.onnx")
    assert card["model"]["run_id"] == run_id and card["verified"]["digits_as_saved"] == 10_000
    import onnxruntime
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    pixels, _, _ = pixels_and_labels()
    assert np.array_equal(session.run(None, {"pixels": pixels})[0].argmax(1), load_predictions(run_id, root)["predicted"])
    assert any("10,000 of 10,000 test digits" in c.value for c in at.caption)
    at.run()   # a second visit keeps the file ready: no export again
    assert not [b for b in at.button if b.key == "eval_export_button"]
    assert [b.label for b in at.get("download_button")] == ["Download as ONNX (with its model card)"]
    assert not list(root.rglob("*.onnx")) and not list(root.rglob("*.tmp"))   # nothing left in the runs folder
