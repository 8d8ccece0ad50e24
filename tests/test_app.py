"""Page tests with streamlit.testing.v1.AppTest: every page with no runs, with real tiny runs,
and with a damaged run folder beside them."""
from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
TITLES = {"train": "Train", "compare": "Compare", "evaluate": "Evaluate", "mistakes": "Mistakes",
          "label_issues": "Label issues", "embedding": "Embedding map", "robustness": "Robustness", "sketch": "Sketch",
          "inside": "Inside the network", "data": "Data", "sweep": "Sweep",
          "search": "Search"}  # every page of dashboard/app.py (test_every_page_is_covered checks)
PAGES = tuple(TITLES)
TIMEOUT = 60  # s per script run: generous, the CI machine shares 2 cores with training jobs


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()  # "/" is the first page
    at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    """Everything a user reads on the page, as one string."""
    parts = []
    for kind in ("title", "subheader", "markdown", "caption", "info", "warning", "error", "success"):
        parts += [str(element.value) for element in getattr(at, kind)]
    parts += [f"{m.label} {m.value}" for m in at.metric]
    return "\n".join(parts)


def frame_with(at: AppTest, column: str):
    frames = [d.value for d in at.dataframe if column in d.value.columns]
    assert frames, f"no table with a {column!r} column"
    return frames[0]


# --- no runs yet --------------------------------------------------------------------------

NEXT_STEP = {
    "train": "No runs yet",
    "compare": "No runs to compare yet",
    "evaluate": "No finished run to evaluate yet",
    "mistakes": "No finished run yet",
    "label_issues": "No finished run with saved test predictions yet",
    "embedding": "No finished run yet",
    "robustness": "No finished run yet",
    "sketch": "No trained model yet",
    "inside": "No trained model yet",
    "sweep": "No sweep yet",
    "search": "No study yet",
}


def test_every_page_is_covered():
    """These tests' page list is the app's: a page added to the app is tested here too."""
    from dashboard.app import PAGES as routed  # the router's own list (importing it runs nothing)
    assert {(Path(path).stem, title) for path, title, _, _ in routed} == set(TITLES.items())


@pytest.mark.parametrize("page", PAGES)
def test_page_without_runs_says_what_to_do(lab_env, page):
    at = open_page(page)
    assert at.title[0].value == TITLES[page]
    if page == "data":  # needs MNIST, not runs
        assert frame_with(at, "validation").loc["total"].tolist() == [55_000, 5_000, 10_000]
    else:
        assert NEXT_STEP[page] in texts(at)


def test_missing_mnist_offers_fetch(lab_env, monkeypatch, tmp_path):
    monkeypatch.setenv("MNIST_LAB_DATA", str(tmp_path / "no-data"))
    at = open_page("data")
    assert "MNIST is not on this machine yet" in texts(at)
    assert [b.label for b in at.button] == ["Fetch MNIST"]


# --- with real runs -------------------------------------------------------------------------

@pytest.mark.slow
def test_train_shows_newest_run_status_and_test_accuracy(lab_env, trained_runs):
    from core.store.runs import load_run
    lab_env(trained_runs.root)
    newest = load_run(trained_runs.ids["lenet"], trained_runs.root)
    at = open_page("train")
    shown = texts(at)
    assert newest.name in shown
    assert "finished" in shown
    assert f"Test accuracy {newest.test_acc:.2f}%" in shown
    assert not [b for b in at.button if b.label == "Cancel"]  # nothing is active


def test_train_bad_value_shows_config_error(lab_env):
    at = open_page("train")
    at.number_input(key="train_lr").set_value(0.0)
    next(b for b in at.button if b.label == "Start training").click().run()
    assert [e.value for e in at.error] == ["lr must be > 0 and <= 10, got 0.0"]
    assert not any(lab_env.empty.iterdir())  # no run was created


@pytest.mark.slow
def test_train_start_launches_a_real_job_with_the_form_values(lab_env):
    import time
    from core.store.runs import list_runs
    at = open_page("train")
    at.selectbox(key="train_arch").set_value("mlp").run()
    assert at.number_input(key="train_epochs").value == 20  # the mlp recipe filled the form
    at.number_input(key="train_epochs").set_value(2)
    at.number_input(key="train_limit").set_value(500)
    at.text_input(key="train_name").set_value("from the test")
    next(b for b in at.button if b.label == "Start training").click().run()
    assert not at.exception and not at.error
    (run,) = list_runs(lab_env.empty)
    assert (run.arch, run.config["epochs"], run.config["train_limit"], run.name, run.config["lr"]) == \
        ("mlp", 2, 500, "from the test", 0.1)
    assert run.run_id in texts(at) or "from the test" in texts(at)
    deadline = time.monotonic() + 120  # its own process trains it, whatever the page does
    while list_runs(lab_env.empty)[0].status != "finished" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert list_runs(lab_env.empty)[0].status == "finished"
    at.run()
    assert "Run **finished** with" in texts(at)


def test_compare_lists_runs_with_test_accuracy(lab_env, trained_runs):
    from core.store.runs import load_run
    lab_env(trained_runs.root)
    at = open_page("compare")
    table = frame_with(at, "test_acc").set_index("name")
    for run_id in trained_runs.ids.values():
        run = load_run(run_id, trained_runs.root)
        assert table.loc[run.name, "test_acc"] == pytest.approx(run.test_acc)
        assert table.loc[run.name, "arch"] == run.arch
    assert len(at.get("vega_lite_chart")) == 2  # the curves: loss and accuracy (two runs: no p-value grid)


@pytest.mark.slow  # a second or more
def test_compare_rename_and_delete(lab_env, trained_runs, tmp_path):
    from core.store.runs import list_run_ids, load_run
    root = lab_env(trained_runs.copy_to(tmp_path / "runs"))
    mlp = trained_runs.ids["mlp"]
    at = open_page("compare")
    at.selectbox(key="compare_manage_run").set_value(mlp).run()
    at.text_input(key=f"compare_name_{mlp}").set_value("renamed mlp")
    next(b for b in at.button if b.label == "Rename").click().run()
    assert load_run(mlp, root).name == "renamed mlp"
    next(b for b in at.button if b.label == "Delete…").click().run()
    assert mlp in list_run_ids(root)  # not before the confirmation
    next(b for b in at.button if b.label == "Yes, delete it").click().run()
    assert not at.exception
    assert list_run_ids(root) == [trained_runs.ids["lenet"]]


def test_evaluate_confusion_matrix_and_cell_images(lab_env, trained_runs):
    from core.store.runs import load_predictions
    lab_env(trained_runs.root)
    at = open_page("evaluate")
    at.selectbox(key="eval_run").set_value(trained_runs.ids["mlp"]).run()
    matrix = frame_with(at, "9")
    assert matrix.shape == (10, 10) and int(matrix.to_numpy().sum()) == 10_000
    preds = load_predictions(trained_runs.ids["mlp"], trained_runs.root)
    assert np.array_equal(matrix.to_numpy(), np.bincount(preds["labels"] * 10 + preds["predicted"],
                                                         minlength=100).reshape(10, 10))
    scores = frame_with(at, "precision")
    assert scores["support"].sum() == 10_000
    at.selectbox(key="eval_true").set_value(4)
    at.selectbox(key="eval_predicted").set_value(9).run()
    count = int(((preds["labels"] == 4) & (preds["predicted"] == 9)).sum())
    assert f"**{count:,}** test images of a **4** predicted as **9**" in texts(at)


def test_evaluate_opens_the_run_in_the_link(lab_env, trained_runs):
    """Sweep's "Open in Evaluate" links to evaluate?run=<id>; the page follows it, and the URL
    follows the picker."""
    lab_env(trained_runs.root)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.query_params["run"] = trained_runs.ids["lenet"]
    at.switch_page("views/evaluate.py").run()
    assert at.selectbox(key="eval_run").value == trained_runs.ids["lenet"]
    at.selectbox(key="eval_run").set_value(trained_runs.ids["mlp"]).run()
    assert at.query_params["run"] == trained_runs.ids["mlp"]


def test_mistakes_counts_and_disagreements(lab_env, trained_runs):
    from core.analysis.predictions import disagreements
    from core.store.runs import load_predictions
    lab_env(trained_runs.root)
    at = open_page("mistakes")
    at.selectbox(key="mis_run").set_value(trained_runs.ids["mlp"]).run()
    preds = load_predictions(trained_runs.ids["mlp"], trained_runs.root)
    wrong = int((preds["labels"] != preds["predicted"]).sum())
    assert f"Mistakes {wrong:,}" in texts(at)
    other = load_predictions(trained_runs.ids["lenet"], trained_runs.root)
    a_only, b_only = disagreements(preds, other)
    labels = [t.label for t in at.tabs]
    assert labels[0].endswith(f"({len(a_only):,})") and labels[1].endswith(f"({len(b_only):,})")
    at.selectbox(key="mis_true").set_value(7).run()
    expected = int(((preds["labels"] != preds["predicted"]) & (preds["labels"] == 7)).sum())
    assert f"{expected:,} mistakes match the filter" in texts(at)
    # the two confusion matrices and their difference: one chart of three, and the mistake counts
    assert len(at.get("vega_lite_chart")) == 1
    wrong_b = int((other["labels"] != other["predicted"]).sum())
    caption = next(line for line in texts(at).splitlines() if line.startswith("Mistakes: "))
    assert caption.startswith(f"Mistakes: {wrong:,} for") and f", {wrong_b:,} for" in caption
    assert caption.endswith(f"({wrong_b - wrong:+,}).")


def test_sketch_empty_drawing_models_and_handwriting_scores(lab_env, trained_runs, mnist_root):
    from core.data import handwriting
    from core.data.mnist import load_mnist
    from core.analysis.predict import Predictor
    lab_env(trained_runs.root)
    mnist = load_mnist(mnist_root)
    for index in range(5):  # five real test digits stand in for a person's drawings
        handwriting.add_drawing(mnist.test_images[index].numpy(), int(mnist.test_labels[index]))
    at = open_page("sketch")
    assert "Draw a digit" in texts(at)
    assert sorted(frame_with(at, "test accuracy")["arch"]) == ["lenet", "mlp"]
    scores = frame_with(at, "accuracy").set_index("arch")
    hw = handwriting.load_set()
    for arch, run_id in trained_runs.ids.items():
        expected = handwriting.score(Predictor.from_run(run_id, trained_runs.root).probabilities(hw.unit_images),
                                     hw.labels)
        assert scores.loc[arch, "correct"] == expected["correct"] and scores.loc[arch, "total"] == 5
    save = next(b for b in at.button if b.label == "Save to my handwriting")
    assert save.disabled  # nothing drawn


@pytest.fixture(scope="module")
def every_arch_runs(trained_runs, tmp_path_factory) -> Path:
    """A runs folder with one finished run of every registered architecture: the two tiny real
    runs, and for each other architecture a copy of the mlp run holding that architecture's
    freshly initialised weights (seeded), which the Sketch page loads and asks like any other."""
    import shutil

    import torch

    from core.models import create_model, list_models
    from core.fsio import atomic_write_bytes, atomic_write_json
    from core.store.folder import FORMAT_VERSION, WEIGHTS, read_json
    from core.store.writer import tensors_bytes
    root = tmp_path_factory.mktemp("every-arch-runs")
    for arch, run_id in trained_runs.ids.items():
        shutil.copytree(trained_runs.root / run_id, root / run_id)
    source = trained_runs.root / trained_runs.ids["mlp"]
    for i, arch in enumerate(a for a in list_models() if a not in trained_runs.ids):
        dest = root / f"20260101-{i:06d}-{arch.replace('_', '-')}-copy"
        shutil.copytree(source, dest, ignore=shutil.ignore_patterns("lock", "predictions.safetensors"))
        atomic_write_json(dest / "config.json", {**read_json(dest / "config.json"), "arch": arch,
                                                 "name": f"fresh {arch}"})
        torch.manual_seed(i)
        atomic_write_bytes(dest / WEIGHTS, tensors_bytes(create_model(arch).state_dict(),
                                                         metadata={"arch": arch, "format": str(FORMAT_VERSION)}))
    return root


def pad_drawing(image28: np.ndarray) -> str:
    """What the Sketch pad sends: a PNG data URL of the 280x280 canvas, white ink on black."""
    import base64
    import io

    from PIL import Image
    grey = np.kron(np.asarray(image28, dtype=np.uint8), np.ones((10, 10), dtype=np.uint8))
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 255)])
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def cards(at: AppTest) -> dict[str, tuple[int, float]]:
    """The Sketch page's prediction rows: model name -> (predicted digit, percent sure)."""
    import re
    found = {}
    for element in at.get("html"):
        for digit, name, sure in re.findall(r">Predicted: (\d)</h3>(?:<span class=\"sk-flag\"[^>]*>[^<]*</span>)?"
                                            r"</div><p>(.*?) · [^·]*? · ([\d.]+)% sure</p>", element.proto.body):
            found[name] = (int(digit), float(sure))
    return found


@pytest.mark.slow
def test_sketch_asks_one_model_of_each_architecture(lab_env, every_arch_runs, drawn, mnist_root):
    """Every architecture is selected by default; a drawing gets a card from each model, whose
    prediction and confidence are the model's own on the same preprocessed image; saving it
    reaches the handwriting section outside the fragment."""
    from core.data import handwriting
    from core.data.mnist import load_mnist
    from core.models import list_models
    from core.analysis.predict import Predictor
    from core.data.images import to_mnist
    from core.store.runs import list_runs
    from dashboard.views.sketch import decode_drawing
    lab_env(every_arch_runs)
    runs = {r.name: r for r in list_runs(every_arch_runs)}
    assert sorted(run.arch for run in runs.values()) == sorted(list_models())   # one of each, robust and speedrun995 included

    at = open_page("sketch")  # nothing drawn yet
    assert len(at.multiselect(key="sketch_models").value) == len(list_models())
    assert sorted(frame_with(at, "test accuracy")["arch"]) == sorted(list_models())
    assert cards(at) == {}

    mnist = load_mnist(mnist_root)
    for index in (0, 1):  # a 7, then a 2: the second drawing replaces every card
        drawn.value = pad_drawing(mnist.test_images[index].numpy())
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        assert "What the models see" in texts(at)
        digit = to_mnist(decode_drawing(drawn.value))
        expected = {}
        for name, run in runs.items():
            probs = Predictor.from_run(run.run_id, every_arch_runs).probabilities(digit)[0]
            expected[name] = (int(probs.argmax()), round(100 * float(probs.max()), 1))
        assert cards(at) == expected

    at.selectbox(key="sketch_label").set_value(2).run()
    next(b for b in at.button if b.label == "Save to my handwriting").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Saved as a 2" in s.value for s in at.success)
    assert handwriting.load_set().labels.tolist() == [2]
    assert "1 drawing saved" in texts(at)  # the handwriting section ran again too
    scores = frame_with(at, "accuracy")
    assert len(scores) == len(list_models()) and scores["total"].tolist() == [1] * len(list_models())


def test_data_csv_import_shows_rows_or_errors(lab_env):
    at = open_page("data")
    header = "label," + ",".join(f"pixel{i}" for i in range(784))
    good = "\n".join([header] + [f"{d}," + ",".join(["0"] * 300 + ["255"] * 184 + ["0"] * 300)
                                 for d in (3, 1, 4)]) + "\n"
    at.file_uploader(key="data_csv").upload("digits.csv", good.encode(), "text/csv")
    at.run()
    assert "**digits.csv**: 3 digits, with labels." in texts(at)
    bad = header + "\n7," + ",".join(["0"] * 783 + ["300"]) + "\n"
    at.file_uploader(key="data_csv").upload("bad.csv", bad.encode(), "text/csv")
    at.run()
    (error,) = at.error
    assert "bad.csv" in error.value and "pixel783" in error.value


def test_sweep_shows_the_grid_of_a_prepared_sweep(lab_env, tmp_path):
    from core.config import TrainConfig
    from core.training.grids import prepare_sweep
    root = lab_env(tmp_path / "sweep-runs")
    sweep_id, writers = prepare_sweep(TrainConfig(arch="mlp", epochs=1, train_limit=100),
                                      [0.01, 0.1], [32, 64], root=root)  # queued while their locks are held
    run_ids = [w.run_id for w in writers]
    at = open_page("sweep")
    assert at.selectbox(key="sweep_pick").value == sweep_id
    grid = frame_with(at, "64")
    assert list(grid.columns) == ["32", "64"] and list(grid.index) == ["0.01", "0.1"]
    assert "4 queued" in texts(at)
    assert len(at.get("vega_lite_chart")) == 1  # the heatmap
    assert at.selectbox(key="sweep_cell").value in run_ids


# --- damaged run folders ---------------------------------------------------------------------

@pytest.fixture
def damaged_runs(lab_env, trained_runs, tmp_path):
    """The tiny runs plus one folder with a garbage config.json and a truncated history.csv,
    and one 'finished' run whose predictions file is garbage (newest, so pages pick it)."""
    root = lab_env(trained_runs.copy_to(tmp_path / "runs"))
    broken = root / "20990101-000000-broken"
    broken.mkdir()
    (broken / "config.json").write_text("{ this is not json")
    (broken / "status.json").write_text(json.dumps({"status": "finished", "created": "2099-01-01T00:00:00"}))
    (broken / "history.csv").write_text("epoch,train_loss,train_acc,val_lo")
    torn = root / "20990101-000001-mlp-torn"
    source = root / trained_runs.ids["mlp"]
    for name in ("config.json", "status.json", "history.csv", "metrics.json", "model.safetensors"):
        (torn / name).parent.mkdir(exist_ok=True)
        (torn / name).write_bytes((source / name).read_bytes())
    (torn / "predictions.safetensors").write_bytes(b"\x00garbage")
    return root


@pytest.mark.parametrize("page", PAGES)
def test_damaged_run_warns_and_page_renders(damaged_runs, page):
    at = open_page(page)
    warnings = "\n".join(w.value for w in at.warning)
    if page not in ("data", "search"):  # the Data page reads no runs; Search reads its studies, not the run list
        assert "20990101-000000-broken" in warnings
    if page in ("evaluate", "mistakes"):
        assert "predictions" in warnings and "unreadable" in warnings


def test_train_shows_a_running_job_live_and_cancels_it(lab_env, tmp_path):
    """A run whose lock a live process holds (a stand-in `sleep`, handed the lock the way
    core.training.jobs hands it to a trainer) is shown live; Cancel signals that process."""
    from core.config import TrainConfig
    from core.store.writer import RunWriter
    root = lab_env(tmp_path / "live")
    writer = RunWriter.create(TrainConfig(arch="mlp", epochs=5, name="live one").to_dict(), root=root)
    job = subprocess.Popen(["sleep", "60"], pass_fds=(writer.lock.fileno(),))
    writer.lock.set_owner(job.pid)
    writer.release()  # the sleep's inherited descriptor holds the lock now
    try:
        writer.start()
        writer.write_history([{"epoch": 1, "train_loss": 0.5, "train_acc": 85.0, "val_loss": 0.4,
                               "val_acc": 88.0, "lr": 0.1, "seconds": 10.0}])
        writer.write_progress(epoch=2, epochs=5, step=50, steps=100, train_loss=0.3, train_acc=90.0,
                              epoch_seconds=5.0)
        at = open_page("train")
        bars = [p.proto.text for p in at.get("progress")]
        # half of epoch 2 left plus 3 epochs, at 10 s each
        assert bars and all(text == "Epoch 2/5 · step 50/100 · about 35s left" for text in bars)
        assert "running" in texts(at) and "live one" in texts(at)
        cancel = [b for b in at.button if b.label == "Cancel"]
        assert len(cancel) == 2  # in the latest-run card and in the queue
        cancel[0].click().run()
        assert not at.exception
        assert job.wait(timeout=10) == -signal.SIGTERM
    finally:
        job.kill()
        job.wait()


def test_train_start_with_an_unusable_checkpoints_folder_says_so(lab_env, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the runs folder should be")
    lab_env(blocker)
    at = open_page("train")
    at.selectbox(key="train_arch").set_value("mlp").run()
    next(b for b in at.button if b.label == "Start training").click().run()
    assert not at.exception
    errors = sorted(e.value for e in at.error)
    assert len(errors) == 2 and errors[0].startswith("Could not start the run")
    assert errors[1].startswith(f"the checkpoints path {blocker} is a file, not a folder")  # the page's own notice
    assert blocker.read_text() == "a file where the runs folder should be"  # nothing lost


@pytest.mark.parametrize("page", [p for p in PAGES if p != "data"])
def test_pages_render_with_a_hundred_runs(lab_env, trained_runs, tmp_path_factory, page):
    import shutil
    root = tmp_path_factory.getbasetemp() / "hundred-runs"
    if not root.exists():
        source = trained_runs.root / trained_runs.ids["mlp"]
        for i in range(100):
            shutil.copytree(source, root / f"20260101-{i:06d}-mlp-copy")
    lab_env(root)
    at = open_page(page)
    assert not at.exception
    if page == "compare":
        assert len(frame_with(at, "test_acc")) == 100


@pytest.mark.slow
def test_a_fresh_clones_lab_shows_the_reference_runs_and_protects_them(lab_env, trained_runs, tmp_path):
    """The shipped checkpoints/ beside a user's own run: every page has something to show,
    the table marks which is which, and only the user's run can be renamed or deleted."""
    import shutil
    from core.store import reference
    from core.store.runs import load_run
    from tests.helpers import REPO
    root = lab_env(trained_runs.copy_to(tmp_path / "runs"))
    shipped = reference.reference_ids(REPO / "checkpoints")
    for run_id in shipped:
        shutil.copytree(REPO / "checkpoints" / run_id, root / run_id)
    at = open_page("compare")
    table = frame_with(at, "reference").set_index("run_id")
    assert table.loc[shipped, "reference"].all()
    assert not table.loc[list(trained_runs.ids.values()), "reference"].any()
    picker = at.selectbox(key="compare_manage_run")
    assert len(picker.options) == len(trained_runs.ids)   # only the user's own runs
    assert not any(o.startswith("reference") for o in picker.options)
    for page in ("evaluate", "mistakes", "sweep"):
        assert not open_page(page).exception, page
    sketch = open_page("sketch")
    chosen = sketch.multiselect(key="sketch_models").value
    assert {load_run(i, root).arch for i in chosen} == {load_run(i, root).arch for i in shipped}
    assert all(load_run(i, root).reference for i in chosen)  # the best of each is the shipped one


def test_label_issues_page_ranks_with_the_reference_runs_and_marks_the_confirmed(lab_env, tmp_path, monkeypatch):
    import shutil
    from core.analysis import label_issues
    from core.store import reference
    from tests.helpers import REPO
    root = lab_env(tmp_path / "runs")
    for run_id in reference.reference_ids(REPO / "checkpoints"):
        shutil.copytree(REPO / "checkpoints" / run_id, root / run_id)
    at = open_page("label_issues")
    assert set(at.multiselect(key="li_runs").value) == set(label_issues.default_runs(root))
    ranking = label_issues.rank(label_issues.default_runs(root), root)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Confirmed label errors in the top 30"] == f"{ranking.confirmed_in_top(30)} of 15"
    assert metrics["… in the top 100"] == f"{ranking.confirmed_in_top(100)} of 15"
    assert frame_with(at, "suggested")["index"].tolist() == ranking.top(60)["index"].tolist()
    reads = []  # a rerun (another toggle) reads no predictions again: nothing changed on disk
    real_load = label_issues.load_predictions
    monkeypatch.setattr(label_issues, "load_predictions", lambda run_id, root=None: reads.append(run_id)
                        or real_load(run_id, root))
    at.toggle(key="li_confirmed").set_value(True).run()
    assert sorted(frame_with(at, "suggested")["index"]) == sorted(label_issues.confirmed_indices().tolist())
    assert reads == []


def test_accuracy_is_shown_with_and_without_the_confirmed_label_errors(lab_env, trained_runs):
    from core.analysis import label_issues
    lab_env(trained_runs.root)
    run_id = trained_runs.ids["mlp"]
    _, cleaned = label_issues.accuracy_without_confirmed(run_id, trained_runs.root)
    at = open_page("evaluate")
    at.selectbox(key="eval_run").set_value(run_id).run()
    assert {m.label: m.value for m in at.metric}["Clean-label accuracy"] == f"{cleaned:.2f}%"
    table = frame_with(open_page("compare"), "test_acc_clean").set_index("run_id")
    assert table.loc[run_id, "test_acc_clean"] == pytest.approx(cleaned)
