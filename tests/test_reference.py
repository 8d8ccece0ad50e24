"""The reference runs shipped in checkpoints/ (issue 12): they cannot rot.

Every shipped model is rebuilt from its committed weights on the CPU and must predict exactly
the digits and the test accuracy its own files record; each must still read as a current,
warning-free run; each table in docs/tables/ must be exactly what its script prints from them.
"""
from __future__ import annotations

import io
import json
import shutil
import subprocess
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest
from PIL import Image

from core.store import reference
from core.config import RECIPE_FIELDS, TrainConfig
from core.models import list_models
from core.store.folder import FORMAT_VERSION, HISTORY_COLUMNS, PREDICTIONS, REFERENCE, TRAIN_STATE, RunError
from core.store.runs import delete_run, list_runs, load_model, load_predictions, load_run, rename_run
from scripts import recipe_table
from core.analysis.inside import NEIGHBOURS
from tests.helpers import REPO, reference_runs, require_mnist, train_tiny

SHIPPED = REPO / "checkpoints"
IDS = reference.reference_ids(SHIPPED)
MAX_BYTES = 17_000_000  # 15 MB until the detectors' two-layer heads (+1.3 MB; docs/not-a-digit.md), then the
# units' top test images (+0.6 MB; docs/inside.md)
TABLES = REPO / "docs" / "tables"  # the tables the scripts print from the shipped runs, included in the docs


def test_every_default_recipe_has_a_reference_run_and_the_set_is_small():
    """One per registered architecture, and none of another; one just registered, whose run has
    not shipped yet, is named in a warning ("no reference run for: X"), not failed."""
    archs = {load_run(i, SHIPPED).arch for i in IDS}
    assert archs <= set(list_models())
    assert set(reference_runs()) == archs
    size = sum(f.stat().st_size for i in IDS for f in (SHIPPED / i).rglob("*")
               if f.is_file() and f.name != NEIGHBOURS)  # the training features: kept locally, never shipped
    assert size < MAX_BYTES, f"the reference runs take {size:,} bytes"


@pytest.mark.parametrize("run_id", IDS)
@pytest.mark.slow
def test_a_reference_model_predicts_exactly_what_its_run_recorded(run_id):
    verdict = reference.verify(run_id, SHIPPED, require_mnist())
    assert verdict.differing == 0, f"{verdict.differing} test images predicted differently"
    assert verdict.accuracy == verdict.recorded_accuracy
    # the recorded figure is the recorded predictions' own count (an independent oracle)
    preds = load_predictions(run_id, SHIPPED)
    assert len(preds["labels"]) == 10_000
    assert (preds["predicted"] == preds["labels"]).sum() * 100 / 10_000 == verdict.recorded_accuracy


@pytest.mark.parametrize("run_id", IDS)
def test_a_reference_run_reads_as_a_current_finished_run(run_id):
    run = load_run(run_id, SHIPPED)
    assert run.warnings == [] and run.status == "finished" and run.reference
    assert run.config["format"] == FORMAT_VERSION     # written by today's format: retrain or migrate it
    config = TrainConfig.from_dict(run.config).to_dict()
    saved = {k: run.config[k] for k in config if k in run.config}
    assert {k: config[k] for k in saved} == saved                     # every saved knob reads back as it is
    # a field added since (e.g. `group`) must be optional: absent reads as its default, None
    assert all(config[k] is None and k not in RECIPE_FIELDS for k in config.keys() - saved.keys())
    assert list(run.history.columns) == HISTORY_COLUMNS and len(run.history) == config["epochs"]
    assert run.val_acc is not None and run.test_acc is not None
    assert not (run.path / TRAIN_STATE).exists()      # no optimizer state shipped
    marker = json.loads((run.path / REFERENCE).read_text())
    assert marker["reference"] is True and marker["recipe"] == run.arch
    probs = load_predictions(run_id, SHIPPED)["probabilities"]
    assert probs.dtype == np.float32 and probs.shape == (10_000, 10)   # read back as float32 whatever is stored
    load_model(run_id, SHIPPED)                         # the weights fit today's architecture


def assert_table_file(name: str, generated: str, command: str) -> None:
    """docs/tables/NAME is exactly what `command` prints now: the table, then print's newline."""
    path = TABLES / name
    assert path.is_file() and path.read_text() == generated + "\n", \
        f"docs/tables/{name} is not what the shipped runs give: regenerate it with `{command} > docs/tables/{name}`"


def test_the_accuracy_table_file_is_generated_from_the_reference_runs():
    generated = recipe_table.table(list_runs(SHIPPED))
    assert_table_file("recipes.md", generated, "python -m scripts.recipe_table")
    assert "not measured" not in generated


def test_the_not_a_digit_table_files_are_generated_from_the_reference_runs_detectors():
    from scripts import ood_table
    assert_table_file("not-a-digit-detectors.md", ood_table.table(str(SHIPPED)), "python -m scripts.ood_table")
    archs = [arch for arch, _ in ood_table.rows(str(SHIPPED))]
    assert archs == list(reference_runs())  # every recipe's reference run measured
    assert_table_file("not-a-digit.md", ood_table.default_table(str(SHIPPED)), "python -m scripts.ood_table --default")


def test_the_default_detector_is_the_one_that_flags_most_of_the_selection_half():
    """Chosen on the selection half of the not-a-digit set, over the convolutional recipes; the
    held-out half, on which figures are reported, chose nothing."""
    from core.notadigit import detector as ood
    from scripts import ood_table
    means = ood_table.choice(str(SHIPPED))
    assert set(means) == set(ood.DETECTORS) and next(iter(means)) == ood.DEFAULT, means


@pytest.mark.parametrize("run_id", IDS)
def test_every_reference_run_ships_a_current_not_a_digit_detector(run_id):
    from core.notadigit import detector as ood
    kept, damage = ood.read_kept(run_id, SHIPPED)
    assert damage is None and kept is not None, f"no current detector: run `python -m core ood {run_id} --refit --evaluate`"
    assert kept.name == ood.DEFAULT and kept.fitted_on["accept"] == ood.ACCEPT
    assert kept.fitted_on["validation_images"] == load_run(run_id, SHIPPED).config["val_size"]
    from core.notadigit import exposure  # fitted on today's exposure images: as many as are drawn now
    assert kept.fitted_on["exposure_images"] == exposure.count() + 2 * ood.INVERTED, \
        f"fitted on other exposure images: run `python -m core ood {run_id} --refit --evaluate`"
    if load_run(run_id, SHIPPED).config.get("sweep"):
        return  # the sweep's runs are not measured: their detectors keep the head they were fitted by (docs/not-a-digit.md)
    from core.notadigit import head as oodhead  # and by today's head: its members' layer widths, read off the kept weights
    widths = [[kept.state[f"head{m}_w{d}"].shape[1] for d in range(oodhead.depths(kept.state, m))]
              for m in range(oodhead.members(kept.state))]
    assert widths == [[*oodhead.HIDDEN, 1]] * oodhead.MEMBERS, \
        f"fitted by another head: run `python -m core ood {run_id} --refit --evaluate`"


def test_the_shipped_robustness_reports_are_current_and_the_table_is_generated_from_them():
    """Oracle: each report's clean accuracy is the run's own saved test accuracy, measured again.
    (It asks for at least mlp, mlp_ln and lenet, the first reports shipped; every recipe's run ships
    one now: docs/robustness.md.)"""
    from scripts import robustness_table
    found = robustness_table.rows(str(SHIPPED))
    assert {"mlp", "mlp_ln", "lenet"} <= {arch for arch, _ in found}
    for arch, report in found:
        run = next(load_run(i, SHIPPED) for i in IDS if load_run(i, SHIPPED).arch == arch
                   and not load_run(i, SHIPPED).config.get("sweep"))
        assert report["clean_accuracy"] == pytest.approx(run.test_acc, abs=0.011)
        assert {r["corruption"] for r in report["corruptions"]} and report["attacks"][-1]["steps"] == 50
    assert_table_file("robustness.md", robustness_table.table(str(SHIPPED)), "python -m scripts.robustness_table")


def test_git_tracks_the_reference_runs_and_ignores_a_users_own():
    if not (REPO / ".git").exists():
        pytest.fail("the repository's .git is needed to check what git ignores")

    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO).returncode == 0
    for run_id in IDS:
        assert not ignored(f"checkpoints/{run_id}/model.safetensors"), run_id
    assert ignored("checkpoints/20990101-000000-lenet-mine/model.safetensors")
    assert ignored("checkpoints/20990101-000000-lenet-reference/model.safetensors")  # not one of ours


@pytest.mark.parametrize("run_id", IDS)
def test_every_reference_run_ships_its_calibration_fitted_on_its_validation_split(run_id):
    """Oracle: the kept ECE is that of the saved test probabilities, binned here (15 bins)."""
    from core.analysis import calibration
    kept = calibration.cached(run_id, SHIPPED)
    assert kept is not None, f"no current calibration: run `python -m core calibration {run_id}` and commit it"
    run = load_run(run_id, SHIPPED)
    assert kept.fitted_on["split"] == "validation" and kept.fitted_on["images"] == run.config["val_size"]
    saved = load_predictions(run_id, SHIPPED)
    probs, labels = saved["probabilities"].astype(np.float64), saved["labels"]
    confidence, hit = probs.max(1), probs.argmax(1) == labels
    edges = np.linspace(0, 1, 16)
    ece = sum(((confidence > lo) & (confidence <= hi)).mean()
              * abs(confidence[(confidence > lo) & (confidence <= hi)].mean() - hit[(confidence > lo) & (confidence <= hi)].mean())
              for lo, hi in zip(edges[:-1], edges[1:]) if ((confidence > lo) & (confidence <= hi)).any())
    assert kept.ece == pytest.approx(ece, abs=1e-6)


@pytest.mark.parametrize("run_id", [i for i in IDS if not load_run(i, SHIPPED).config.get("sweep")])
def test_a_recipes_reference_run_ships_the_embedding_map_of_its_weights(run_id):
    from core.analysis.embedding import cached
    from core.store.folder import embedding_file as file_name
    emb = cached(run_id, "umap", SHIPPED)
    assert emb is not None, "no current UMAP map: run `python -m core embedding RUN` and commit it"
    preds = load_predictions(run_id, SHIPPED)
    assert emb.xy.shape == (10_000, 2) and np.isfinite(emb.xy).all()
    assert np.array_equal(emb.labels, preds["labels"]) and np.array_equal(emb.predicted, preds["predicted"])
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", f"checkpoints/{run_id}/{file_name('umap')}"],
                             cwd=REPO, capture_output=True)
    assert tracked.returncode == 0, "the map is not committed"
    ignored = subprocess.run(["git", "check-ignore", "-q", f"checkpoints/{run_id}/{file_name('tsne')}"], cwd=REPO)
    assert ignored.returncode == 0, "a map a user computes in a reference run's folder is not ignored"


@pytest.mark.slow
def test_cli_lists_the_reference_runs_and_predicts_with_each(tmp_path):
    from core.cli import main
    from core.data.mnist import load_mnist
    image = load_mnist(require_mnist()).test_images[0].numpy()   # a 7
    Image.fromarray(image).save(tmp_path / "seven.png")
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        assert main(["--checkpoints", str(SHIPPED), "runs"]) == 0
    assert all(i in out.getvalue() for i in IDS)
    for run_id in IDS:
        out = io.StringIO()
        with redirect_stdout(out), redirect_stderr(io.StringIO()):
            assert main(["--checkpoints", str(SHIPPED), "predict", run_id, str(tmp_path / "seven.png"), "--json"]) == 0
        assert json.loads(out.getvalue().splitlines()[0])["digit"] == 7, run_id


def test_a_reference_run_cannot_be_deleted_or_renamed(tmp_path):
    run_id = IDS[0]
    shutil.copytree(SHIPPED / run_id, tmp_path / run_id)
    with pytest.raises(RunError, match="reference run"):
        delete_run(run_id, tmp_path)
    with pytest.raises(RunError, match="reference run"):
        rename_run(run_id, "mine now", tmp_path)
    assert load_run(run_id, tmp_path).name == load_run(run_id, SHIPPED).name and (tmp_path / run_id).is_dir()


@pytest.mark.slow
@pytest.mark.usefixtures("quick_head")  # the detector ships and is measured; its quality is the shipped runs' test
def test_ship_compacts_a_run_without_changing_a_predicted_digit_and_verify_catches_tampering(tmp_path):
    run_id = train_tiny(tmp_path, "lenet", epochs=1, train_limit=1000)
    before = load_predictions(run_id, tmp_path)
    size_before = (tmp_path / run_id / PREDICTIONS).stat().st_size
    # float16 is used iff rounding to it changes no image's top digit (a 1-epoch model has near ties)
    half_keeps_digits = (before["probabilities"].astype(np.float16).astype(np.float32).argmax(1)
                         == before["predicted"]).all()
    from scripts.ship_reference import ship  # what ships the reference runs: reference.ship and the map
    marker = ship(run_id, tmp_path, commit="abc", map_method="pca", pad_digits=50)
    after = load_predictions(run_id, tmp_path)
    assert marker["probabilities"] == ("float16" if half_keeps_digits else "float32")
    assert marker["trained_at_commit"] == "abc"
    assert np.array_equal(after["predicted"], before["predicted"]) and np.array_equal(after["labels"], before["labels"])
    assert np.allclose(after["probabilities"], before["probabilities"], atol=1e-3)
    assert (tmp_path / run_id / PREDICTIONS).stat().st_size < size_before * (0.5 if half_keeps_digits else 0.8)
    assert not (tmp_path / run_id / TRAIN_STATE).exists() and reference.reference_ids(tmp_path) == [run_id]
    from core.analysis.embedding import cached
    assert cached(run_id, "pca", tmp_path) is not None  # its embedding map ships with it
    from core.analysis import calibration
    assert calibration.cached(run_id, tmp_path) is not None  # and its calibration
    from core.notadigit import detector as ood
    kept, _ = ood.read_kept(run_id, tmp_path)  # and its not-a-digit detector, measured
    assert kept.name == ood.DEFAULT and set(kept.evaluation["detectors"]) == set(ood.DETECTORS)
    assert kept.evaluation["detectors"][ood.DEFAULT]["threshold"] == kept.threshold  # the kept fit, measured
    from core.analysis import inside
    assert inside.cached_units(run_id, tmp_path)[0] is not None  # and its units' top images (Inside the network)
    assert reference.verify(run_id, tmp_path, require_mnist()).ok
    # one recorded digit changed, alone: the file contradicts itself and is refused as it is read
    from safetensors.torch import load_file, save_file
    tensors = load_file(str(tmp_path / run_id / PREDICTIONS))
    digit = int(tensors["predicted"][0])
    tensors["predicted"][0] = (digit + 1) % 10
    save_file(tensors, str(tmp_path / run_id / PREDICTIONS))
    with pytest.raises(RunError, match="the predicted digit is not the most probable one for 1 test image"):
        reference.verify(run_id, tmp_path, require_mnist())
    # ...and with its probabilities, consistently: only predicting again can tell, and verification does
    row = tensors["probabilities"][0].clone()
    tensors["probabilities"][0] = row.roll(1)  # the most probable digit moves to digit + 1
    save_file(tensors, str(tmp_path / run_id / PREDICTIONS))
    verdict = reference.verify(run_id, tmp_path, require_mnist())
    assert verdict.differing == 1 and not verdict.ok


def test_only_a_finished_run_can_be_shipped(tmp_path):
    run_id = train_tiny(tmp_path, "mlp", epochs=1, train_limit=500)
    status = tmp_path / run_id / "status.json"
    status.write_text(json.dumps({**json.loads(status.read_text()), "status": "failed"}))
    with pytest.raises(RunError, match="only a finished run"):
        reference.ship(run_id, tmp_path)
    assert not (tmp_path / run_id / REFERENCE).exists()


def test_the_tables_and_pickers_mark_reference_runs(tmp_path):
    from core.store import tables
    from dashboard.widgets import run_label
    shutil.copytree(SHIPPED / IDS[0], tmp_path / IDS[0])
    own = train_tiny(tmp_path, "mlp", epochs=1, train_limit=500)
    runs = {r.run_id: r for r in (load_run(i, tmp_path) for i in (IDS[0], own))}
    table = tables.run_table(runs.values()).set_index("run_id")
    assert table.loc[IDS[0], "reference"] and not table.loc[own, "reference"]
    assert run_label(runs[IDS[0]]).startswith("reference · ")
    assert not run_label(runs[own]).startswith("reference")

