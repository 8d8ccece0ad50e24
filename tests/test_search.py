"""`python -m core search` (core.training.search): a real Optuna study over real MNIST trainings
of the smallest model on a few thousand images.

Oracles: each trial's run folder, read by hand (history.csv's rows are the epochs it trained and
its last val_acc the figure the study was told; status.json says how it ended), and the knobs'
table (core.recipe.KNOBS) for the bounds a refusal names."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, require_mnist, run_cli

# mlp on 2,000 images, 500 held out: a trial is a second or two; the study is what is tested
TINY = ["--arch", "mlp", "--train-limit", "2000", "--val-size", "500", "--device", "cpu", "--quiet"]
SPACE = ["--param", "lr=0.001:1:log", "--param", "batch_size=32,128,512"]


def by_hand(store: Path, run_id: str) -> tuple[list[float], dict, dict]:
    """(validation accuracy per epoch, config, status) of a run, from its files."""
    folder = store / run_id
    with open(folder / "history.csv", newline="") as f:
        vals = [float(row["val_acc"]) for row in csv.DictReader(f)]
    return vals, json.loads((folder / "config.json").read_text()), json.loads((folder / "status.json").read_text())


def search(store: Path, *args: str) -> tuple[int, dict | str, str]:
    code, out, err = run_cli("--checkpoints", str(store), "--data", str(require_mnist()), "search", *args)
    return code, (json.loads(out) if code == 0 and "--json" in args else out), err


@pytest.fixture(scope="module")
def small_study(tmp_path_factory) -> tuple[Path, dict]:
    """A finished study of three 1-epoch trials, unpruned: (its store, its --json). Tests that
    damage or hold it work on a copy (`copy_of`)."""
    store = tmp_path_factory.mktemp("small")
    code, result, err = search(store, *TINY, "--param", "lr=0.01:0.5", "--epochs", "1", "--trials", "3",
                               "--pruner", "none", "--study", "small", "--json")
    assert code == 0, err
    return store, result


def copy_of(small_study, dest: Path) -> tuple[Path, dict]:
    import shutil
    store, result = small_study
    shutil.copytree(store, dest / "store")
    return dest / "store", result


def studies(store: Path) -> list[str]:
    folder = store / ".studies"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# --- bad input: one line, nothing made --------------------------------------------------------

@pytest.mark.parametrize("args, says", [
    (["--param", "lr=0:1"], "--param lr=0:1: lr must be > 0 and <= 10, got 0"),
    (["--param", "momentum=0.5:1"], "--param momentum=0.5:1: momentum must be in [0, 1), got 1"),
    (["--param", "momentum=0:0.9:log"], "a log scale needs a low end above 0"),
    (["--param", "batch_size=8:64.5"], "'64.5' is not a whole number"),
    (["--param", "lr=0.1:0.01"], "the low end must be below the high end"),
    (["--param", "optimizer=sgd,rmsprop"], "optimizer must be one of sgd, adam, adamw, got 'rmsprop'"),
    (["--param", "optimizer=0:1"], "optimizer takes one of sgd|adam|adamw, not a range"),
    (["--param", "lrate=0.01:0.1"], "'lrate' is not a knob of the recipe; searchable: batch_size, lr,"),
    (["--param", "epochs=1:5"], "epochs is each trial's length, not a knob to search"),
    (["--param", "lr=0.01:0.1", "--param", "lr=0.1:1"], "--param lr is given twice"),
    (["--param", "lr=0.01:0.1", "--lr", "0.05"], "--lr is searched (--param lr=...): leave --lr out"),
    (["--param", "adv_steps=1:5"], "adv_steps is 5 but adv_eps is 0 (off), so it would change nothing"),
    (["--param", "lr=0.01:0.1", "--budget-epochs", "0"], "--budget-epochs must be a whole number of at least 1, got 0"),
    (["--param", "lr=0.01:0.1"], "give a budget: --trials N, --budget-epochs E, or both"),
    (["--param", "lr=0.01:0.1", "--trials", "3", "--sampler", "grid"], "--sampler must be one of tpe, random"),
    (["--param", "lr=0.01:0.1", "--trials", "3", "--study", "../../elsewhere"], "a study name is 1..64 letters"),
    ([], "give at least one knob to search"),
])
def test_a_space_or_budget_it_cannot_search_is_refused_in_one_line_before_any_trial(tmp_path, args, says):
    budget = [] if any(a.startswith("--trials") or a.startswith("--budget") for a in args) or "give a budget" in says \
        else ["--trials", "2"]
    code, out, err = search(tmp_path, *TINY, *args, *budget)
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and says in err, err
    assert studies(tmp_path) == [] and not [p for p in tmp_path.iterdir() if not p.name.startswith(".")]


def test_the_bounds_a_refusal_names_are_the_knob_table_s():
    from core.recipe import KNOB
    from core.training.search import parse_param
    for name in ("lr", "momentum", "weight_decay", "label_smoothing", "aug_degrees"):
        knob = KNOB[name]
        outside = knob.high * 2 if knob.high else 1e9
        with pytest.raises(Exception) as caught:
            parse_param(f"{name}={knob.low if knob.ends[0] == '[' else knob.high / 4:g}:{outside:g}")
        assert knob.problem(outside) in str(caught.value)


def test_resume_refuses_options_that_would_change_the_study_and_an_unknown_study(tmp_path):
    code, _, err = search(tmp_path, "--resume", "nope")
    assert code == 2 and err.strip().startswith("error: no study 'nope'")
    code, _, err = search(tmp_path, "--resume", "nope", "--trials", "4")
    assert code == 2 and "--resume goes on with the study as it was asked: leave out --trials" in err


# --- a study ------------------------------------------------------------------------------------

@pytest.mark.slow  # a second or more
def test_a_study_trains_its_trials_as_runs_prunes_the_poor_ones_and_names_the_best_on_validation(tmp_path):
    code, result, err = search(tmp_path, *TINY, *SPACE, "--epochs", "3", "--trials", "6", "--study", "first",
                               "--seed", "1", "--json")
    assert code == 0, err
    assert result["study"] == "first" and len(result["trials"]) == 6
    ids = [t["run_id"] for t in result["trials"]]
    assert len(set(ids)) == 6  # one run per trial
    for trial in result["trials"]:
        vals, config, status = by_hand(tmp_path, trial["run_id"])
        assert config["study"] == "first" and config["name"] == f"first #{trial['number']}"
        assert trial["epochs"] == len(vals) and trial["val_acc"] == pytest.approx(vals[-1])
        assert trial["params"] == {"lr": pytest.approx(config["lr"]), "batch_size": config["batch_size"]}
        assert 0.001 <= config["lr"] <= 1 and config["batch_size"] in (32, 128, 512)
        if trial["state"] == "finished":
            assert len(vals) == 3 and status["status"] == "finished"
        else:  # stopped early, its run says so and keeps its weights as at that epoch
            assert trial["state"] == "pruned" and len(vals) < 3, trial
            assert status["status"] == "cancelled" and status["message"].startswith("pruned by study 'first' after epoch")
            assert (tmp_path / trial["run_id"] / "model.safetensors").is_file()
    states = [t["state"] for t in result["trials"]]
    assert "pruned" in states and "finished" in states  # ASHA stopped some after an epoch or two
    finished = {t["run_id"]: by_hand(tmp_path, t["run_id"])[0][-1] for t in result["trials"] if t["state"] == "finished"}
    assert result["best"]["run_id"] == max(finished, key=finished.get)  # the best on validation, by hand
    assert result["best"]["val_acc"] == pytest.approx(max(finished.values()))
    # the study is kept beside its runs, and reads the same again
    code, again, _ = search(tmp_path, "--resume", "first", "--json")
    assert code == 0 and again["trials"] == result["trials"] and again["best"] == result["best"]


@pytest.mark.slow  # a second or more
def test_an_epoch_budget_is_spent_exactly_and_a_random_search_samples_the_same_space(tmp_path):
    code, result, err = search(tmp_path, *TINY, "--param", "lr=0.01:0.5:log", "--epochs", "3", "--budget-epochs", "7",
                               "--sampler", "random", "--pruner", "none", "--study", "budget", "--json")
    assert code == 0, err
    epochs = [len(by_hand(tmp_path, t["run_id"])[0]) for t in result["trials"]]
    assert sum(epochs) == 7 == result["epochs_spent"]  # 3 + 3 + 1: the third stopped where the budget ended
    assert epochs == [3, 3, 1] and [t["state"] for t in result["trials"]] == ["finished", "finished", "pruned"]
    _, _, status = by_hand(tmp_path, result["trials"][2]["run_id"])
    assert "the study's budget of 7 epochs is spent" in status["message"]


@pytest.mark.slow  # a second or more
def test_two_drivers_on_one_study_the_second_is_refused(small_study, tmp_path):
    store, _ = copy_of(small_study, tmp_path)
    from core.store.folder import RunLock
    held = RunLock.claim(store / ".studies" / "small")  # as a running driver holds it
    try:
        code, _, err = search(store, "--resume", "small")
        assert code == 1 and len(err.strip().splitlines()) == 1
        assert "study 'small' is being run by another driver" in err
    finally:
        held.release()


@pytest.mark.slow  # a second or more
def test_a_damaged_study_file_is_refused_in_one_line_and_its_runs_stay_readable(small_study, tmp_path):
    store, result = copy_of(small_study, tmp_path)
    journal = store / ".studies" / "small" / "study.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:2]) + b"{not json at all\n" + b"".join(lines[2:]))
    code, _, err = search(store, "--resume", "small", "--json")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "is damaged" in err and "its runs stay readable" in err
    code, out, _ = run_cli("--checkpoints", str(store), "runs")
    assert code == 0 and all(t["run_id"] in out for t in result["trials"])


@pytest.mark.slow  # a second or more
def test_a_write_cut_short_at_the_journal_s_end_is_cut_off_and_the_study_goes_on(small_study, tmp_path):
    store, result = copy_of(small_study, tmp_path)
    journal = store / ".studies" / "small" / "study.journal"
    whole = journal.read_bytes()
    torn = b'{"op_code":5,"worker_id":"x","trial_id":'  # a full disk mid-line
    journal.write_bytes(whole + torn)
    code, again, err = search(store, "--resume", "small", "--json")
    assert code == 0, err
    assert f"cut {len(torn)} bytes of a write cut short" in err and journal.read_bytes() == whole
    assert again["trials"] == result["trials"]


# --- a driver killed at any moment --------------------------------------------------------------

@pytest.mark.slow  # a second or more
def test_a_driver_killed_mid_trial_resumes_without_repeating_or_losing_a_trial(tmp_path):
    """SIGKILL the driver in the middle of its second trial; --resume goes on: the same trials, one
    run each, the interrupted one resumed from its last finished epoch, not started again."""
    store = tmp_path / "store"
    argv = [sys.executable, "-m", "core", "--checkpoints", str(store), "--data", str(require_mnist()), "search",
            "--arch", "mlp", "--train-limit", "3000", "--val-size", "500", "--device", "cpu", "--quiet",
            "--param", "lr=0.01:0.3:log", "--epochs", "4", "--trials", "3", "--pruner", "none", "--study", "killed"]
    driver = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the second trial's run has finished an epoch or more, not all
            second = [p for p in store.glob("*-killed-1") if (p / "history.csv").is_file()]
            if second and 2 <= len((second[0] / "history.csv").read_text().splitlines()) <= 4:
                break
            assert driver.poll() is None, driver.communicate()
            time.sleep(0.05)
        else:
            pytest.fail("the second trial never started")
        driver.send_signal(signal.SIGKILL)
        driver.wait(30)
    finally:
        if driver.poll() is None:
            driver.kill()
    before = {p.name: len((p / "history.csv").read_text().splitlines()) - 1 for p in store.iterdir()
              if p.is_dir() and (p / "history.csv").is_file()}
    interrupted = next(name for name in before if name.endswith("-killed-1"))
    code, result, err = search(store, "--resume", "killed", "--json")
    assert code == 0, err
    assert "trial 1: adopted from a driver that stopped" in err
    assert [t["number"] for t in result["trials"]] == [0, 1, 2]
    assert all(t["state"] == "finished" and t["epochs"] == 4 for t in result["trials"])
    runs = sorted(p.name for p in store.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert sorted(t["run_id"] for t in result["trials"]) == runs  # one run per trial, none made twice
    assert result["trials"][1]["run_id"] == interrupted
    log = (store / interrupted / "history.csv").read_text().splitlines()
    assert [int(line.split(",")[0]) for line in log[1:]] == list(range(1, 5))  # each epoch once
    lrs = [t["params"]["lr"] for t in result["trials"]]
    assert len(set(lrs)) == 3  # no trial's values drawn again
    for run_id, epochs in before.items():  # what was trained before the kill is kept
        assert len(by_hand(store, run_id)[0]) >= epochs


def _full_disk():
    # Files may not grow past 64 KiB, as on a full disk: a trial's weights cannot be written.
    import resource
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


@pytest.mark.slow  # a second or more
def test_a_full_disk_stops_the_study_with_one_line_and_resume_finishes_it(tmp_path):
    """The first trial's run cannot save its epoch: the driver stops with the run's one-line error,
    the study reads failed, nothing is half-written; with room again, --resume finishes the study,
    that trial in the same run."""
    argv = [sys.executable, "-m", "core", "--checkpoints", str(tmp_path), "--data", str(require_mnist()), "search",
            *TINY, "--param", "lr=0.01:0.5:log", "--epochs", "2", "--trials", "2", "--pruner", "none",
            "--study", "full"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120, preexec_fn=_full_disk)
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: could not write") and "Traceback" not in done.stderr
    state = json.loads((tmp_path / ".studies" / "full" / "status.json").read_text())
    assert state["status"] == "failed" and "could not write" in state["message"]
    (first,) = [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert json.loads((tmp_path / first / "status.json").read_text())["status"] == "failed"
    code, result, err = search(tmp_path, "--resume", "full", "--json")
    assert code == 0, err
    assert [t["state"] for t in result["trials"]] == ["finished", "finished"]
    assert result["trials"][0]["run_id"] == first  # the same run, resumed, not a second one
    runs = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert sorted(t["run_id"] for t in result["trials"]) == runs
    assert [len(by_hand(tmp_path, t["run_id"])[0]) for t in result["trials"]] == [2, 2]
