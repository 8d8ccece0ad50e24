"""Issue 19's fault corpus: the analysis features (label issues, ensembles, embedding maps, seed
groups, predict on new run kinds) against bad files and dying processes. Each case asserts the
one-line message a user reads and that nothing else in the store changed."""
from __future__ import annotations

import hashlib
import json
import math
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
from safetensors.numpy import save as save_numpy
from safetensors.torch import load_file

from core.analysis import label_issues
from core.store.folder import PREDICTIONS, WEIGHTS, RunError, embedding_file
from core.store.runs import list_run_ids, load_model, load_predictions, load_run
from tests.helpers import REPO, require_mnist, run_cli

SHIPPED = REPO / "checkpoints"
AS_USER = (["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if os.geteuid() == 0 else [])


def shipped(arch: str) -> str:
    return next(p.name for p in SHIPPED.iterdir() if p.name.endswith(f"-{arch}-reference"))


MLP, LENET, MLP_LN = shipped("mlp"), shipped("lenet"), shipped("mlp-ln")


def store_state(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under `root` (links as their target's text): relative path -> (size, SHA-256)."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                state[rel] = (0, "-> " + os.readlink(path))
            elif not path.is_file():  # a FIFO: reading it would wait for a writer
                state[rel] = (0, "not a regular file")
            else:
                data = path.read_bytes()
                state[rel] = (len(data), hashlib.sha256(data).hexdigest())
    return state


def plain(markdown: str) -> str:
    """What a page's Markdown shows: dashboard.text.md_text's escapes and cuts taken out."""
    import re
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown.replace(":small[]", ""))


def strict_loads(text: str):
    """json.loads that refuses NaN and Infinity, as every strict JSON reader (browsers, jq) does."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def store(tmp_path) -> Path:
    """Copies of three shipped reference runs (mlp, lenet, mlp_ln)."""
    root = tmp_path / "store"
    root.mkdir()
    for run_id in (MLP, LENET, MLP_LN):
        shutil.copytree(SHIPPED / run_id, root / run_id)
    return root


def own_store(store: Path) -> Path:
    """The same runs as a user's own (no reference marker): the default ranking takes them all."""
    for run_id in list_run_ids(store):
        (store / run_id / "reference.json").unlink()
    return store


def damaged_copy(store: Path, source: str, name: str, change) -> str:
    """A copy of run `source` named `name` whose predictions file `change(arrays)` rewrote."""
    shutil.copytree(store / source, store / name)
    arrays = {k: v.numpy() for k, v in load_file(str(store / name / PREDICTIONS)).items()}
    change(arrays)
    (store / name / PREDICTIONS).write_bytes(save_numpy(arrays))
    return name


def _probs(a):
    return a["probabilities"].astype(np.float32)


# name -> (the change made to a copy of mlp's predictions, words of the message)
BAD_PREDICTIONS = {
    "nine-columns": (lambda a: a.update(probabilities=a["probabilities"][:, :9]), "(10000, 9); expected"),
    "no-labels": (lambda a: a.pop("labels"), "lacks labels"),
    "20000-rows": (lambda a: a.update(probabilities=np.concatenate([a["probabilities"]] * 2)),
                   "10,000 labels, 10,000 predicted digits and 20,000 rows"),
    "nan": (lambda a: a.update(probabilities=np.where(np.arange(10) == 3, np.nan, _probs(a))),
            "not all finite numbers (NaN or infinite in 10,000 rows"),
    "infinite": (lambda a: a.update(probabilities=np.concatenate(
        [np.full((1, 10), np.inf, np.float32), _probs(a)[1:]])), "NaN or infinite in 1 rows, the first at test image 0"),
    "negative": (lambda a: a.update(probabilities=_probs(a) * np.where(np.arange(10) == 0, -1, 1)),
                 "negative values"),
    "not-summing-to-1": (lambda a: a.update(probabilities=_probs(a) * 0.5), "do not sum to 1 (test image 0: 0.5"),
    "labels-out-of-range": (lambda a: a.update(labels=a["labels"].astype(np.int64) + 5), "labels outside 0..9"),
    "float-labels": (lambda a: a.update(labels=a["labels"].astype(np.float32)), "labels are stored as float32"),
}


@pytest.mark.parametrize("case", list(BAD_PREDICTIONS))
def test_a_malformed_predictions_file_is_refused_by_name_everywhere(store, case):
    change, words = BAD_PREDICTIONS[case]
    bad = damaged_copy(store, MLP, f"20990101-000000-mlp-{case}", change)
    before = store_state(store)
    with pytest.raises(RunError, match=f"test predictions of run '{bad}' cannot be used: .*") as caught:
        load_predictions(bad, store)
    assert words in str(caught.value)
    code, out, err = run_cli("--checkpoints", str(store), "label-issues", "--runs", bad)
    assert code == 1 and out == "" and err.count("\n") == 1 and bad in err and words in err, err
    code, out, err = run_cli("--checkpoints", str(store), "label-issues", "--runs", MLP, bad, "--json")
    assert code == 1 and out == "" and err.count("\n") == 1 and bad in err, err
    code, out, err = run_cli("--checkpoints", str(store), "ensemble", LENET, bad)
    assert code == 2 and out == "" and err.count("\n") == 1 and bad in err and words in err, err
    assert store_state(store) == before


@pytest.mark.parametrize("case", ["nine-columns", "no-labels", "nan"])
def test_a_bad_run_picked_by_default_is_left_out_with_a_warning(store, case):
    """In a store of the user's own runs, the default ranking takes every finished run: a bad one
    is skipped by name and the ranking is that of the others (oracle: ranked by name)."""
    root = own_store(store)
    bad = damaged_copy(root, MLP, f"20990101-000000-mlp-{case}", BAD_PREDICTIONS[case][0])
    before = store_state(root)
    code, out, err = run_cli("--checkpoints", str(root), "label-issues", "--json", "--top", "50")
    assert code == 0, err
    assert err.startswith(f"warning: left out run '{bad}': the test predictions of run '{bad}' cannot be used")
    assert err.count("\n") == 1
    expected = label_issues.rank(sorted([MLP, LENET, MLP_LN], reverse=True), root).top(50)
    assert [r["index"] for r in strict_loads(out)] == expected["index"].tolist()
    assert store_state(root) == before


@pytest.mark.slow
def test_the_label_issues_page_warns_about_a_bad_run_and_ranks_the_others(lab_env, store):
    from tests.test_app import open_page
    root = lab_env(own_store(store))
    bad = damaged_copy(root, MLP, "20990101-000000-mlp-nine", BAD_PREDICTIONS["nine-columns"][0])
    before = store_state(root)
    at = open_page("label_issues")
    assert not at.exception, at.exception
    warnings = [plain(w.value) for w in at.warning]
    assert any(bad in w and "(10000, 9)" in w for w in warnings), warnings
    assert bad not in at.multiselect(key="li_runs").value
    assert set(at.multiselect(key="li_runs").value) == {MLP, LENET, MLP_LN}
    at.multiselect(key="li_runs").set_value([MLP, bad]).run()  # asked for by name: refused by name
    errors = [plain(e.value) for e in at.error] + [plain(w.value) for w in at.warning]
    assert not at.exception and any(f"run '{bad}' cannot be used" in e for e in errors), errors
    assert store_state(root) == before


def test_duplicated_and_missing_runs_in_label_issues(store):
    before = store_state(store)
    code, out, err = run_cli("--checkpoints", str(store), "label-issues", "--runs", LENET, LENET, MLP)
    assert code == 2 and err == f"error: run '{LENET}' is listed more than once: each run's probabilities are " \
                                "averaged once\n"
    code, out, err = run_cli("--checkpoints", str(store), "label-issues", "--runs", "nosuch")
    assert code == 1 and err.startswith(f"error: no run 'nosuch' in {store}") and err.count("\n") == 1, err
    assert store_state(store) == before


@pytest.mark.slow
def test_a_predictions_file_that_cannot_be_read_names_the_os_error(store):
    path = store / MLP / PREDICTIONS
    path.chmod(0)
    proc = subprocess.run([*AS_USER, sys.executable, "-m", "core", "--checkpoints", str(store), "label-issues",
                           "--runs", MLP], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "predictions.safetensors is not readable (Permission denied)" in proc.stderr
    assert "No such file" not in proc.stderr


# --- seeds -----------------------------------------------------------------------------------

def test_seeds_torch_would_fold_together_are_refused(tmp_path):
    """Oracle: torch's CPU generator draws the same numbers for 2**32 as for 0 (so the two runs
    would be identical), and different ones for 2**32 - 1: the largest seed the lab accepts."""
    draw = lambda seed: torch.rand(5, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    assert torch.equal(draw(2**32), draw(0)) and not torch.equal(draw(2**32 - 1), draw(0))
    from core.config import ConfigError, TrainConfig
    assert TrainConfig(arch="mlp", seed=2**32 - 1).seed == 2**32 - 1
    with pytest.raises(ConfigError, match="0..4,294,967,295"):
        TrainConfig(arch="mlp", seed=2**32)
    root = tmp_path / "runs"
    for option in (("--seeds", "0,4294967296"), ("--seed", "4294967296"), ("--seeds", "18446744073709551616")):
        code, out, err = run_cli("--checkpoints", str(root), "train", "--arch", "mlp", "--epochs", "1", *option)
        assert code == 2 and out == "" and err.count("\n") == 1, err
        assert "seed must be a whole number 0..4,294,967,295 (torch keeps 32 bits of a seed" in err
    assert not root.exists()


# --- strict JSON -----------------------------------------------------------------------------

def test_every_json_the_lab_writes_is_strict(tmp_path):
    """A diverged run's figures (NaN, infinities) are written as null, never as NaN."""
    from core.config import TrainConfig
    from core.store.writer import RunWriter
    writer = RunWriter.create(TrainConfig(arch="mlp", name="diverged").to_dict(), root=tmp_path)
    writer.write_metrics({"test_accuracy": 9.8, "test_loss": float("nan"), "nested": [float("inf"), np.float32("-inf")],
                          "array": np.array([1.0, np.nan])})
    writer.write_progress(epoch=3, epochs=5, train_loss=float("nan"))  # a diverged run's running loss
    writer.fail("diverged")
    writer.release()
    metrics = strict_loads((tmp_path / writer.run_id / "metrics.json").read_text())
    assert metrics == {"test_accuracy": 9.8, "test_loss": None, "nested": [None, None], "array": [1.0, None]}
    assert strict_loads((tmp_path / writer.run_id / "progress.json").read_text())["train_loss"] is None
    assert load_run(writer.run_id, tmp_path).test_acc == 9.8


def test_an_ensemble_of_members_with_bad_probabilities_is_never_written(store):
    bad = damaged_copy(store, MLP, "20990101-000000-mlp-nan", BAD_PREDICTIONS["nan"][0])
    before = store_state(store)
    code, out, err = run_cli("--checkpoints", str(store), "ensemble", LENET, bad)
    assert code == 2 and f"run '{bad}' cannot be used: the probabilities are not all finite" in err
    assert store_state(store) == before
    code, out, err = run_cli("--checkpoints", str(store), "ensemble", LENET, MLP)  # the real thing: strict JSON
    assert code == 0, err
    metrics = strict_loads((store / out.strip() / "metrics.json").read_text())
    assert math.isfinite(metrics["test_loss"]) and 0 < metrics["test_accuracy"] <= 100


# --- symlink loops, deep nesting, inconsistent ensembles -----------------------------------------

def test_a_symlink_loop_in_the_store_is_refused_in_one_line(store, tmp_path):
    os.symlink("y-loop2", store / "y-loop1")
    os.symlink("y-loop1", store / "y-loop2")
    image = tmp_path / "seven.png"
    from PIL import Image
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(image)
    before = store_state(store)
    for argv, code in ((("predict", "y-loop1", str(image)), 1), (("ensemble", "y-loop1", MLP), 2),
                       (("embedding", "y-loop1", "--method", "pca"), 1), (("label-issues", "--runs", "y-loop1"), 1),
                       (("train", "--resume", "y-loop1"), 1)):
        got, out, err = run_cli("--checkpoints", str(store), "--data", str(require_mnist()), *argv)
        assert got == code and err.count("\n") == 1 and "Traceback" not in err, (argv, err)
        assert "run 'y-loop1' cannot be opened: its path is a loop of symbolic links" in err, (argv, err)
    code, out, err = run_cli("--checkpoints", str(store), "runs")  # the other runs are listed as ever
    assert code == 0 and all(r in out for r in (MLP, LENET, MLP_LN)) and "loop" not in out
    assert store_state(store) == before


def _ensemble(store: Path, name: str, member_archs, members: int = 2) -> str:
    """An ensemble run folder made by the lab, then its config.json's member_archs replaced."""
    code, out, err = run_cli("--checkpoints", str(store), "ensemble", *[MLP, LENET, MLP_LN][:members],
                             "--name", name)
    assert code == 0, err
    run_id = out.strip()
    config = json.loads((store / run_id / "config.json").read_text())
    config["member_archs"] = member_archs
    (store / run_id / "config.json").write_text(json.dumps(config))
    return run_id


@pytest.mark.parametrize("case", ["500 deep", "shorter", "longer", "not names"])
def test_an_ensemble_config_that_cannot_be_rebuilt_says_why(store, tmp_path, case):
    deep: list = ["mlp"]
    for _ in range(500):
        deep = [deep]
    member_archs, words = {
        "500 deep": (deep, "nests member_archs more than 8 deep"),
        "shorter": (["mlp"], "member_archs lists 1 members but its weights hold 2: the run folder was edited"),
        "longer": (["mlp", "lenet", "mlp"], "member_archs lists 3 members but its weights hold 2"),
        "not names": (["mlp", {"x": 1}], "lists {'x': 1} among its member_archs, not an architecture name"),
    }[case]
    run_id = _ensemble(store, "odd", member_archs)
    image = tmp_path / "blank.png"
    from PIL import Image
    Image.fromarray(np.full((28, 28), 255, np.uint8)).save(image)
    before = store_state(store)
    with pytest.raises(RunError, match="cannot be rebuilt") as caught:
        load_model(run_id, store)
    assert words in str(caught.value) and "earlier version" not in str(caught.value)
    code, out, err = run_cli("--checkpoints", str(store), "predict", run_id, str(image))
    assert code == 1 and err.count("\n") == 1 and words in err, err
    assert store_state(store) == before


@pytest.mark.slow  # a second or more
def test_sketch_shows_an_unbuildable_ensemble_as_a_warning(lab_env, store, drawn, mnist_root):
    from core.data.mnist import load_mnist
    from tests.test_app import cards, open_page, pad_drawing
    deep: list = ["mlp"]
    for _ in range(500):
        deep = [deep]
    run_id = _ensemble(lab_env(store), "deep", deep)
    at = open_page("sketch")
    at.multiselect(key="sketch_models").set_value([run_id, LENET]).run()
    drawn.value = pad_drawing(load_mnist(mnist_root).test_images[0].numpy())
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("deep" in plain(w.value) and "nests member_archs more than 8 deep" in plain(w.value)
               for w in at.warning), [w.value for w in at.warning]
    assert cards(at)[load_run(LENET, store).name][0] == 7  # the other model still predicts: test image 0 is a 7


# --- ensembles written whole -----------------------------------------------------------------

def _whole(store: Path, run_id: str) -> None:
    """A finished ensemble that loads and predicts: what any ensemble in the store must be."""
    run = load_run(run_id, store)
    assert run.status == "finished" and run.config["kind"] == "ensemble" and not run.warnings, run.warnings
    load_model(run_id, store)
    load_predictions(run_id, store)


@pytest.mark.slow
def test_killing_the_ensemble_command_at_any_moment_leaves_nothing_or_a_whole_run(store):
    """SIGKILL at moments spread over the command's life (start-up, reading, writing): each time
    the store holds the runs it had plus, at most, one whole ensemble; never a visible fragment."""
    argv = [sys.executable, "-m", "core", "--checkpoints", str(store), "ensemble", MLP, LENET]
    start = time.monotonic()
    subprocess.run([*argv, "--name", "timed"], cwd=REPO, check=True, capture_output=True)
    whole = time.monotonic() - start  # kill at moments spread over the last 70% of a whole command
    before = set(list_run_ids(store))
    killed, finished = 0, 0
    for delay in np.linspace(0.3 * whole, whole, 8):
        proc = subprocess.Popen([*argv, "--name", f"kill {delay:.2f}"], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        killed += proc.returncode == -signal.SIGKILL
        new = set(list_run_ids(store)) - before
        for run_id in new:
            _whole(store, run_id)
        finished += len(new)
        before |= new
    assert killed >= 4, f"only {killed} of 8 commands were killed before they finished"
    staging = [p for p in store.iterdir() if p.name.startswith(".staging-")]
    for path in staging:  # debris of a killed write: hidden, then cleaned by the next ensemble
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    code, out, err = run_cli("--checkpoints", str(store), "ensemble", MLP, LENET, "--name", "after")
    assert code == 0, err
    _whole(store, out.strip())
    assert not [p for p in store.iterdir() if p.name.startswith(".staging-")]


def test_debris_of_an_ensemble_from_before_is_named_and_cannot_be_resumed(store):
    """What an older version left when killed: config, status 'queued' and lock only."""
    debris = store / "20261201-000000-ensemble-x"
    debris.mkdir()
    (debris / "config.json").write_text(json.dumps({"format": 3, "kind": "ensemble", "arch": "ensemble",
                                                    "name": "x", "members": [MLP, LENET],
                                                    "member_archs": ["mlp", "lenet"]}))
    (debris / "status.json").write_text(json.dumps({"status": "queued", "pid": 1, "created": "2026-12-01"}))
    (debris / "lock").write_text("1\n")
    run = load_run(debris.name, store)
    assert run.status == "interrupted" and "an ensemble whose writing was killed before it finished: delete it" \
        in run.warnings
    before = store_state(store)
    code, out, err = run_cli("--checkpoints", str(store), "train", "--resume", debris.name)
    assert code == 1 and err == (f"error: run '{debris.name}' is an ensemble of finished runs: nothing in it is "
                                 "trained, so there is nothing to resume; it is debris of an ensemble whose writing "
                                 "was killed: delete it\n")
    assert store_state(store) == before


# --- embedding maps --------------------------------------------------------------------------

def _weights_sha(store: Path, run_id: str) -> str:
    return hashlib.sha256((store / run_id / WEIGHTS).read_bytes()).hexdigest()


BAD_MAPS = {  # name -> (arrays, metadata) changes to a whole map
    "seconds-text": ({}, {"seconds": "abc"}),
    "10-points": ({"xy": lambda a: a[:10], "labels": lambda a: a[:10], "predicted": lambda a: a[:10]}, {}),
    "0-points": ({"xy": lambda a: a[:0], "labels": lambda a: a[:0], "predicted": lambda a: a[:0]}, {}),
    "labels-200": ({"labels": lambda a: np.full_like(a, 200)}, {}),
    "nan-points": ({"xy": lambda a: np.where(np.arange(len(a))[:, None] == 5, np.nan, a)}, {}),
    "digit-12": ({"predicted": lambda a: np.full_like(a, 12)}, {}),
    "no-xy": ({"xy": None}, {}),
}


@pytest.mark.parametrize("case", list(BAD_MAPS))
@pytest.mark.slow
def test_a_damaged_map_of_the_current_weights_is_computed_again(store, case, mnist_root):
    from core.analysis import embedding as maps
    path = store / LENET / embedding_file("pca")
    whole = maps.embedding(LENET, "pca", store, mnist_root)
    assert not whole.not_kept and path.exists()
    from safetensors import safe_open
    with safe_open(str(path), "np") as handle:
        meta, arrays = handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}
    changes, meta_changes = BAD_MAPS[case]
    for key, change in changes.items():
        if change is None:
            del arrays[key]
        else:
            arrays[key] = np.ascontiguousarray(change(arrays[key]))
    assert meta["weights_sha256"] == _weights_sha(store, LENET)
    path.write_bytes(save_numpy(arrays, metadata={**meta, **meta_changes}))
    assert maps.cached(LENET, "pca", store, mnist_root) is None
    code, out, err = run_cli("--checkpoints", str(store), "--data", str(mnist_root), "embedding", LENET,
                             "--method", "pca")
    assert code == 0 and "Traceback" not in err, err
    assert err.startswith("the kept pca map cannot be used: ") and "; computing it again" in err
    assert out.startswith("PCA (scikit-learn) map of 10,000 test images, computed and kept in the run folder")
    again = maps.cached(LENET, "pca", store, mnist_root)
    assert again is not None and np.array_equal(again.xy, whole.xy) and np.array_equal(again.predicted, whole.predicted)
    assert int(again.mistakes.sum()) == int((load_predictions(LENET, store)["predicted"]
                                             != load_predictions(LENET, store)["labels"]).sum())


def _limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # files may not grow past 64 KiB, as on a full disk
    import resource
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


@pytest.mark.slow
def test_a_map_that_cannot_be_kept_is_not_called_kept(store, mnist_root):
    before = store_state(store)
    proc = subprocess.run([sys.executable, "-m", "core", "--checkpoints", str(store), "--data", str(mnist_root),
                           "embedding", LENET, "--method", "pca"], cwd=REPO, capture_output=True, text=True,
                          preexec_fn=_limit_file_size)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("PCA (scikit-learn) map of 10,000 test images, computed, but not kept in the run "
                                  f"folder (could not write in {store / LENET}: File too large): it will be "
                                  "computed again next time"), proc.stdout
    lines = proc.stderr.splitlines()  # a line per stage
    assert lines[0] == "features of 10,000 test images…" and lines[1].startswith("features (")
    assert lines[2].startswith("PCA (scikit-learn) projection in ")
    assert store_state(store) == before  # no map, no temporary file


@pytest.mark.slow
def test_a_read_only_run_folder_gets_its_map_uncached_and_says_so(store, mnist_root):
    folder = store / LENET
    folder.chmod(0o555)
    try:
        before = store_state(store)
        proc = subprocess.run([*AS_USER, sys.executable, "-m", "core", "--checkpoints", str(store), "--data",
                               str(mnist_root), "embedding", LENET, "--method", "pca"], cwd=REPO, capture_output=True,
                              text=True)
        assert proc.returncode == 0, proc.stderr
        assert f"computed, but not kept in the run folder ({folder} is not writable (Permission denied))" \
            in proc.stdout, proc.stdout
        assert store_state(store) == before
    finally:
        folder.chmod(0o755)


# --- seed groups -----------------------------------------------------------------------------

TINY = ("--arch", "mlp", "--epochs", "2", "--train-limit", "3000", "--val-size", "500", "--device", "cpu", "--quiet")


@pytest.mark.slow
def test_a_cancelled_seed_group_averages_only_its_finished_runs(tmp_path, mnist_root):
    """SIGTERM while the second of three seeds trains (after its first epoch): the group's test and
    validation figures are those of the finished run alone, and the count says so."""
    root = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "core", "--checkpoints", str(root), "--data", str(mnist_root),
                             "train", *TINY, "--epochs", "6", "--seeds", "5,6,7"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    from core.store.runs import list_runs
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        runs = {r.config.get("seed"): r for r in list_runs(root)}
        if 6 in runs and runs[6].epochs_done >= 1:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the second seed's first epoch never finished")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 3, err
    runs = {r.config["seed"]: r for r in list_runs(root)}
    assert [runs[s].status for s in (5, 6, 7)] == ["finished", "cancelled", "cancelled"]
    assert runs[6].val_acc is not None  # it has a validation figure, and is still no member of the result
    from core.store.tables import mean_std_text
    group = runs[5].config["group"]
    assert out.strip().splitlines()[-1] == (
        f"group {group}: test accuracy {mean_std_text(runs[5].test_acc, None)}, val "
        f"{mean_std_text(runs[5].val_acc, None)}, over the finished runs: 1 of 3 runs; left out: 2 cancelled")


@pytest.mark.slow
def test_a_seed_group_on_a_full_disk_marks_every_run_and_prints_its_summary(tmp_path, mnist_root):
    root = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-m", "core", "--checkpoints", str(root), "--data", str(mnist_root),
                           "train", *TINY, "--arch", "mlp_ln", "--seeds", "0,1"], cwd=REPO, capture_output=True,
                          text=True, preexec_fn=_limit_file_size, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    from core.store.runs import list_runs
    runs = {r.config["seed"]: r for r in list_runs(root)}
    assert runs[0].status == "failed" and runs[1].status == "cancelled"
    assert runs[1].status_info["message"].startswith(f"not started: run {runs[0].run_id} failed (could not write")
    last = proc.stdout.strip().splitlines()[-1]
    assert last.endswith("over the finished runs: 0 of 2 runs; left out: 1 cancelled, 1 failed"), proc.stdout
    assert proc.stderr.strip().splitlines()[-1].startswith("error: could not write")


@pytest.mark.parametrize("page", [pytest.param("evaluate", marks=pytest.mark.slow), "mistakes", "compare"])
def test_pages_warn_about_probabilities_that_are_not_probabilities(lab_env, store, page):
    from tests.test_app import open_page
    root = lab_env(store)
    bad = damaged_copy(root, MLP, "20990101-000000-mlp-nan", BAD_PREDICTIONS["nan"][0])
    before = store_state(root)
    at = open_page(page)
    if page != "compare":  # the bad run is no default subject (the pages open on the best run): pick it
        picker = at.selectbox(key=f"{'eval' if page == 'evaluate' else 'mis'}_run")
        assert picker.value != bad
        picker.set_value(bad).run()
    assert not at.exception, [e.value for e in at.exception]
    shown = [plain(w.value) for w in at.warning]
    assert any(bad in w and "the probabilities are not all finite numbers" in w for w in shown), shown
    assert store_state(root) == before


def test_the_embedding_page_recomputes_a_damaged_map_and_says_when_it_cannot_keep_it(lab_env, store):
    from tests.test_app import open_page
    root = lab_env(store)
    path = root / LENET / embedding_file("pca")
    path.write_bytes(b"not a map")           # damaged: offered to compute again, no traceback
    at = open_page("embedding")
    at.selectbox(key="emb_run").set_value(LENET).run()
    at.segmented_control(key="emb_method").set_value("pca").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("is not computed yet" in plain(i.value) for i in at.info)
    path.unlink()
    path.mkdir()                             # the map's place is taken: it cannot be kept
    at.button(key="emb_compute").click().run()
    assert not at.exception, [e.value for e in at.exception]
    shown = [plain(w.value) for w in at.warning]
    assert any("could not be kept in the run folder (could not write in" in w and "Is a directory" in w
               and "computed again next time" in w for w in shown), shown
    assert path.is_dir() and not list(path.iterdir())


# --- variations beyond the issue's list ------------------------------------------------------

@pytest.mark.parametrize("case, words", [
    ("fifo", "predictions.safetensors is not a regular file"),
    ("folder", "predictions.safetensors is not a regular file"),
    ("empty", "are unreadable"),
    ("truncated", "are unreadable"),
])
@pytest.mark.timeout(120)  # a reader that waited on the FIFO would hang: this ends it as a failure
def test_a_predictions_file_that_is_no_file_or_half_a_file_is_named(store, case, words):
    path = store / MLP / PREDICTIONS
    data = path.read_bytes()
    path.unlink()
    if case == "fifo":
        os.mkfifo(path)  # opened non-blocking and checked: nothing waits for a writer
    elif case == "folder":
        path.mkdir()
    else:
        path.write_bytes(b"" if case == "empty" else data[: len(data) // 2])
    before = store_state(store)
    code, out, err = run_cli("--checkpoints", str(store), "label-issues", "--runs", MLP)  # a FIFO: no wait (the timeout mark)
    assert code == 1 and err.count("\n") == 1 and MLP in err and words in err, err
    code, out, err = run_cli("--checkpoints", str(store), "label-issues", "--top", "5")  # the default: left out
    if case in ("fifo", "folder"):  # no predictions file at all: no candidate, like a run without one
        assert code == 0 and err == "" and "label issues from 2 run(s)" in out
    else:
        assert code == 0 and err.startswith(f"warning: left out run '{MLP}'") and "from 2 run(s)" in out, err
    assert store_state(store) == before


def test_a_default_run_tested_on_other_images_is_left_out_by_name(store):
    """Predictions that are whole but of 500 other images: fine alone, not with the others."""
    odd = damaged_copy(store, MLP, "20261201-000000-mlp-reference", lambda a: a.update(
        labels=a["labels"][:500], predicted=a["predicted"][:500], probabilities=a["probabilities"][:500]))
    before = store_state(store)
    code, out, err = run_cli("--checkpoints", str(store), "label-issues", "--json", "--top", "3")
    assert code == 0 and err == f"warning: left out run '{odd}': it was tested on other images than '{LENET}'\n", err
    assert len(strict_loads(out)) == 3
    code, out, err = run_cli("--checkpoints", str(store), "label-issues", "--runs", odd, MLP)
    assert code == 1 and "was tested on other images" in err and err.count("\n") == 1
    code, out, err = run_cli("--checkpoints", str(store), "label-issues", "--runs", odd, "--top", "3")
    assert code == 0, err  # alone, its 500 images are ranked
    assert store_state(store) == before
